/**
 * `graft explain`: per image, a heat map of where the evidence for the class lies (in the photo's own pixel grid,
 * after EXIF orientation) and that map drawn over the photo, with the faithfulness check of each map.
 */
import { mkdir } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import sharp from 'sharp';
import { datasetFromFiles } from '../data/index.js';
import { ImageError } from '../errors.js';
import { decodeImage, type RgbImage } from '../image/decode.js';
import { writePng } from '../image/png.js';
import { escapeXml, FONT, GRID, INK, MUTED, renderPng } from '../learn/charts.js';
import { writeJsonAtomic } from '../util/fs.js';
import type { CamMethod } from '../vision/cam.js';
import { resolveClass } from '../vision/classifier.js';
import { viridisTable } from '../vision/colormap.js';
import { faithfulness, loadExplainer, mapOnPhoto, type Curve, type Faithfulness } from '../vision/explain.js';
import type { Reporter } from './reporter.js';

export interface ExplainTaskOptions {
  method: CamMethod;
  /** Class to explain (name or index); default: the predicted class of each image. */
  class?: string;
  /** Node or tensor name; default: the last spatial feature map before pooling. */
  layer?: string;
  out: string;
  /** Compute deletion/insertion curves (default true). */
  metrics?: boolean;
  seed?: number;
  threads?: number;
  reporter?: Reporter;
}

export interface ImageExplanation {
  image: string;
  method: CamMethod;
  layer: string;
  class: string;
  classIndex: number;
  probability: number;
  grid: { h: number; w: number };
  files: { heatmap: string; overlay: string };
  faithfulness?: Faithfulness;
}

export interface ExplainTaskResult {
  method: CamMethod;
  layer: string;
  results: ImageExplanation[];
  /** Averages over the images (with metrics). */
  summary?: { n: number; drop20: number; drop20Random: number; deletionAuc: number; randomDeletionAuc: number; insertionAuc: number; randomInsertionAuc: number; chart: string };
  skipped: { path: string; reason: string }[];
}

/** The photo with the map laid over it in viridis, half and half. */
function overlay(photo: RgbImage, heat: Float32Array): RgbImage {
  const lut = viridisTable();
  const data = Buffer.alloc(photo.data.length);
  for (let i = 0; i < heat.length; i++) {
    const c = Math.round(Math.min(1, Math.max(0, heat[i]!)) * 255) * 3;
    for (let ch = 0; ch < 3; ch++) data[i * 3 + ch] = Math.round(0.5 * photo.data[i * 3 + ch]! + 0.5 * lut[c + ch]!);
  }
  return { data, width: photo.width, height: photo.height };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Averaged deletion and insertion curves, map order vs random order, as one chart. */
function curvesSvg(method: string, curves: { label: string; colour: string; dash?: boolean; curve: Curve }[]): string {
  const W = 700;
  const H = 340;
  const L = 56;
  const R = 260;
  const T = 40;
  const B = 48;
  const pw = W - L - R;
  const ph = H - T - B;
  const x = (f: number) => L + f * pw;
  const y = (p: number) => T + (1 - p) * ph;
  const grid = [0, 0.25, 0.5, 0.75, 1]
    .map((v) => `<line x1="${x(0)}" x2="${x(1)}" y1="${y(v)}" y2="${y(v)}" stroke="${GRID}"/><text x="${L - 6}" y="${y(v) + 4}" text-anchor="end" font-size="11" fill="${MUTED}" ${FONT}>${v}</text>` +
      `<text x="${x(v)}" y="${T + ph + 16}" text-anchor="middle" font-size="11" fill="${MUTED}" ${FONT}>${Math.round(v * 100)}%</text>`)
    .join('');
  const lines = curves
    .map((c, i) => {
      const pts = c.curve.fractions.map((f, j) => `${x(f).toFixed(1)},${y(c.curve.probabilities[j]!).toFixed(1)}`).join(' ');
      return `<polyline points="${pts}" fill="none" stroke="${c.colour}" stroke-width="2"${c.dash ? ' stroke-dasharray="5 4"' : ''}/>` +
        `<line x1="${W - R + 14}" x2="${W - R + 40}" y1="${T + 10 + i * 22}" y2="${T + 10 + i * 22}" stroke="${c.colour}" stroke-width="2"${c.dash ? ' stroke-dasharray="5 4"' : ''}/>` +
        `<text x="${W - R + 46}" y="${T + 14 + i * 22}" font-size="12" fill="${INK}" ${FONT}>${escapeXml(c.label)} (${c.curve.auc.toFixed(3)})</text>`;
    })
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}"><rect width="100%" height="100%" fill="white"/>` +
    `<text x="${L}" y="22" font-size="14" fill="${INK}" ${FONT}>${escapeXml(method)}: class probability as pixels are removed / revealed (area)</text>` +
    grid + lines +
    `<text x="${L + pw / 2}" y="${H - 10}" text-anchor="middle" font-size="12" fill="${INK}" ${FONT}>pixels removed (deletion) or revealed (insertion), most relevant first</text></svg>`;
}

