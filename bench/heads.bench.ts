/**
 * Frozen-head training time: graft's heads (the ONNX head trained through fit.ts on ONNX Runtime) against the
 * heads of a baseline revision (default 6cb9c14, the last with the JavaScript-kernel trainer), in one process,
 * runs alternated, on the real Cats vs Dogs and Oxford Pets features of the shared MobileNet (cached) and on the
 * synthetic sizes of the issue-2 table.
 *   npm run bench:heads [-- --baseline <rev>] [--repeats 3]
 * Prints seconds (median of the repeats), the ratio new / baseline, and the validation accuracy of each.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { openDataset, stratifiedSplit } from '../src/data/index.js';
import { Backbone } from '../src/engine/backbone.js';
import { trainHead, type FeatureSet, type TrainOptions } from '../src/learn/heads.js';
import { accuracyOf } from '../src/learn/metrics.js';
import { runExtraction } from '../src/tasks/features.js';
import { gaussian, mulberry32 } from '../src/util/random.js';

const { values: args } = parseArgs({ options: { baseline: { type: 'string', default: '6cb9c14' }, repeats: { type: 'string', default: '3' } } });
const repeats = Number(args.repeats);
const root = resolve(import.meta.dirname, '..');
const shared = resolve(process.env.GRAFT_SHARED ?? join(root, '..', 'shared'));
const model = join(shared, 'models', 'mobilenet_v1_0.75_224.onnx');

// The baseline's source, as a worktree beside the repo (its own src/ tree, imported here by path).
const baseDir = join(root, '..', `.graft-bench-baseline-${args.baseline}`);
if (!existsSync(baseDir)) execFileSync('git', ['-C', root, 'worktree', 'add', '--detach', baseDir, args.baseline!], { stdio: 'ignore' });
// Its imports resolve to this checkout's packages.
if (!existsSync(join(baseDir, 'node_modules'))) symlinkSync(join(root, 'node_modules'), join(baseDir, 'node_modules'));
type Trainer = (train: FeatureSet, val: FeatureSet | undefined, classes: string[], o: TrainOptions) => Promise<{ head: { predictProba(x: Float32Array, n: number): Float32Array | Promise<Float32Array>; dispose?: () => Promise<void> } }>;
const baseline = (await import(join(baseDir, 'src', 'learn', 'heads.ts'))).trainHead as Trainer;

async function features(dir: string, opts: Parameters<typeof openDataset>[1] = {}) {
  const ds = await openDataset(dir, opts);
  const bb = await Backbone.load(model);
  try {
    const r = await runExtraction(bb, ds.items.map((i) => i.path), { batchSize: 32, cache: join(root, '.graft-cache') });
    return { ds, set: { x: r.features, n: r.kept.length, d: r.dim, y: Int32Array.from(r.kept, (i) => ds.items[i]!.label) } as FeatureSet, kept: r.kept };
  } finally {
    await bb.dispose();
  }
}

function subset(all: FeatureSet, idx: number[]): FeatureSet {
  const x = new Float32Array(idx.length * all.d);
  idx.forEach((i, k) => x.set(all.x.subarray(i * all.d, (i + 1) * all.d), k * all.d));
  return { x, n: idx.length, d: all.d, y: Int32Array.from(idx, (i) => all.y[i]!) };
}

function blobs(n: number, d: number, C: number, seed: number): FeatureSet {
  const rng = mulberry32(seed);
  const centres = Array.from({ length: C }, () => Float32Array.from({ length: d }, () => gaussian(rng)));
  const x = new Float32Array(n * d);
  const y = Int32Array.from({ length: n }, (_, i) => i % C);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) x[i * d + j] = centres[y[i]!]![j]! + 2 * gaussian(rng);
  return { x, n, d, y };
}

const cvdTrain = await features(join(shared, 'data', 'cats_vs_dogs', 'train'));
const cvdVal = await features(join(shared, 'data', 'cats_vs_dogs', 'validation'), { classes: cvdTrain.ds.classes });
const pets = await features(join(shared, 'data', 'oxford_pets'), { layout: 'oxford-pets', label: 'breed' });
const petSplit = stratifiedSplit(pets.kept.map((i, k) => ({ i: k, label: pets.ds.items[i]!.label })), 0.3, 0);
const petTrain = subset(pets.set, petSplit.train.map((t) => t.i));
const petVal = subset(pets.set, petSplit.val.map((t) => t.i));

const cases: { name: string; train: FeatureSet; val?: FeatureSet; classes: string[]; o: TrainOptions }[] = [
  { name: 'Cats vs Dogs, linear (defaults, early stopping)', train: cvdTrain.set, val: cvdVal.set, classes: cvdTrain.ds.classes, o: {} },
  { name: 'Cats vs Dogs, MLP (defaults)', train: cvdTrain.set, val: cvdVal.set, classes: cvdTrain.ds.classes, o: { kind: 'mlp' } },
  { name: 'Oxford Pets 70/30, linear', train: petTrain, val: petVal, classes: pets.ds.classes, o: {} },
  { name: 'Oxford Pets 70/30, MLP', train: petTrain, val: petVal, classes: pets.ds.classes, o: { kind: 'mlp' } },
  { name: 'synthetic 2000 x 768, 2 classes, linear, 100 epochs', train: blobs(2000, 768, 2, 1), classes: ['a', 'b'], o: { epochs: 100 } },
  { name: 'synthetic 600 x 768, 37 classes, linear, 100 epochs', train: blobs(600, 768, 37, 2), classes: Array.from({ length: 37 }, (_, i) => `c${i}`), o: { epochs: 100 } },
  { name: 'synthetic 600 x 768, 37 classes, MLP 256, 100 epochs', train: blobs(600, 768, 37, 3), classes: Array.from({ length: 37 }, (_, i) => `c${i}`), o: { kind: 'mlp', epochs: 100 } },
];

const median = (a: number[]) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)]!;
console.log(`## Frozen heads: graft now vs ${args.baseline} (median of ${repeats}, alternated)\n`);
console.log('| case | baseline s | now s | now / baseline | val acc baseline | val acc now |');
console.log('|---|---|---|---|---|---|');
for (const c of cases) {
  const t: Record<'base' | 'now', number[]> = { base: [], now: [] };
  const acc: Record<'base' | 'now', number> = { base: NaN, now: NaN };
  for (let r = 0; r < repeats; r++) {
    for (const [k, fn] of [['base', baseline], ['now', trainHead as unknown as Trainer]] as const) {
      const t0 = performance.now();
      const res = await fn(c.train, c.val, c.classes, c.o);
      t[k].push((performance.now() - t0) / 1000);
      if (c.val) acc[k] = accuracyOf(await res.head.predictProba(c.val.x, c.val.n), c.val.y, c.classes.length);
      await res.head.dispose?.();
    }
  }
  const b = median(t.base);
  const n = median(t.now);
  const f = (v: number) => (Number.isNaN(v) ? '–' : v.toFixed(4));
  console.log(`| ${c.name} | ${b.toFixed(2)} | ${n.toFixed(2)} | **${(n / b).toFixed(2)}x** | ${f(acc.base)} | ${f(acc.now)} |`);
}
