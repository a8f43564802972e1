/**
 * `--finetune all` training step on the TF.js executor (shared MobileNet v1 0.75, whole network trainable):
 *   node --import tsx bench/train-step.bench.ts      (GRAFT_SHARED: the shared/ folder, default ../shared)
 *   env: STEPS (timed training steps, default 6), BATCH (default 16), FWD1 (batch-1 forward reps, default 20)
 * Prints, for batch BATCH on random input: forward+backward img/s (tf.variableGrads over the executor's run, a linear
 * head and softmax cross-entropy, as src/learn/finetune.ts does), the AdamW update time, and a per-kernel breakdown
 * (every wasm kernel wrapped with a timer; times are exclusive: a composed kernel's inner kernels count for
 * themselves, so the list sums to the kernel time of the step). Then batch-1 forward ms (known: 31.7 ms).
 * The machine is shared (2 cores): the load average is printed with every measurement.
 */
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { TfExecutor, tf } from '../src/engine/tf/index.js';
import { adamwUpdate, type AdamParam } from '../src/learn/finetune.js';
import { convWeightNames, cutForLastBlocks, suffixModel } from '../src/learn/blocks.js';
import { resolveModel } from '../src/models/resolve.js';
import { mulberry32, gaussian } from '../src/util/random.js';

const shared = resolve(process.env.GRAFT_SHARED ?? join(import.meta.dirname, '..', '..', 'shared'));
const modelPath = join(shared, 'models', 'mobilenet_v1_0.75_224.onnx');
const STEPS = Number(process.env.STEPS ?? 6);
const BATCH = Number(process.env.BATCH ?? 16);
const FWD1 = Number(process.env.FWD1 ?? 20);
const load = () => loadavg().map((v) => v.toFixed(2)).join(' ');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

// ---- per-kernel timing: wrap every wasm kernel (exclusive times via a stack) ----
const stats = new Map<string, { ms: number; n: number }>();
let timing = false;
const stack: number[] = []; // child time accumulated per open frame
/** Kernels listed in env DETAIL (comma-separated) are broken down by input shapes and attributes. */
const DETAIL = new Set((process.env.DETAIL ?? '').split(',').filter(Boolean));
function describeArgs(args: Parameters<tf.KernelFunc>[0]): string {
  const ins = Object.entries(args.inputs).map(([k, t]) => `${k}[${t?.shape}]`).join(' ');
  const a = args.attrs as Record<string, unknown> | undefined;
  const at = a ? ['strides', 'dilations', 'pad', 'transposeA', 'transposeB', 'perm'].filter((k) => a[k] !== undefined).map((k) => `${k}=${JSON.stringify(a[k])}`).join(' ') : '';
  return `${ins} ${at}`;
}
function wrapKernels(): void {
  for (const k of tf.getKernelsForBackend('wasm')) {
    const cfg = tf.getKernel(k.kernelName, 'wasm') as { kernelFunc: tf.KernelFunc } & Record<string, unknown>;
    const inner = cfg.kernelFunc;
    const name = k.kernelName;
    cfg.kernelFunc = (args) => {
      if (!timing) return inner(args);
      stack.push(0);
      const t0 = performance.now();
      try {
        return inner(args);
      } finally {
        const total = performance.now() - t0;
        const child = stack.pop()!;
        if (stack.length) stack[stack.length - 1]! += total;
        const key = DETAIL.has(name) ? `${name} ${describeArgs(args)}` : name;
        const e = stats.get(key) ?? { ms: 0, n: 0 };
        e.ms += total - child;
        e.n++;
        stats.set(key, e);
      }
    };
  }
}

const ref = await resolveModel(modelPath);
const { cut } = cutForLastBlocks(ref.onnx, 'all');
const cutShape = [3, 224, 224];
const suffix = suffixModel(ref.onnx, cut, cutShape, [ref.featureTensor]);
const trainable = convWeightNames(suffix);
const ex = await TfExecutor.load(suffix, { outputs: [ref.featureTensor], trainable, backend: 'wasm' });
wrapKernels();
console.log(`train-step bench — ${modelPath}, cut '${cut}', feature '${ref.featureTensor}', ${trainable.length} trainable tensors, batch ${BATCH}`);
console.log(`load at start: ${load()}`);

const rng = mulberry32(7);
const xb = tf.tensor(Float32Array.from({ length: BATCH * 3 * 224 * 224 }, () => gaussian(rng)), [BATCH, ...cutShape]);
const labels = Int32Array.from({ length: BATCH }, (_, i) => i % 2);
const d = 768;
const C = 2;
const headW = tf.variable(tf.tensor(Float32Array.from({ length: C * d }, () => gaussian(rng) * 0.05), [C, d]), true, 'headW');
const headB = tf.variable(tf.zeros([C]), true, 'headB');
const params: AdamParam[] = [
  ...trainable.map((name) => ({ v: ex.variables[name]!, lrMul: 0.1, decay: ex.variables[name]!.rank > 1 })),
  { v: headW, lrMul: 1, decay: true },
  { v: headB, lrMul: 1, decay: false },
].map((p) => ({ ...p, m: tf.variable(tf.zerosLike(p.v), false), s: tf.variable(tf.zerosLike(p.v), false) }));
const yb = tf.oneHot(tf.tensor1d(labels, 'int32'), C);

