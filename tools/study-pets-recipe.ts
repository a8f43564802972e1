/**
 * Issue 14: does the README's Pets recipe beat the frozen head on photos it never saw during model selection?
 * Nested evaluation: 5 seeded stratified outer splits of the 594 shared Oxford Pets photos (80% for the recipe,
 * 20% held out); inside the 80%, each recipe does what it does (its own validation split, early stopping, epoch
 * choice); then both are scored on the held-out 20%.
 *   node --import tsx tools/study-pets-recipe.ts       (GRAFT_SHARED; GRAFT_STUDY_SEEDS=5)
 */
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { openDataset, stratifiedSplit, type DatasetItem } from '../src/data/index.js';
import { evalRun } from '../src/tasks/evaluate.js';
import { finetuneRun } from '../src/tasks/finetune.js';
import { trainRun } from '../src/tasks/train.js';

const shared = resolve(process.env.GRAFT_SHARED ?? join(import.meta.dirname, '..', '..', 'shared'));
const model = join(shared, 'models', 'mobilenet_v1_0.75_224.onnx');
const seeds = Array.from({ length: Number(process.env.GRAFT_STUDY_SEEDS ?? 5) }, (_, i) => i);
const cache = process.env.GRAFT_STUDY_CACHE ?? '/tmp/graft-study-cache';
const only = process.env.GRAFT_STUDY_RECIPES?.split(',');

const pets = await openDataset(join(shared, 'data', 'oxford_pets'), { layout: 'oxford-pets', label: 'breed' });
const work = await mkdtemp(join(tmpdir(), 'graft-pets-recipe-'));

/** A class-per-folder view of some items (symbolic links), so a recipe sees only them. */
async function folder(dir: string, its: DatasetItem[]): Promise<string> {
  for (const c of pets.classes) await mkdir(join(dir, c), { recursive: true });
  for (const it of its) await symlink(it.path, join(dir, pets.classes[it.label]!, basename(it.path)));
  return dir;
}

type Recipe = { name: string; run: (data: string, out: string, seed: number) => Promise<unknown> };
const RECIPES: Recipe[] = [
  { name: 'frozen linear head (graft train defaults)', run: (data, out, seed) => trainRun({ data, model, out, seed, cache }) },
  { name: 'frozen linear head --balance', run: (data, out, seed) => trainRun({ data, model, out, seed, cache, head: { balance: true } }) },
  { name: 'frozen linear head --tta flip', run: (data, out, seed) => trainRun({ data, model, out, seed, cache, tta: 'flip' }) },
  { name: 'frozen linear head --int8', run: (data, out, seed) => trainRun({ data, model, out, seed, cache, int8: true }) },
  { name: 'frozen linear head --balance --tta crop', run: (data, out, seed) => trainRun({ data, model, out, seed, cache, tta: 'crop', head: { balance: true } }) },
  {
    name: 'README recipe: --finetune 1 --augment 4 --balance --epochs 10 --lr 3e-4',
    run: (data, out, seed) => finetuneRun({ data, model, out, seed, cache, blocks: 1, augment: { views: 4 }, finetune: { epochs: 10, lr: 3e-4, balance: true } }),
  },
].filter((r) => !only || only.some((o) => r.name.startsWith(o)));

const acc: Record<string, { acc: number[]; bal: number[] }> = {};
try {
  for (const seed of seeds) {
    const outer = stratifiedSplit(pets.items, 0.2, 1000 + seed);
    const train = await folder(join(work, `s${seed}`, 'train'), outer.train);
    const held = await folder(join(work, `s${seed}`, 'held'), outer.val);
    for (const r of RECIPES) {
      const out = join(work, `s${seed}`, r.name.replace(/\W+/g, '-'));
      const t0 = performance.now();
      await r.run(train, out, seed);
      const ev = (await evalRun(out, held, { cache, out: join(out, 'held') })).evaluation;
      (acc[r.name] ??= { acc: [], bal: [] }).acc.push(ev.accuracy);
      acc[r.name]!.bal.push(ev.balancedAccuracy);
      console.error(`seed ${seed} ${r.name}: held-out acc ${ev.accuracy.toFixed(4)} bal ${ev.balancedAccuracy.toFixed(4)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    }
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
const sd = (a: number[]) => Math.sqrt(mean(a.map((v) => (v - mean(a)) ** 2)));
const f = (a: number[]) => `${(100 * mean(a)).toFixed(1)} ± ${(100 * sd(a)).toFixed(1)}`;
console.log(`| recipe | held-out accuracy % | held-out balanced accuracy % | (${seeds.length} outer splits, 475 / 119 photos) |\n|---|---|---|---|`);
const base = acc[RECIPES[0]!.name]!;
for (const [name, v] of Object.entries(acc)) {
  const diff = v.acc.map((a, i) => a - base.acc[i]!);
  console.log(`| ${name} | ${f(v.acc)} | ${f(v.bal)} | paired gain vs first: ${(100 * mean(diff)).toFixed(1)} ± ${(100 * sd(diff)).toFixed(1)} |`);
}
