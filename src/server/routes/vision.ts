/** Looking inside: models and layers, feature maps of an upload, the ideal image of a class (a job), the attack. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { RgbImage } from '../../image/decode.js';
import { decodeImage } from '../../image/decode.js';
import { encodePng } from '../../image/png.js';
import { loadImageAndTensor } from '../../image/preprocess.js';
import { loadRun } from '../../learn/run.js';
import { catalogEntries, entryBytes } from '../../models/catalog.js';
import { layers as listLayers } from '../../tasks/layers.js';
import { attackImage } from '../../vision/attack.js';
import { resolveClass } from '../../vision/classifier.js';
import { dream, DREAM_DEFAULTS } from '../../vision/dream.js';
import { featureMaps } from '../../vision/featuremaps.js';
import { renderFeatureMapPng } from '../../vision/featuremap-png.js';
import type { ServerContext } from '../context.js';
import { sendError } from '../context.js';
import { RequestError, resolveModelParam } from '../predictors.js';
import { uploadFormat } from '../projects.js';
import { rawBodyParser } from './raw-body.js';

const dataUrl = (png: Buffer) => `data:image/png;base64,${png.toString('base64')}`;

/** The ONNX file behind a model parameter (a run's backbone, fine-tuned or not). */
async function modelFile(ctx: ServerContext, param: string | undefined): Promise<string> {
  const t = await resolveModelParam(param, ctx.access);
  if (t.kind === 'catalog') return t.name;
  if (t.run) return (await loadRun(t.path)).config.model.path;
  return t.path;
}

function handler(fn: (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    try {
      return await fn(req, reply);
    } catch (err) {
      return sendError(reply, err);
    }
  };
}

function imageBody(req: FastifyRequest): Buffer {
  const body = req.body;
  if (!Buffer.isBuffer(body) || body.length === 0) throw new RequestError('no image in the request body (send the image bytes as the body)', 400);
  uploadFormat(body);
  return body;
}

function num(raw: string | undefined, name: string, lo: number, hi: number, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < lo || v > hi) throw new RequestError(`${name}=${raw}: a number from ${lo} to ${hi}`, 400);
  return v;
}

const DreamSchema = z
  .object({
    model: z.string().min(1),
    class: z.string().min(1),
    steps: z.number().int().min(1).max(2000).default(DREAM_DEFAULTS.steps),
    tv: z.number().min(0).max(10).default(DREAM_DEFAULTS.tv),
    lr: z.number().gt(0).max(1).default(DREAM_DEFAULTS.lr),
    jitter: z.number().int().min(0).max(32).default(8),
    seed: z.number().int().min(0).default(0),
    imageEvery: z.number().int().min(1).max(100).default(10),
  })
  .strict();

