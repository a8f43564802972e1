/**
 * Augmentation cost: CPU ms per image for a plain load (`loadInto`) against an augmented view (`loadAugmentedInto`,
 * default options), one image at a time over the first N cats_vs_dogs training JPEGs, 224x224 input. CPU time is
 * process.cpuUsage (all threads, libvips included), so it is what the views cost the machine, not wall time.
 *   node --import tsx bench/augment.bench.ts      (GRAFT_SHARED points at the shared/ folder; default ../shared; N=100)
 */
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { augmentedViews, DEFAULT_AUGMENT, loadAugmentedInto, resolveAugmentOptions, type AugmentParams } from '../src/image/augment.js';
import { loadInto, tensorLength } from '../src/image/preprocess.js';
import { defaultSpec, type PreprocessSpec } from '../src/image/spec.js';

const shared = resolve(process.env.GRAFT_SHARED ?? join(import.meta.dirname, '..', '..', 'shared'));
const n = Number(process.env.N ?? 100);
const root = join(shared, 'data', 'cats_vs_dogs', 'train');
const files: string[] = [];
for (const cls of ['cats', 'dogs']) {
  const names = (await readdir(join(root, cls))).filter((f) => f.endsWith('.jpg')).sort().slice(0, Math.ceil(n / 2));
  files.push(...names.map((f) => join(root, cls, f)));
}
files.length = Math.min(files.length, n);

async function measure(label: string, spec: PreprocessSpec, load: (out: Float32Array, file: string, i: number) => Promise<void>) {
  const out = new Float32Array(tensorLength(spec));
  for (const f of files.slice(0, 10)) await load(out, f, 0); // warm the decoder and the page cache
  const rounds = 3;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) for (const [i, f] of files.entries()) await load(out, f, i);
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;
  const per = rounds * files.length;
  console.log(`${label.padEnd(44)} cpu ${((cpu.user + cpu.system) / 1000 / per).toFixed(2)} ms/img   wall ${(wall / per).toFixed(2)} ms/img`);
}

console.log(`${files.length} JPEGs from ${root}, sharp concurrency ${sharp.concurrency()}`);
for (const spec of [defaultSpec({ size: [224, 224], cropPct: null }), defaultSpec({ size: [224, 224], cropPct: 0.875 })]) {
  console.log(`spec cropPct ${spec.cropPct}`);
  const views = (opts = DEFAULT_AUGMENT): AugmentParams[] => augmentedViews(files, 1, 1, opts).map((v) => v[0]!);
  const all = views();
  const cropOnly = views(resolveAugmentOptions({ flip: 0, brightness: 0, contrast: 0, saturation: 0 }));
  const noCrop = views(resolveAugmentOptions({ crop: false }));
  await measure('plain loadInto', spec, (out, f) => loadInto(out, 0, f, spec));
  await measure('augmented, crop only', spec, (out, f, i) => loadAugmentedInto(out, 0, f, spec, cropOnly[i]!));
  await measure('augmented, flip+jitter only (no crop)', spec, (out, f, i) => loadAugmentedInto(out, 0, f, spec, noCrop[i]!));
  await measure('augmented, default (crop+flip+jitter)', spec, (out, f, i) => loadAugmentedInto(out, 0, f, spec, all[i]!));
}