function averageCurve(cs: Curve[]): Curve {
  const probabilities = cs[0]!.fractions.map((_, i) => mean(cs.map((c) => c.probabilities[i]!)));
  return { fractions: cs[0]!.fractions, probabilities, auc: mean(cs.map((c) => c.auc)) };
}

export async function explainTask(target: string, inputs: string[], opts: ExplainTaskOptions): Promise<ExplainTaskResult> {
  const r = opts.reporter;
  const files = await datasetFromFiles(inputs);
  const ex = await loadExplainer(target, { layer: opts.layer, threads: opts.threads });
  const skipped = [...files.skipped];
  const results: ImageExplanation[] = [];
  try {
    const classIndex = opts.class !== undefined ? resolveClass(ex.classes, opts.class) : undefined;
    await mkdir(opts.out, { recursive: true });
    r?.info?.(`explaining with ${opts.method} at layer ${ex.layer}`);
    r?.start?.('explain', files.items.length, 'img');
    const [H, W] = ex.spec.size;
    let done = 0;
    for (const { path } of files.items) {
      let photo: RgbImage;
      try {
        photo = await decodeImage(path);
      } catch (err) {
        if (err instanceof ImageError) {
          skipped.push({ path, reason: err.reason });
          r?.update?.('explain', ++done);
          continue;
        }
        throw err;
      }
      const e = await ex.explain(photo, { method: opts.method, classIndex });
      const stem = basename(path, extname(path));
      const heat = mapOnPhoto(e.inputMap, e.geometry, photo.width, photo.height);
      const heatmap = join(opts.out, `${stem}-heatmap.png`);
      const overlayPath = join(opts.out, `${stem}-cam.png`);
      await writePng({ data: Buffer.from(Array.from(heat, (v) => Math.round(Math.min(1, Math.max(0, v)) * 255))), width: photo.width, height: photo.height, channels: 1 }, heatmap);
      await writePng(overlay(photo, heat), overlayPath);
      // Read back: the heat map must be the photo's own grid (what a user lays it over).
      const meta = await sharp(heatmap).metadata();
      if (meta.width !== photo.width || meta.height !== photo.height || meta.channels !== 1) {
        throw new Error(`internal: ${heatmap} is ${meta.width}x${meta.height}x${meta.channels}, expected ${photo.width}x${photo.height}x1`);
      }
      const item: ImageExplanation = {
        image: path,
        method: opts.method,
        layer: ex.layer,
        class: e.label,
        classIndex: e.classIndex,
        probability: e.probability,
        grid: e.grid,
        files: { heatmap, overlay: overlayPath },
      };
      if (opts.metrics !== false) {
        item.faithfulness = await faithfulness(ex, Float32Array.from(e.input.data, (v) => v / 255), e.inputMap, e.classIndex, H, W, { seed: opts.seed });
      }
      await writeJsonAtomic(join(opts.out, `${stem}.json`), item);
      results.push(item);
      r?.update?.('explain', ++done, `${e.label} ${(100 * e.probability).toFixed(1)}%`);
    }
    r?.end?.('explain');
    const res: ExplainTaskResult = { method: opts.method, layer: ex.layer, results, skipped };
    const measured = results.filter((x) => x.faithfulness).map((x) => x.faithfulness!);
    if (measured.length > 0) {
      const chart = join(opts.out, 'faithfulness.png');
      const avg = (k: keyof Pick<Faithfulness, 'deletion' | 'insertion' | 'randomDeletion' | 'randomInsertion'>) => averageCurve(measured.map((m) => m[k]));
      await renderPng(
        curvesSvg(opts.method, [
          { label: 'deletion, map order', colour: '#c92a2a', curve: avg('deletion') },
          { label: 'deletion, random', colour: '#c92a2a', dash: true, curve: avg('randomDeletion') },
          { label: 'insertion, map order', colour: '#1971c2', curve: avg('insertion') },
          { label: 'insertion, random', colour: '#1971c2', dash: true, curve: avg('randomInsertion') },
        ]),
        chart,
      );
      res.summary = {
        n: measured.length,
        drop20: mean(measured.map((m) => m.drop20)),
        drop20Random: mean(measured.map((m) => m.drop20Random)),
        deletionAuc: mean(measured.map((m) => m.deletion.auc)),
        randomDeletionAuc: mean(measured.map((m) => m.randomDeletion.auc)),
        insertionAuc: mean(measured.map((m) => m.insertion.auc)),
        randomInsertionAuc: mean(measured.map((m) => m.randomInsertion.auc)),
        chart,
      };
    }
    await writeJsonAtomic(join(opts.out, 'summary.json'), { ...res, results: results.map((x) => ({ ...x, faithfulness: x.faithfulness && { drop20: x.faithfulness.drop20, drop20Random: x.faithfulness.drop20Random, deletionAuc: x.faithfulness.deletion.auc, insertionAuc: x.faithfulness.insertion.auc } })) });
    return res;
  } finally {
    await ex.dispose();
  }
}
