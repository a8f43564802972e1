/** Projects: classes, uploads, training jobs, runs, evaluation and export. */
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import multipart from '@fastify/multipart';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { z } from 'zod';
import { exportRun } from '../../tasks/export.js';
import { readJsonFile } from '../../util/json.js';
import type { ServerContext } from '../context.js';
import { sendError } from '../context.js';
import { pageEvaluation } from '../evaluation.js';
import { RequestError } from '../predictors.js';
import { parseTrainRequest, runTrainJob } from '../train-job.js';
import { rawBodyParser } from './raw-body.js';

/** What the run listing reads of a run's metrics.json (NaN accuracy is written as null). */
const RunMetricsSchema = z.object({ validation: z.object({ accuracy: z.number().nullable().optional(), n: z.number().optional() }).optional() });

const CreateSchema = z.object({ name: z.string(), backbone: z.string().min(1), classes: z.array(z.string()).max(1000).optional() }).strict();

function parse<T>(schema: z.ZodType<T>, body: unknown, what: string): T {
  const r = schema.safeParse(body ?? {});
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new RequestError(`${what}: ${i.path.join('.') || 'body'}: ${i.message}`, 400);
  }
  return r.data;
}

type P = { id: string; cls: string; image: string; run: string };

export async function projectRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  const { projects, jobs } = ctx;
  const wrap =
    (fn: (req: { params: P; query: Record<string, string | undefined>; body: unknown; raw: unknown }, reply: import('fastify').FastifyReply) => Promise<unknown>) =>
    async (req: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply) => {
      try {
        return await fn(req as never, reply);
      } catch (err) {
        return sendError(reply, err);
      }
    };
  const tags = ['projects'];

  app.get('/api/projects', { schema: { tags, summary: 'List projects' } }, wrap(async () => ({ projects: await projects.list() })));

  app.post(
    '/api/projects',
    { schema: { tags, summary: 'Create a project', body: { type: 'object', properties: { name: { type: 'string' }, backbone: { type: 'string' }, classes: { type: 'array', items: { type: 'string' } } } } } },
    wrap(async (req, reply) => {
      const b = parse(CreateSchema, req.body, 'new project');
      // The backbone must be one the server can load, checked now rather than at the first training.
      const { resolveModelParam } = await import('../predictors.js');
      const t = await resolveModelParam(b.backbone, ctx.access).catch((err: unknown) => {
        if (err instanceof RequestError) throw new RequestError(err.message.replace(/^model=/, 'backbone '), err.status);
        throw err;
      });
      if (t.kind === 'path' && t.run) throw new RequestError(`backbone ${b.backbone}: a run folder; give a catalog name or an .onnx file`, 400);
      const p = await projects.create(b.name, t.kind === 'catalog' ? t.name : t.path, b.classes ?? []);
      return reply.code(201).send(p);
    }),
  );

  app.get('/api/projects/:id', { schema: { tags, summary: 'A project with its classes and images' } }, wrap(async (req) => ({ ...(await projects.get(req.params.id)), runs: await projects.runs(req.params.id) })));

  app.delete('/api/projects/:id', { schema: { tags, summary: 'Delete a project and everything in it' } }, wrap(async (req, reply) => {
    await projects.remove(req.params.id);
    return reply.code(204).send();
  }));

  app.post('/api/projects/:id/classes', { schema: { tags, summary: 'Add a class', body: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] } } }, wrap(async (req, reply) => {
    return reply.code(201).send(await projects.addClass(req.params.id, (req.body as { name?: unknown })?.name));
  }));

  app.delete('/api/projects/:id/classes/:cls', { schema: { tags, summary: 'Remove a class and its images' } }, wrap(async (req) => projects.removeClass(req.params.id, req.params.cls)));

  app.get('/api/projects/:id/images/:image', { schema: { tags, summary: 'An image (size=N: a JPEG thumbnail whose longer side is N)' } }, wrap(async (req, reply) => {
    const { path, image } = await projects.imagePath(req.params.id, req.params.image);
    const size = req.query.size ? Number(req.query.size) : undefined;
    if (size !== undefined && !(Number.isInteger(size) && size >= 16 && size <= 1024)) throw new RequestError('size: a whole number from 16 to 1024', 400);
    reply.header('cache-control', 'private, max-age=86400, immutable'); // content-addressed: an id never changes
    if (size) return reply.type('image/jpeg').send(await sharp(path).rotate().resize(size, size, { fit: 'inside' }).flatten({ background: '#fff' }).jpeg({ quality: 82 }).toBuffer());
    const types: Record<string, string> = { jpg: 'image/jpeg', png: 'image/png', gif: 'image/gif', webp: 'image/webp', tif: 'image/tiff', avif: 'image/avif' };
    return reply.type(types[image.ext]!).send(await readFile(path));
  }));

  app.delete('/api/projects/:id/images/:image', { schema: { tags, summary: 'Remove an image' } }, wrap(async (req) => projects.removeImage(req.params.id, req.params.image)));

  // Uploads: raw bytes (one image; ?name= for display) or multipart/form-data (many files at once).
  await app.register(async (sub) => {
    rawBodyParser(sub, ctx.limits.bodyBytes);
    await sub.register(multipart, { limits: { fileSize: ctx.limits.bodyBytes, files: 1000, fields: 10 } });
    sub.post('/api/projects/:id/classes/:cls/images', { schema: { tags, summary: 'Upload images into a class (raw bytes or multipart files)' } }, wrap(async (req, reply) => {
      const { id, cls } = req.params;
      const r = req as unknown as import('fastify').FastifyRequest;
      const max = ctx.limits.imagePixels;
      if (r.isMultipart()) {
        const added: unknown[] = [];
        const rejected: { name: string; error: string }[] = [];
        for await (const part of r.files()) {
          const bytes = await part.toBuffer().catch((err: Error) => {
            throw new RequestError(`${part.filename}: ${/limit/i.test(err.message) ? 'larger than this server accepts' : err.message}`, 413);
          });
          try {
            added.push(await projects.addImage(id, cls, bytes, part.filename ?? 'upload', max));
          } catch (err) {
            if (!(err instanceof RequestError) || err.status === 404) throw err;
            rejected.push({ name: part.filename ?? 'upload', error: err.message });
          }
        }
        return reply.code(added.length ? 201 : 400).send({ added, rejected });
      }
      const body = req.body;
      if (!Buffer.isBuffer(body) || body.length === 0) throw new RequestError('no image in the request body (send the image bytes, or multipart files)', 400);
      const res = await projects.addImage(id, cls, body, req.query.name ?? 'upload', max);
      return reply.code(res.duplicate ? 200 : 201).send(res);
    }));
  });

  app.post('/api/projects/:id/train', {
    schema: {
      tags,
      summary: 'Train the project (a job)',
      body: { type: 'object', properties: { mode: { type: 'string', enum: ['frozen', 'finetune'] }, blocks: { type: 'integer' }, epochs: { type: 'integer' }, patience: { type: 'integer' }, augment: { type: 'integer' }, valFraction: { type: 'number' }, seed: { type: 'integer' } } },
    },
  }, wrap(async (req, reply) => {
    const id = req.params.id;
    await projects.get(id);
    const settings = parseTrainRequest(req.body);
    const job = jobs.submit('train', (jc) => runTrainJob(projects, id, settings, jc, ctx.threads, ctx.int8), id);
    return reply.code(202).send(job);
  }));

  app.get('/api/projects/:id/runs', { schema: { tags, summary: 'Finished runs, newest first, with their validation accuracy' } }, wrap(async (req) => {
    const id = req.params.id;
    const runs = await projects.runs(id);
    const out = [];
    for (const run of runs) {
      // A run whose metrics.json is missing or damaged is listed without numbers (it still has its own page).
      const metrics = await readJsonFile(join(projects.runDir(id, run), 'metrics.json'), RunMetricsSchema).catch(() => undefined);
      out.push({ run, accuracy: metrics?.validation?.accuracy ?? undefined, n: metrics?.validation?.n });
    }
    return { runs: out };
  }));

  app.get('/api/projects/:id/runs/:run/evaluation', { schema: { tags, summary: 'Validation images with true and predicted classes, per-class metrics, confusion matrix' } }, wrap(async (req) => {
    const { id, run } = req.params;
    const dir = projects.runDir(id, run);
    if (!(await projects.runs(id)).includes(run)) throw new RequestError(`no finished run ${run} in project ${id}`, 404);
    return pageEvaluation(dir, run, (p) => projects.imageIdOfPath(p), ctx.threads);
  }));

  app.post('/api/projects/:id/runs/:run/export', { schema: { tags, summary: 'Export the run as one ONNX classifier (+ sidecar JSON)' } }, wrap(async (req) => {
    const { id, run } = req.params;
    const dir = projects.runDir(id, run);
    if (!(await projects.runs(id)).includes(run)) throw new RequestError(`no finished run ${run} in project ${id}`, 404);
    const out = join(dir, 'export', 'model.onnx');
    const res = await exportRun(dir, out);
    const base = `/api/projects/${id}/runs/${run}/export`;
    return { model: `${base}/model.onnx`, sidecar: `${base}/model.onnx.json`, bytes: res.bytes, classes: res.classes };
  }));

  app.get('/api/projects/:id/runs/:run/export/:file', { schema: { tags, summary: 'Download an exported file (model.onnx or model.onnx.json)' } }, wrap(async (req, reply) => {
    const { id, run } = req.params;
    const file = (req.params as unknown as { file: string }).file;
    if (file !== 'model.onnx' && file !== 'model.onnx.json') throw new RequestError(`no export file ${JSON.stringify(file)} (model.onnx or model.onnx.json)`, 404);
    const path = join(projects.runDir(id, run), 'export', file);
    const bytes = await readFile(path).catch(() => {
      throw new RequestError(`run ${run} has not been exported yet (POST ${basename(path)} first)`, 404);
    });
    reply.header('content-disposition', `attachment; filename="${run}-${file}"`);
    return reply.type(file.endsWith('.json') ? 'application/json' : 'application/octet-stream').send(bytes);
  }));
}
