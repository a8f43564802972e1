/**
 * Feature-extraction benchmark (issue 2): end-to-end `extract` throughput over the 3000 cats_vs_dogs images
 * (decode + preprocess + forward) against raw ONNX Runtime forward throughput on random tensors, same batch size and
 * thread count, in one run; then the same extraction served from the feature cache; peak RSS.
 *   npm run bench            (GRAFT_SHARED points at the shared/ folder; default ../shared)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { openDataset } from '../src/data/index.js';
import { Backbone } from '../src/engine/backbone.js';

const shared = resolve(process.env.GRAFT_SHARED ?? join(import.meta.dirname, '..', '..', 'shared'));
const modelPath = join(shared, 'models', 'mobilenet_v1_0.75_224.onnx');
const batch = 32;
const threads = Number(process.env.GRAFT_THREADS ?? availableParallelism());

const rssMB = () => process.resourceUsage().maxRSS / 1024;

const bb = await Backbone.load(modelPath, { threads });
const [h, w] = bb.spec.size;
const per = 3 * h * w;

// Raw forward: random tensors, no decode.
const x = new Float32Array(batch * per);
for (let i = 0; i < x.length; i++) x[i] = Math.random() * 2 - 1;
for (let i = 0; i < 2; i++) await bb.runTensor(x, batch);
const rawBatches = Number(process.env.GRAFT_BENCH_RAW_BATCHES ?? 30);
let t = performance.now();
for (let i = 0; i < rawBatches; i++) await bb.runTensor(x, batch);
const rawIps = (rawBatches * batch) / ((performance.now() - t) / 1000);

// End to end over the real images, cold cache (a fresh cache folder), then warm.
const paths: string[] = [];
for (const split of ['train', 'validation']) paths.push(...(await openDataset(join(shared, 'data', 'cats_vs_dogs', split))).items.map((i) => i.path));
const cacheRoot = await mkdtemp(join(tmpdir(), 'graft-bench-cache-'));
try {
  t = performance.now();
  const cold = await bb.features(paths, { batchSize: batch, cache: bb.cacheFor(undefined, cacheRoot) });
  const coldS = (performance.now() - t) / 1000;
  const rssAfterCold = rssMB();
  t = performance.now();
  const warm = await bb.features(paths, { batchSize: batch, cache: bb.cacheFor(undefined, cacheRoot) });
  const warmS = (performance.now() - t) / 1000;
  // The same extraction with no cache at all, to show the cache's write cost is small.
  t = performance.now();
  await bb.features(paths, { batchSize: batch });
  const noCacheS = (performance.now() - t) / 1000;

  const e2eIps = paths.length / coldS;
  const rows = [
    ['model', modelPath],
    ['threads / batch', `${threads} / ${batch}`],
    ['raw ORT forward (random tensors)', `${rawIps.toFixed(1)} img/s`],
    ['end-to-end extract, cold cache', `${e2eIps.toFixed(1)} img/s (${paths.length} images, ${coldS.toFixed(1)} s, ${cold.skipped.length} skipped)`],
    ['end-to-end extract, no cache', `${(paths.length / noCacheS).toFixed(1)} img/s (${noCacheS.toFixed(1)} s)`],
    ['ratio end-to-end / raw forward', `${(e2eIps / rawIps).toFixed(3)} (target >= 0.85)`],
    ['second run, from cache', `${warmS.toFixed(2)} s (${warm.fromCache} from cache) = ${(coldS / warmS).toFixed(1)}x faster (target >= 20x)`],
    ['peak RSS after cold extraction', `${rssAfterCold.toFixed(0)} MB (target <= 1024 MB)`],
  ];
  const wk = Math.max(...rows.map((r) => r[0]!.length));
  for (const [k, v] of rows) console.log(`${k!.padEnd(wk)}  ${v}`);
} finally {
  await rm(cacheRoot, { recursive: true, force: true });
  await bb.dispose();
}
