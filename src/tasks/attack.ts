import { basename, extname, join } from 'node:path';
import sharp from 'sharp';
import { datasetFromFiles } from '../data/index.js';
import { ImageError } from '../errors.js';
import { decodeImage, type RgbImage } from '../image/decode.js';
import { writePng } from '../image/png.js';
import { loadImageAndTensor } from '../image/preprocess.js';
import { escapeXml } from '../learn/charts.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/fs.js';
import { attackImage, type AttackOptions } from '../vision/attack.js';
import { loadClassifier, resolveClass } from '../vision/classifier.js';
import type { Reporter } from './reporter.js';

export interface AttackTaskOptions extends Omit<AttackOptions, 'target' | 'eps'> {
  /** Class to reach (name or index); absent: untargeted. */
  target?: string;
  /** One or more budgets in [0, 1] units; each image is attacked at each. */
  eps: number[];
  out: string;
  reporter?: Reporter;
}

export interface ImageAttack {
  image: string;
  eps: number;
  success: boolean;
  steps: number;
  before: { class: string; probability: number }[];
  after: { class: string; probability: number }[];
  linf: number;
  linfLevels: number;
  l2: number;
  psnr: number;
  files: { adversarial: string; compare: string };
}

export interface AttackTaskResult {
  method: string;
  target?: { index: number; name: string };
  results: ImageAttack[];
  /** Per epsilon: share of images where the attack succeeded (checked on the saved PNG); robust accuracy = 1 - it. */
  perEps: { eps: number; successRate: number; robustAccuracy: number; n: number }[];
  skipped: { path: string; reason: string }[];
}

/** original | adversarial | perturbation (amplified so that ±eps spans black to white), side by side, captioned. */
async function comparePng(orig: RgbImage, adv: RgbImage, eps: number, captions: [string, string, string], path: string): Promise<void> {
  const { width: w, height: h } = orig;
  const diff = Buffer.alloc(orig.data.length);
  const gain = 127.5 / Math.max(eps * 255, 1);
  for (let i = 0; i < diff.length; i++) diff[i] = Math.max(0, Math.min(255, Math.round(127.5 + (adv.data[i]! - orig.data[i]!) * gain)));
  const pad = 10;
  const capH = 40;
  const W = pad + 3 * (w + pad);
  const H = pad + h + capH;
  const raw = (b: Buffer) => sharp(b, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
  const text = captions
    .map((c, i) => {
      const [a, b] = c.split('\n');
      const x = pad + i * (w + pad);
      return `<text x="${x}" y="${pad + h + 16}" font-size="12" font-family="DejaVu Sans, sans-serif" fill="#222">${escapeXml(a ?? '')}</text><text x="${x}" y="${pad + h + 32}" font-size="11" font-family="DejaVu Sans, sans-serif" fill="#666">${escapeXml(b ?? '')}</text>`;
    })
    .join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}"><rect width="100%" height="100%" fill="white"/>${text}</svg>`;
  const png = await sharp(Buffer.from(svg))
    .composite([
      { input: await raw(orig.data), left: pad, top: pad },
      { input: await raw(adv.data), left: pad + w + pad, top: pad },
      { input: await raw(diff), left: pad + 2 * (w + pad), top: pad },
    ])
    .png()
    .toBuffer();
  await writeFileAtomic(path, png);
}

/** Attack image files (or folders of them); every result is verified on the PNG as saved and re-read. */
export async function attackTask(target: string, inputs: string[], opts: AttackTaskOptions): Promise<AttackTaskResult> {
  const files = await datasetFromFiles(inputs);
  const model = await loadClassifier(target);
  const skipped = [...files.skipped];
  const results: ImageAttack[] = [];
  try {
    const targetIndex = opts.target !== undefined ? resolveClass(model.classes, opts.target) : undefined;
    const name = (i: number) => model.classes[i] ?? String(i);
    const r = opts.reporter;
    r?.start?.('attack', files.items.length * opts.eps.length, 'img');
    let done = 0;
    for (const { path } of files.items) {
      let image: RgbImage;
      try {
        image = (await loadImageAndTensor(path, model.spec)).image;
      } catch (err) {
        if (!(err instanceof ImageError)) throw err;
        skipped.push({ path, reason: err.reason });
        continue;
      }
      for (const eps of opts.eps) {
        const res = await attackImage(model, image, { ...opts, eps, target: targetIndex });
        const stem = `${basename(path, extname(path))}${opts.eps.length > 1 ? `-eps${(eps * 255).toFixed(1)}` : ''}`;
        const advPath = join(opts.out, `${stem}-adv.png`);
        const cmpPath = join(opts.out, `${stem}-compare.png`);
        await writePng(res.adversarial, advPath);
        // What counts is the file: re-read it and classify it again.
        const reread = await decodeImage(advPath);
        const [p] = await model.probabilities([reread]);
        const after = Array.from(p!, (probability, index) => ({ index, probability })).sort((a, b) => b.probability - a.probability).slice(0, 5);
        const success = targetIndex !== undefined ? after[0]!.index === targetIndex : after[0]!.index !== res.before[0]!.index;
        let linfLevels = 0;
        for (let i = 0; i < reread.data.length; i++) linfLevels = Math.max(linfLevels, Math.abs(reread.data[i]! - image.data[i]!));
        const b0 = res.before[0]!;
        const a0 = after[0]!;
        await comparePng(image, reread, eps, [
          `original: ${name(b0.index)}\np = ${b0.probability.toFixed(3)}`,
          `adversarial: ${name(a0.index)}\np = ${a0.probability.toFixed(3)}`,
          `perturbation x${(127.5 / Math.max(eps * 255, 1)).toFixed(0)}\nL-inf ${linfLevels}/255, PSNR ${res.psnr.toFixed(1)} dB`,
        ], cmpPath);
        const item: ImageAttack = {
          image: path,
          eps,
          success,
          steps: res.steps,
          before: res.before.map((t) => ({ class: name(t.index), probability: t.probability })),
          after: after.map((t) => ({ class: name(t.index), probability: t.probability })),
          linf: linfLevels / 255,
          linfLevels,
          l2: res.l2,
          psnr: res.psnr,
          files: { adversarial: advPath, compare: cmpPath },
        };
        await writeJsonAtomic(join(opts.out, `${stem}.json`), { method: opts.method, target: targetIndex !== undefined ? name(targetIndex) : undefined, ...item });
        results.push(item);
        r?.update?.('attack', ++done, `${results.filter((x) => x.success).length} fooled`);
      }
    }
    r?.end?.('attack');
    const perEps = opts.eps.map((eps) => {
      const rs = results.filter((x) => x.eps === eps);
      const rate = rs.length ? rs.filter((x) => x.success).length / rs.length : 0;
      return { eps, successRate: rate, robustAccuracy: 1 - rate, n: rs.length };
    });
    const result: AttackTaskResult = { method: opts.method, target: targetIndex !== undefined ? { index: targetIndex, name: name(targetIndex) } : undefined, results, perEps, skipped };
    await writeJsonAtomic(join(opts.out, 'summary.json'), result);
    return result;
  } finally {
    await model.dispose();
  }
}
