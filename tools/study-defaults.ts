/**
 * Issue 14 study: which preprocessing and head-training defaults give the best frozen-feature accuracy, across
 * datasets (not tuned on one), with seeded repeats. Prints one table per dataset.
 *   node --import tsx tools/study-defaults.ts            (GRAFT_SHARED, default ../shared; features cached in
 *                                                       $GRAFT_STUDY_CACHE, default /tmp/graft-study-cache)
 * Datasets: Cats vs Dogs (train 2000 -> the 1000 validation photos, never used for selection), Oxford Pets 594
 * (5 seeded stratified 80/20 outer splits; the 20% is never used for selection), ImageNet samples (top-1 of the
 * classifier itself).
 */
import { join, resolve } from 'node:path';
import { openDataset, stratifiedSplit, type DatasetItem } from '../src/data/index.js';
import { Backbone, softmaxRows } from '../src/engine/backbone.js';
import type { PreprocessSpec } from '../src/image/spec.js';
import { trainHead, type TrainOptions } from '../src/learn/heads.js';
import { argmaxRows } from '../src/learn/metrics.js';
import type { TtaKind } from '../src/image/tta.js';
import { runExtraction } from '../src/tasks/features.js';

const shared = resolve(process.env.GRAFT_SHARED ?? join(import.meta.dirname, '..', '..', 'shared'));
const model = process.env.GRAFT_STUDY_MODEL ?? join(shared, 'models', 'mobilenet_v1_0.75_224.onnx');
const cacheRoot = process.env.GRAFT_STUDY_CACHE ?? '/tmp/graft-study-cache';
const only = process.env.GRAFT_STUDY_ONLY?.split(',');

type Pre = { name: string; cropPct: number | null; interpolation: PreprocessSpec['interpolation']; tta?: TtaKind };
const PRE: Pre[] = [
  { name: 'squash bilinear (graft today)', cropPct: null, interpolation: 'bilinear' },
  { name: 'squash bicubic', cropPct: null, interpolation: 'bicubic' },
  { name: 'squash lanczos3', cropPct: null, interpolation: 'lanczos3' },
  { name: 'crop 0.875 bilinear (PyTorch ref)', cropPct: 0.875, interpolation: 'bilinear' },
  { name: 'crop 0.875 bicubic', cropPct: 0.875, interpolation: 'bicubic' },
  { name: 'crop 1.0 bilinear', cropPct: 1, interpolation: 'bilinear' },
  { name: 'squash bilinear + TTA flip', cropPct: null, interpolation: 'bilinear', tta: 'flip' },
  { name: 'crop 0.875 bilinear + TTA flip', cropPct: 0.875, interpolation: 'bilinear', tta: 'flip' },
  { name: 'squash bilinear + TTA crop', cropPct: null, interpolation: 'bilinear', tta: 'crop' },
].filter((p) => !only || only.some((o) => p.name.startsWith(o)));

interface Set { x: Float32Array; n: number; d: number; y: Int32Array }
function subset(all: Set, idx: number[]): Set {
  const x = new Float32Array(idx.length * all.d);
  idx.forEach((i, k) => x.set(all.x.subarray(i * all.d, (i + 1) * all.d), k * all.d));
  return { x, n: idx.length, d: all.d, y: Int32Array.from(idx, (i) => all.y[i]!) };
}
async function accuracy(head: { predictProba(x: Float32Array, n: number): Promise<Float32Array> }, s: Set, C: number): Promise<number> {
  const pred = argmaxRows(await head.predictProba(s.x, s.n), s.n, C);
  let ok = 0;
  for (let i = 0; i < s.n; i++) if (pred[i] === s.y[i]) ok++;
  return ok / s.n;
}

