/**
 * Feature-extraction benchmark (issue 2): end-to-end `extract` throughput over the 3000 cats_vs_dogs images
 * (decode + preprocess + forward) against raw ONNX Runtime forward throughput on random tensors, same batch size and
 * thread count, in one run; then the same extraction served from the feature cache; peak RSS.
 * int8 (issue 14): the model quantised (static QDQ, calibrated on 100 train images), then raw forward and end-to-end
 * extraction fp32 vs int8 in the same run, and the int8 features' cosine similarity to the fp32 ones.
 *   npm run bench            (GRAFT_SHARED points at the shared/ folder; default ../shared)
 *   GRAFT_BENCH_INT8=0       skips the int8 part
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { openDataset } from '../src/data/index.js';
import { Backbone } from '../src/engine/backbone.js';
import { loadCalibrationImages, quantizeOnnx } from '../src/engine/quantize/index.js';

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
  const fp32 = await bb.features(paths, { batchSize: batch });
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
  if (process.env.GRAFT_BENCH_INT8 !== '0') rows.push(...(await int8Rows(fp32.features, fp32.dim, noCacheS, rawIps, rawSingleIps)));
  const wk = Math.max(...rows.map((r) => r[0]!.length));
  for (const [k, v] of rows) console.log(`${k!.padEnd(wk)}  ${v}`);
} finally {
  await rm(cacheRoot, { recursive: true, force: true });
  await bb.dispose();
}

/**
 * The int8 rows: quantise (100 evenly spread train images, graft quantize's defaults), then the same measures as
 * above on the int8 model, and fp32 vs int8 side by side. fp32's raw forward is measured again right before int8's
 * (and fp32 as the best of its two measures), so that a busier moment for fp32 does not inflate the ratios.
 */
async function int8Rows(fp32Features: Float32Array, dim: number, fp32NoCacheS: number, fp32RawIps: number, fp32RawSingleIps: number): Promise<string[][]> {
  const ref = bb.ref;
  const t0 = performance.now();
  const calib = await loadCalibrationImages(join(shared, 'data', 'cats_vs_dogs', 'train'), ref.spec, 100);
  const q = await quantizeOnnx(ref.onnx, calib, { threads });
  const quantS = (performance.now() - t0) / 1000;
  const dirQ = await mkdtemp(join(tmpdir(), 'graft-bench-int8-'));
  const int8Path = join(dirQ, 'mobilenet.int8.onnx');
  await writeFile(int8Path, q.bytes);
  const b8 = await Backbone.load(int8Path, { threads });
  try {
    const [h, w] = b8.spec.size;
    await Promise.all(Array.from({ length: b8.ort.concurrency }, () => b8.runTensor(new Float32Array(batch * 3 * h * w), batch)));
    let t = performance.now();
    const int8 = await b8.features(paths, { batchSize: batch });
    const int8S = (performance.now() - t) / 1000;
    // fp32 again right after, same runner, so the end-to-end ratio is not skewed by a change in machine load.
    t = performance.now();
    await bb.features(paths, { batchSize: batch });
    const fp32AgainS = (performance.now() - t) / 1000;
    const fp32S = Math.min(fp32NoCacheS, fp32AgainS);
    const fp32Raw2 = await rawForward(bb);
    const int8Raw = await rawForward(b8);
    const single32 = await Backbone.load(modelPath, { threads, parallelism: 'intra-op' });
    const fp32RawSingle2 = await rawForward(single32);
    await single32.dispose();
    const single8 = await Backbone.load(int8Path, { threads, parallelism: 'intra-op' });
    const int8RawSingle = await rawForward(single8);
    await single8.dispose();
    const fp32RawSingleBest = Math.max(fp32RawSingleIps, fp32RawSingle2);
    let cos = 0;
    let minCos = 1;
    for (let i = 0; i < int8.kept.length; i++) {
      let ab = 0, aa = 0, bb2 = 0;
      for (let j = 0; j < dim; j++) {
        const a = fp32Features[i * dim + j]!, b = int8.features[i * dim + j]!;
        ab += a * b;
        aa += a * a;
        bb2 += b * b;
      }
      const c = ab / Math.sqrt(aa * bb2 || 1e-300);
      cos += c;
      minCos = Math.min(minCos, c);
    }
    cos /= int8.kept.length;
    const fp32RawBest = Math.max(fp32RawIps, fp32Raw2);
    const e2e32 = paths.length / fp32S;
    const e2e8 = paths.length / int8S;
    return [
      ['int8: quantise (100 train images, minmax)', `${quantS.toFixed(1)} s (calibration ${q.calibrationSeconds.toFixed(1)} s), ${q.nodes.length} nodes int8, float: ${q.float.map((f) => f.op).join(', ') || 'none'}`],
      ['int8 raw forward, 1 session x 2 intra-op threads', `${int8RawSingle.toFixed(1)} img/s vs fp32 ${fp32RawSingleBest.toFixed(1)} = ${(int8RawSingle / fp32RawSingleBest).toFixed(2)}x (fp32: best of 2 runs)`],
      [`int8 raw forward, ${b8.ort.concurrency} worker sessions x 1 thread`, `${int8Raw.toFixed(1)} img/s vs fp32 ${fp32RawBest.toFixed(1)} = ${(int8Raw / fp32RawBest).toFixed(2)}x (target >= 2x; fp32: best of 2 runs)`],
      ['int8 end-to-end extract, no cache', `${e2e8.toFixed(1)} img/s vs fp32 ${e2e32.toFixed(1)} = ${(e2e8 / e2e32).toFixed(2)}x (target >= 1.5x; fp32: best of 2 runs)`],
      ['int8 features vs fp32, cosine similarity', `${cos.toFixed(4)} mean, ${minCos.toFixed(4)} min over ${int8.kept.length} images (target >= 0.99)`],
    ];
  } finally {
    await b8.dispose();
    await rm(dirQ, { recursive: true, force: true });
  }
}