export async function visionRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  const tags = ['look inside'];
  app.get('/api/models', { schema: { tags: ['models'], summary: 'Catalog models and the projects with trained runs (both usable as model=)' } }, handler(async () => ({
    catalog: catalogEntries().map((e) => ({ name: e.name, family: e.family, description: e.description, format: e.format, size: e.preprocess.size, bytes: entryBytes(e).bytes })),
    projects: await Promise.all((await ctx.projects.list()).map(async (p) => ({ id: p.id, name: p.name, runs: await ctx.projects.runs(p.id) }))),
  })));

  app.get('/api/layers', { schema: { tags, summary: 'Layers of a model that give feature maps (model=)' } }, handler(async (req) => {
    const file = await modelFile(ctx, (req.query as { model?: string }).model);
    const res = await listLayers(file, { threads: ctx.threads });
    const spatial = res.nodes.filter((n) => n.shape?.length === 4 && (n.shape[2]! > 1 || n.shape[3]! > 1));
    return { model: res.path, layers: spatial.map((n) => ({ name: n.name, op: n.opType, shape: n.shape })) };
  }));

  app.get('/api/classes', { schema: { tags, summary: 'Class names of a classifier (model=)' } }, handler(async (req) => {
    const c = await ctx.classifiers.get((req.query as { model?: string }).model);
    return { classes: c.classes };
  }));

  app.post('/api/dream', { schema: { tags, summary: 'The ideal image of a class, by gradient ascent from noise (a job; images arrive as events)' } }, handler(async (req, reply) => {
    const r = DreamSchema.safeParse(req.body ?? {});
    if (!r.success) throw new RequestError(`ideal image: ${r.error.issues[0]!.path.join('.') || 'body'}: ${r.error.issues[0]!.message}`, 400);
    const o = r.data;
    const model = await ctx.classifiers.get(o.model);
    const classIndex = (() => {
      try {
        return resolveClass(model.classes, o.class);
      } catch (err) {
        throw new RequestError((err as Error).message, 400);
      }
    })();
    const job = ctx.jobs.submit('dream', async (jc) => {
      const m = await ctx.classifiers.get(o.model); // the same warm classifier (or reloaded if evicted meanwhile)
      jc.emit('progress', { task: 'ideal image', done: 0, total: o.steps, unit: 'step' });
      const t0 = performance.now();
      const res = await dream(m, {
        classIndex, steps: o.steps, tv: o.tv, lr: o.lr, jitter: o.jitter, seed: o.seed, signal: jc.signal, imageEvery: o.imageEvery,
        onStep: (s) => {
          if (s.step % 5 === 0) {
            const rate = s.step / ((performance.now() - t0) / 1000);
            jc.emit('progress', { task: 'ideal image', done: s.step, total: o.steps, unit: 'step', rate, etaSeconds: (o.steps - s.step) / rate, probability: s.probability, note: `p=${s.probability.toFixed(3)}` });
          }
        },
        onImage: (step, image) => {
          void encodePng(image).then((png) => jc.emit('image', { step, png: dataUrl(png) }));
        },
      });
      // What counts is the picture as a file: encode, decode, classify again.
      const png = await encodePng(res.image);
      const reread = await decodeImage(png);
      const [p] = await m.probabilities([reread]);
      return { class: m.classes[classIndex], png: dataUrl(png), probability: p![classIndex], totalVariation: res.totalVariation, seconds: res.seconds, steps: o.steps };
    });
    return reply.code(202).send(job);
  }));

  await app.register(async (sub) => {
    rawBodyParser(sub, ctx.limits.bodyBytes);

    sub.post('/api/featuremaps', { schema: { tags, summary: 'Feature maps of the uploaded image (model=, layers=a,b, channels=N)' } }, handler(async (req) => {
      const q = req.query as { model?: string; layers?: string; channels?: string };
      const body = imageBody(req);
      const file = await modelFile(ctx, q.model);
      const dir = await mkdtemp(join(tmpdir(), 'graft-serve-'));
      try {
        const path = join(dir, 'upload');
        await writeFile(path, body);
        const layerList = q.layers ? q.layers.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
        const res = await featureMaps(file, path, { layers: layerList, channels: num(q.channels, 'channels', 1, 256, 16), threads: ctx.threads }).catch((err: Error) => {
          throw new RequestError(err.message.replaceAll(path, 'the upload'), 400);
        });
        const out = [];
        for (const l of res.layers) {
          const png = await renderFeatureMapPng({ ...res, imagePath: 'the upload' }, l, { cell: 64 });
          out.push({ layer: l.layer, op: l.op, role: l.role, shape: l.shape, channels: l.channels, stats: l.stats, png: dataUrl(png.png) });
        }
        return { model: res.model, layers: out, warnings: res.warnings };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }));

    sub.post('/api/attack', { schema: { tags, summary: 'Adversarial version of the uploaded image (model=, target=class, eps=levels of 255, method=pgd|fgsm)' } }, handler(async (req) => {
      const q = req.query as { model?: string; target?: string; eps?: string; method?: string; steps?: string };
      const body = imageBody(req);
      const method = q.method ?? 'pgd';
      if (method !== 'pgd' && method !== 'fgsm') throw new RequestError(`method=${method}: pgd or fgsm`, 400);
      const eps = num(q.eps, 'eps', 0.5, 64, 2) / 255;
      const steps = Math.round(num(q.steps, 'steps', 1, 200, 40));
      const model = await ctx.classifiers.get(q.model);
      let target: number | undefined;
      if (q.target) {
        try {
          target = resolveClass(model.classes, q.target);
        } catch (err) {
          throw new RequestError((err as Error).message, 400);
        }
      }
      const { image } = await loadImageAndTensor(body, model.spec, { maxPixels: ctx.limits.imagePixels, name: 'the upload' });
      const res = await attackImage(model, image, { method, eps, target, steps, seed: 0 });
      // Verified on the picture as sent back: PNG-encode, decode, classify again.
      const advPng = await encodePng(res.adversarial);
      const reread = await decodeImage(advPng);
      const [pBefore, pAfter] = await model.probabilities([image, reread]);
      const top = (p: Float32Array) => Array.from(p, (probability, i) => ({ label: model.classes[i] ?? String(i), probability })).sort((a, b) => b.probability - a.probability).slice(0, 3);
      const after = top(pAfter!);
      const before = top(pBefore!);
      const success = target !== undefined ? after[0]!.label === model.classes[target] : after[0]!.label !== before[0]!.label;
      const gain = 127.5 / Math.max(eps * 255, 1);
      const diff: RgbImage = { width: image.width, height: image.height, data: Buffer.alloc(image.data.length) };
      let linf = 0;
      for (let i = 0; i < diff.data.length; i++) {
        const d = reread.data[i]! - image.data[i]!;
        linf = Math.max(linf, Math.abs(d));
        diff.data[i] = Math.max(0, Math.min(255, Math.round(127.5 + d * gain)));
      }
      return {
        method, eps: eps * 255, target: target !== undefined ? model.classes[target] : undefined, success, steps: res.steps,
        linfLevels: linf, psnr: res.psnr, amplification: gain,
        original: { png: dataUrl(await encodePng(image)), top: before },
        adversarial: { png: dataUrl(advPng), top: after },
        perturbation: { png: dataUrl(await encodePng(diff)) },
      };
    }));
  });
}