/** Head recipes: how the head is trained given a training pool (the test set is never seen). */
type Recipe = { name: string; fit: (pool: Set, classes: string[], seed: number) => Promise<{ predictProba(x: Float32Array, n: number): Promise<Float32Array> }> };
const base: Partial<TrainOptions> = { kind: 'linear', lr: 1e-3, weightDecay: 1e-4 };
const items = (s: Set) => Array.from({ length: s.n }, (_, i) => ({ label: s.y[i]!, i }));
const RECIPES: Recipe[] = [
  {
    name: 'graft today: 20% split, early stop (patience 10), best epoch',
    fit: async (pool, classes, seed) => {
      const sp = stratifiedSplit(items(pool), 0.2, seed);
      return (await trainHead(subset(pool, sp.train.map((t) => t.i)), subset(pool, sp.val.map((t) => t.i)), classes, { ...base, seed, batchSize: 32 })).head;
    },
  },
  {
    name: 'reference: all data, 100 epochs, batch 64',
    fit: async (pool, classes, seed) => (await trainHead(pool, undefined, classes, { ...base, seed, epochs: 100, batchSize: 64 })).head,
  },
  {
    name: 'split to pick the epoch count, retrain on all',
    fit: async (pool, classes, seed) => {
      const sp = stratifiedSplit(items(pool), 0.2, seed);
      const sel = await trainHead(subset(pool, sp.train.map((t) => t.i)), subset(pool, sp.val.map((t) => t.i)), classes, { ...base, seed, batchSize: 32, patience: 10 });
      const epochs = Math.max(1, Math.round(sel.bestEpoch * 1.25)); // 25% more data: a few more steps
      return (await trainHead(pool, undefined, classes, { ...base, seed, epochs, batchSize: 32 })).head;
    },
  },
  {
    name: 'all data, 100 epochs, batch 32, wd 1e-3',
    fit: async (pool, classes, seed) => (await trainHead(pool, undefined, classes, { ...base, weightDecay: 1e-3, seed, epochs: 100, batchSize: 32 })).head,
  },
];

async function features(pre: Pre, paths: string[]): Promise<{ x: Float32Array; d: number; kept: number[] }> {
  const bb = await Backbone.load(model, { preprocess: { cropPct: pre.cropPct, interpolation: pre.interpolation } });
  try {
    const r = await runExtraction(bb, paths, { batchSize: 32, cache: cacheRoot, tta: pre.tta });
    if (r.skipped.length) console.error(`  ${r.skipped.length} skipped: ${r.skipped.map((s) => s.reason).join('; ').slice(0, 200)}`);
    return { x: r.features, d: r.dim, kept: r.kept };
  } finally {
    await bb.dispose();
  }
}

function toSet(f: { x: Float32Array; d: number; kept: number[] }, its: DatasetItem[]): Set {
  return { x: f.x, n: f.kept.length, d: f.d, y: Int32Array.from(f.kept, (i) => its[i]!.label) };
}

const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
const sd = (a: number[]) => Math.sqrt(mean(a.map((v) => (v - mean(a)) ** 2)));
const fmt = (a: number[]) => `${(100 * mean(a)).toFixed(2)} ± ${(100 * sd(a)).toFixed(2)}`;

const cvdTrain = await openDataset(join(shared, 'data', 'cats_vs_dogs', 'train'));
const cvdVal = await openDataset(join(shared, 'data', 'cats_vs_dogs', 'validation'), { classes: cvdTrain.classes });
const pets = await openDataset(join(shared, 'data', 'oxford_pets'), { layout: 'oxford-pets', label: 'breed' });
const samples = await openDataset(join(shared, 'data', 'imagenet', 'samples'), { layout: 'folder' }).catch(() => undefined);
const SEEDS = [0, 1, 2, 3, 4];
const rows: string[] = [];
for (const pre of PRE) {
  const t0 = performance.now();
  const tr = toSet(await features(pre, cvdTrain.items.map((i) => i.path)), cvdTrain.items);
  const te = toSet(await features(pre, cvdVal.items.map((i) => i.path)), cvdVal.items);
  const pf = await features(pre, pets.items.map((i) => i.path));
  const ps = toSet(pf, pets.items);
  console.error(`${pre.name}: features in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  for (const rec of RECIPES) {
    const cvd: number[] = [];
    const pet: number[] = [];
    for (const seed of SEEDS) {
      cvd.push(await accuracy(await rec.fit(tr, cvdTrain.classes, seed), te, 2));
      const outer = stratifiedSplit(items(ps), 0.2, 100 + seed);
      const head = await rec.fit(subset(ps, outer.train.map((t) => t.i)), pets.classes, seed);
      pet.push(await accuracy(head, subset(ps, outer.val.map((t) => t.i)), pets.classes.length));
    }
    const line = `| ${pre.name} | ${rec.name} | ${fmt(cvd)} | ${fmt(pet)} |`;
    rows.push(line);
    console.log(line);
  }
}
void samples;
void softmaxRows;
console.log('\n| preprocessing | head recipe | Cats vs Dogs val acc % (5 seeds) | Pets held-out 20% acc % (5 splits) |\n|---|---|---|---|\n' + rows.join('\n'));
