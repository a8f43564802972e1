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

const rawBatches = Number(process.env.GRAFT_BENCH_RAW_BATCHES ?? 40);

/** Raw forward throughput on random tensors (no decode), keeping the runner's useful number of batches in flight. */
async function rawForward(b: Backbone): Promise<number> {
  const [h, w] = b.spec.size;
  const x = new Float32Array(batch * 3 * h * w);
  for (let i = 0; i < x.length; i++) x[i] = Math.random() * 2 - 1;
  const lanes = b.ort.concurrency;
  const go = (n: number) => Promise.all(Array.from({ length: lanes }, async () => { for (let i = 0; i < n; i++) await b.runTensor(x, batch); }));
  await go(2); // warm every session
  const t0 = performance.now();
  await go(Math.ceil(rawBatches / lanes));
  return (Math.ceil(rawBatches / lanes) * lanes * batch) / ((performance.now() - t0) / 1000);
}

// graft's default runner: one single-threaded session per thread, in worker threads.
const bb = await Backbone.load(modelPath, { threads });
let t = performance.now();

// Warm the sessions (as rawForward does for itself), so neither side pays session start-up in its timing.
{
  const [h, w] = bb.spec.size;
  await Promise.all(Array.from({ length: bb.ort.concurrency }, () => bb.runTensor(new Float32Array(batch * 3 * h * w), batch)));
}

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
  // Raw forward after the extraction, so that peak RSS above is the extraction's own.
  const rawIps = await rawForward(bb);
  // The classic set-up: one session, all threads intra-op.
  const single = await Backbone.load(modelPath, { threads, parallelism: 'intra-op' });
  const rawSingleIps = await rawForward(single);
  await single.dispose();

  const e2eIps = paths.length / coldS;
  const rows = [
    ['model', modelPath],
    ['threads / batch', `${threads} / ${batch}`],
    ['raw ORT forward, 1 session x 2 intra-op threads', `${rawSingleIps.toFixed(1)} img/s`],
    [`raw ORT forward, ${bb.ort.concurrency} worker sessions x 1 thread`, `${rawIps.toFixed(1)} img/s (graft's default runner)`],
    ['end-to-end extract, cold cache', `${e2eIps.toFixed(1)} img/s (${paths.length} images, ${coldS.toFixed(1)} s, ${cold.skipped.length} skipped)`],
    ['end-to-end extract, no cache', `${(paths.length / noCacheS).toFixed(1)} img/s (${noCacheS.toFixed(1)} s)`],
    ['ratio end-to-end / raw forward (1 session)', `${(e2eIps / rawSingleIps).toFixed(3)} (target >= 0.85)`],
    ['ratio end-to-end / raw forward (workers)', `${(e2eIps / rawIps).toFixed(3)} (the same runner with and without decoding)`],
    ['second run, from cache', `${warmS.toFixed(2)} s (${warm.fromCache} from cache) = ${(coldS / warmS).toFixed(1)}x faster (target >= 20x)`],
    ['peak RSS after cold extraction', `${rssAfterCold.toFixed(0)} MB (target <= 1024 MB)`],
  ];
  const wk = Math.max(...rows.map((r) => r[0]!.length));
  for (const [k, v] of rows) console.log(`${k!.padEnd(wk)}  ${v}`);
} finally {
  await rm(cacheRoot, { recursive: true, force: true });
  await bb.dispose();
}
