/**
 * TF.js executor benchmark (issue 3): on the shared MobileNet v1 0.75, batch 1, 224x224, in one run:
 *   - forward ms: the executor on wasm vs ONNX Runtime (one session, 2 intra-op threads);
 *   - one input-gradient step (forward + backward of one logit w.r.t. the image) in ms, on wasm and on cpu;
 *   - where the time goes: forward steps by op type (wasm), gradient-step kernels by name (tf.profile, wasm).
 *   node --import tsx bench/tf-executor.bench.ts     (GRAFT_SHARED: the shared/ folder, default ../shared;
 *                                                     GRAFT_BENCH_CPU=0 skips the slow cpu-backend numbers)
 */
import { join, resolve } from 'node:path';
import { loadavg } from 'node:os';
import { OrtModel } from '../src/engine/ort.js';
import { TfExecutor, tf, setBackend, wasmThreadCount } from '../test/helpers/tf/index.js';
import { loadOnnx } from '../src/models/onnx-file.js';

const shared = resolve(process.env.GRAFT_SHARED ?? join(import.meta.dirname, '..', '..', 'shared'));
const modelPath = join(shared, 'models', 'mobilenet_v1_0.75_224.onnx');
const withCpu = process.env.GRAFT_BENCH_CPU !== '0';
const SHAPE: [number, number, number, number] = [1, 3, 224, 224];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (ms: number) => ms.toFixed(1);

function timeIt(n: number, f: () => void): { median: number; min: number } {
  const ts: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    f();
    ts.push(performance.now() - t0);
  }
  return { median: median(ts), min: Math.min(...ts) };
}

const x = new Float32Array(3 * 224 * 224);
for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) * 0.9;
const model = await loadOnnx(modelPath);
console.log(`graft TF.js executor bench — ${modelPath}`);
console.log(`load average at start: ${loadavg().map((v) => v.toFixed(2)).join(' ')} (2 cores; other work on the machine skews timings)`);

// ONNX Runtime: one session, 2 intra-op threads.
const ort = await OrtModel.create(model, ['logits'], { parallelism: 'intra-op', threads: 2 });
for (let i = 0; i < 5; i++) await ort.run(x.slice(), SHAPE);
const ortTimes: number[] = [];
for (let i = 0; i < 30; i++) {
  const t0 = performance.now();
  await ort.run(x.slice(), SHAPE);
  ortTimes.push(performance.now() - t0);
}
await ort.dispose();

/** One input-gradient step: d logit[281] / d image, forward + backward, gradient read back to the host. */
function gradStep(ex: TfExecutor, input: tf.Tensor): void {
  const { value, grad } = tf.valueAndGrad((t: tf.Tensor) => tf.sum(tf.slice(ex.run(t).logits!, [0, 281], [1, 1])))(input);
  grad.dataSync();
  value.dispose();
  grad.dispose();
}

const results: Record<string, { load: number; steps: number; fwd: { median: number; min: number }; grad: { median: number; min: number } }> = {};
for (const backend of ['wasm', ...(withCpu ? ['cpu'] : [])] as const) {
  await setBackend(backend);
  let t0 = performance.now();
  const ex = await TfExecutor.load(model, { backend, outputs: ['logits'] });
  const load = performance.now() - t0;
  const input = tf.tensor4d(x, SHAPE);
  const fwdOnce = () => tf.tidy(() => void ex.run(input).logits!.dataSync());
  const reps = backend === 'wasm' ? 30 : 3;
  fwdOnce();
  gradStep(ex, input);
  const fwd = timeIt(reps, fwdOnce);
  const grad = timeIt(backend === 'wasm' ? 20 : 2, () => gradStep(ex, input));
  results[backend] = { load, steps: ex.stepCount(), fwd, grad };

  if (backend === 'wasm') {
    // Forward: time per step, grouped by what the step implements.
    const byOp = new Map<string, number>();
    const runs = 10;
    for (let r = 0; r < runs; r++) {
      for (const s of ex.timeSteps(input)) {
        const key = s.label.includes('Conv') ? `${s.label.split('+').filter((o) => o !== 'Pad').join('+')}` : s.label;
        byOp.set(key, (byOp.get(key) ?? 0) + s.ms / runs);
      }
    }
    console.log(`\nwasm forward, per step type (mean of ${runs} runs, ms):`);
    for (const [k, v] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 10)) console.log(`  ${k.padEnd(36)} ${v.toFixed(2)}`);
    // Gradient step: kernels (composed kernels include their inner kernels).
    t0 = performance.now();
    const prof = await tf.profile(() => gradStep(ex, input));
    const wall = performance.now() - t0;
    const byKernel = new Map<string, { ms: number; n: number }>();
    for (const k of prof.kernels) {
      const e = byKernel.get(k.name) ?? { ms: 0, n: 0 };
      e.ms += k.kernelTimeMs as number;
      e.n++;
      byKernel.set(k.name, e);
    }
    console.log(`\nwasm input-gradient step, kernels by name (tf.profile, one step, ${fmt(wall)} ms wall with profiling):`);
    for (const [k, v] of [...byKernel].sort((a, b) => b[1].ms - a[1].ms).slice(0, 14)) console.log(`  ${k.padEnd(36)} ${String(v.n).padStart(4)} calls ${v.ms.toFixed(2)} ms`);
    console.log('  ("unnamed scope" = graft\'s custom-gradient convolutions, inclusive of the kernels they call)');
  }
  input.dispose();
  ex.dispose();
}

console.log('\nMobileNet v1 0.75, batch 1, 224x224');
console.log('| measure | median ms | min ms |');
console.log('|---|---|---|');
console.log(`| ONNX Runtime forward (1 session, 2 intra-op threads) | ${fmt(median(ortTimes))} | ${fmt(Math.min(...ortTimes))} |`);
for (const [b, r] of Object.entries(results)) {
  console.log(`| TF.js executor forward, ${b} | ${fmt(r.fwd.median)} | ${fmt(r.fwd.min)} |`);
}
for (const [b, r] of Object.entries(results)) {
  console.log(`| input-gradient step (forward + backward), ${b} | ${fmt(r.grad.median)} | ${fmt(r.grad.min)} |`);
}
for (const [b, r] of Object.entries(results)) console.log(`(${b}: load + first plan ${fmt(r.load)} ms, ${r.steps} steps after folding)`);
console.log(`(wasm threads: ${wasmThreadCount()}; GRAFT_TF_WASM_THREADS=${process.env.GRAFT_TF_WASM_THREADS ?? 'unset'})`);
console.log('Reference: PyTorch CPU, same gradient step: 27 ms (target <= 4x = 108 ms).');