function fwdBwd(): { grads: tf.NamedTensorMap; loss: number } {
  const lossFn = () => {
    const feats = ex.run(xb)[ref.featureTensor]! as tf.Tensor2D;
    const logits = tf.add(tf.matMul(tf.reshape(feats, [BATCH, d]) as tf.Tensor2D, headW, false, true), headB);
    return tf.mean(tf.neg(tf.sum(tf.mul(yb, tf.logSoftmax(logits)), 1))) as tf.Scalar;
  };
  const { value, grads } = tf.variableGrads(lossFn, params.map((p) => p.v));
  const loss = value.dataSync()[0]!;
  value.dispose();
  return { grads, loss };
}

function update(grads: tf.NamedTensorMap, t: number): void {
  const gl = params.map((p) => grads[p.v.name]!);
  adamwUpdate(params, gl, { lr: 1e-4, beta1: 0.9, t, scale: 1, weightDecay: 1e-4 });
  for (const g of gl) g.dispose();
}

// Warm-up (plans, XNNPACK operator caches).
for (let i = 0; i < 2; i++) update(fwdBwd().grads, i);

const fb: number[] = [];
const up: number[] = [];
const losses: number[] = [];
for (let i = 0; i < STEPS; i++) {
  let t0 = performance.now();
  const { grads, loss } = fwdBwd();
  // Make sure every gradient is computed (wasm is synchronous, so it is).
  fb.push(performance.now() - t0);
  losses.push(loss);
  t0 = performance.now();
  update(grads, i + 2);
  tf.tidy(() => params[0]!.v.dataSync());
  up.push(performance.now() - t0);
}
const fbMed = median(fb);
const upMed = median(up);
console.log(`\nbatch ${BATCH} training step (${STEPS} steps, median): forward+backward ${fbMed.toFixed(0)} ms, AdamW ${upMed.toFixed(0)} ms → ${((BATCH * 1000) / (fbMed + upMed)).toFixed(2)} img/s (fwd+bwd alone ${((BATCH * 1000) / fbMed).toFixed(2)} img/s; min step ${(Math.min(...fb) + Math.min(...up)).toFixed(0)} ms)`);
console.log(`  all f+b ms: ${fb.map((v) => v.toFixed(0)).join(' ')}; AdamW ms: ${up.map((v) => v.toFixed(0)).join(' ')}; losses ${losses.map((v) => v.toFixed(4)).join(' ')}`);
console.log(`  load now: ${load()}`);

// Per-kernel profile of one forward+backward step and one update.
function profile(label: string, f: () => void): void {
  stats.clear();
  timing = true;
  const t0 = performance.now();
  f();
  const wall = performance.now() - t0;
  timing = false;
  const rows = [...stats].sort((a, b) => b[1].ms - a[1].ms);
  const sum = rows.reduce((a, [, v]) => a + v.ms, 0);
  console.log(`\n${label}: ${wall.toFixed(0)} ms wall, ${sum.toFixed(0)} ms in kernels (exclusive), ${rows.reduce((a, [, v]) => a + v.n, 0)} kernel calls`);
  for (const [k, v] of rows.slice(0, Number(process.env.TOP ?? 22))) console.log(`  ${k.padEnd(DETAIL.size ? 110 : 38)} ${String(v.n).padStart(5)} calls ${v.ms.toFixed(1).padStart(8)} ms ${((100 * v.ms) / sum).toFixed(1).padStart(5)}%`);
}
let held: tf.NamedTensorMap = {};
profile(`forward+backward, batch ${BATCH}`, () => {
  held = fwdBwd().grads;
});
profile('AdamW update', () => update(held, 99));

// Batch-1 forward.
const x1 = tf.slice(xb, [0, 0, 0, 0], [1, 3, 224, 224]);
const fwd1 = () => tf.tidy(() => void ex.run(x1)[ref.featureTensor]!.dataSync());
fwd1();
const ts: number[] = [];
for (let i = 0; i < FWD1; i++) {
  const t0 = performance.now();
  fwd1();
  ts.push(performance.now() - t0);
}
console.log(`\nbatch-1 forward: median ${median(ts).toFixed(1)} ms, min ${Math.min(...ts).toFixed(1)} ms (known 31.7 ms); load ${load()}`);
console.log(JSON.stringify({ batch: BATCH, fwdBwdMs: fbMed, adamwMs: upMed, imgPerSec: (BATCH * 1000) / (fbMed + upMed), fwd1Ms: median(ts), load: loadavg() }));
