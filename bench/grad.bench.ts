/**
 * Gradient benchmark (issue 10): graft's ONNX gradient programs against ONNX Runtime's own forward pass, measured
 * in one run on this machine, timings interleaved (A B A B …) and summarised by their median so that load on the
 * machine hits every contender alike.
 *   npm run bench:grad            (node --import tsx bench/grad.bench.ts)
 *   GRAFT_SHARED: the shared/ folder (default ../shared); GRAFT_BENCH_QUICK=1: fewer repeats, no per-layer section.
 * Prints:
 *   1. input-gradient step, batch 1 (MobileNet v1 0.75; ResNet-50 architecture with random weights): ms and the
 *      ratio to ORT's forward of the same model;
 *   2. fine-tuning steps at batch 16 (--finetune all / 2 / 1 of the shared MobileNet, linear head, AdamW update
 *      included): img/s, and the ratio to the same step on the TF.js wasm executor (the engine before); peak RSS;
 *   3. dream (200 steps) and attack (PGD, 2/255, target tabby) on the shared MobileNet: seconds;
 *   4. per-layer formulations of the convolution gradients (what build.ts's DEFAULT_CONV_METHODS chose).
 */
import { availableParallelism, loadavg } from 'node:os';
import { readFile, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { GradientProgram } from '../src/engine/grad/program.js';
import type { ConvMethods } from '../src/engine/grad/rules/registry.js';
import { createSession } from '../src/engine/ort.js';
import { convWeightNames, cutForLastBlocks } from '../src/learn/blocks.js';
import { suffixModel } from '../src/onnx/cut.js';
import { adamwUpdate, type AdamParam } from '../src/learn/optim.js';
import { withHead } from '../src/learn/train-graph.js';
import { parseOnnx } from '../src/models/onnx-file.js';
import { OnnxBuilder } from '../src/models/importers/onnx-builder.js';
import { loadImageAndTensor } from '../src/image/preprocess.js';
import { attackImage } from '../src/vision/attack.js';
import { loadClassifier } from '../src/vision/classifier.js';
import { dream } from '../src/vision/dream.js';
import { resnetOnnx } from '../test/helpers/resnet.js';
import { setBackend, tf, TfExecutor } from '../test/helpers/tf/index.js';

const shared = resolve(process.env.GRAFT_SHARED ?? join(import.meta.dirname, '..', '..', 'shared'));
const mobilenetPath = join(shared, 'models', 'mobilenet_v1_0.75_224.onnx');
const quick = process.env.GRAFT_BENCH_QUICK === '1';
const threads = availableParallelism();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (x: number, d = 1) => x.toFixed(d);
const size = (d: number[]) => d.reduce((a, b) => a * b, 1);
const wave = (n: number, k = 0.37) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k) * 0.9);

/**
 * Run each contender in blocks of 5 (A×5 B×5 A×5 …, `reps` blocks each), after one warm-up each; medians in ms.
 * Blocks rather than single alternations: ORT's spinning threads of one session would otherwise still be spinning
 * when the other session starts, and slow it.
 */
async function interleaved(fns: (() => Promise<unknown>)[], reps: number): Promise<number[]> {
  for (const f of fns) await f();
  const times = fns.map(() => [] as number[]);
  for (let r = 0; r < Math.max(1, Math.round(reps / 5)); r++) {
    for (let k = 0; k < fns.length; k++) {
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        await fns[k]!();
        times[k]!.push(performance.now() - t0);
      }
    }
  }
  return times.map(median);
}

let peakRss = 0;
const sampleRss = () => (peakRss = Math.max(peakRss, process.memoryUsage().rss));
const rssTimer = setInterval(sampleRss, 20);

console.log(`graft gradient bench — ${new Date().toISOString()}, ${threads} cores, load ${loadavg().map((v) => v.toFixed(2)).join(' ')}`);

// ---------------------------------------------------------------------------------------------------------------
// 1. Input gradient, batch 1
async function inputGradient(label: string, bytes: Uint8Array, input: string, logits: string, classes: number): Promise<void> {
  const dims = [1, 3, 224, 224];
  const x = wave(size(dims));
  const feed = { [input]: new ort.Tensor('float32', x, dims) };
  const w = new Float32Array(classes);
  w[281 % classes] = 1;
  // Only one session alive at a time, each timed in blocks, two rounds: a live session's threads would otherwise
  // take CPU from the one being timed (ResNet-50's gradient step: 110 ms alone, ~145 ms beside a forward session).
  const f: number[] = [];
  const g: number[] = [];
  // Four rounds: this VM's speed drifts by up to 2x between minutes, and each round pairs the two measurements.
  for (let round = 0; round < 4; round++) {
    const fwd = await createSession(bytes, { where: 'bench', threads, spinning: true });
    f.push(...(await timed(() => fwd.run(feed), quick ? 5 : 10)));
    await fwd.release();
    const prog = await GradientProgram.create(bytes, { batch: 1, wrt: [input], loss: [{ kind: 'dot', output: logits, weights: 'w' }] }, { threads });
    g.push(...(await timed(() => prog.run({ [input]: x, w }), quick ? 5 : 10)));
    await prog.release();
  }
  const fm = median(f);
  const gm = median(g);
  console.log(`| ${label} | ${fmt(fm)} | ${fmt(gm)} | ${fmt(gm / fm, 2)}x |`);
}

/** `reps` timings (ms) after two warm-up runs. */
async function timed(fn: () => Promise<unknown>, reps: number): Promise<number[]> {
  await fn();
  await fn();
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

console.log('\n## 1. Input-gradient step, batch 1 (forward + backward of one logit w.r.t. the image)\n');
console.log('| model | ORT forward ms | gradient step ms | ratio |');
console.log('|---|---|---|---|');
const mobilenet = new Uint8Array(await readFile(mobilenetPath));
await inputGradient('MobileNet v1 0.75 (shared)', mobilenet, 'input', 'logits', 1000);
await inputGradient('ResNet-50 architecture, random weights', resnetOnnx(), 'input', 'logits', 1000);

// ---------------------------------------------------------------------------------------------------------------
// 2. Fine-tuning steps
console.log('\n## 2. Fine-tuning step, batch 16, linear head, AdamW (img/s)\n');
console.log('The same step on the TF.js wasm executor graft trained with before (kept as the tests\' reference, test/helpers/tf),');
console.log('alternated with it in blocks: this VM\'s speed drifts by up to 1.5x between minutes, the ratio much less.\n');
console.log('| blocks | step ms | img/s | alternated with TF.js: ONNX Runtime ms | TF.js ms | TF.js / ONNX Runtime |');
console.log('|---|---|---|---|---|---|');
// wasm memory never shrinks: the peak RSS of graft's own fine-tuning is taken before the TF.js executor first runs.
let ortPeakRss = 0;
await setBackend('wasm');
const model = parseOnnx(mobilenet, mobilenetPath);
const B = 16;
for (const blocks of ['all', 2, 1] as const) {
  const { cut } = cutForLastBlocks(model, blocks, 'features');
  const cutDims = await tensorDims(mobilenet, cut);
  const suffix = suffixModel(model, cut, cutDims, ['features']);
  const d = 768;
  const C = 2;
  const head = { kind: 'linear' as const, d, C, H: 0, mean: new Float32Array(d), std: new Float32Array(d).fill(1), params: [wave(C * d, 0.11).map((v) => v * 0.05), new Float32Array(C)] };
  const { bytes, head: hg } = withHead(suffix.bytes, 'features', head, false);
  // What `graft train --finetune` trains: the convolutions' weights and biases (batch norm frozen), and the head.
  const params = [...convWeightNames(suffix), hg.weight('W'), hg.weight('b')];
  const prog = await GradientProgram.create(bytes, { batch: B, params, wrt: params, loss: [{ kind: 'cross-entropy', logits: hg.logits, targets: 'targets' }], outputs: [hg.logits] }, { threads });
  const values = prog.paramValues();
  const adam: AdamParam[] = params.map((p) => ({ value: values[p]!, m: new Float32Array(values[p]!.length), s: new Float32Array(values[p]!.length), lrMul: 1, decay: true }));
  const x = wave(B * size(cutDims));
  const targets = new Float32Array(B * C);
  for (let i = 0; i < B; i++) targets[i * C + (i % C)] = 1 / B;
  const inputName = prog.graph.inputs[0]!.name;
  let t = 0;
  const step = async () => {
    const r = await prog.run({ [inputName]: x, targets, ...values });
    adamwUpdate(adam, params.map((p) => r.grads[p]!), { lr: 1e-5, beta1: 0.9, t: t++, scale: 1, weightDecay: 1e-4 });
  };
  const [alone] = await interleaved([step], quick ? 5 : 10);
  sampleRss();
  if (blocks === 'all') ortPeakRss = peakRss;
  // The TF.js executor's step: the same graph, weights, batch and loss; gradients read back, AdamW in JavaScript and
  // the new values assigned, as graft's fine-tuning did on it.
  const ex = await TfExecutor.load(parseOnnx(bytes, 'bench'), { backend: 'wasm', outputs: [hg.logits], trainable: params });
  const xs = tf.tensor(x, [B, ...cutDims]);
  const tt = tf.tensor2d(targets, [B, C]);
  const vars = params.map((p) => ex.variables[p]!);
  const tfValues = params.map((p) => values[p]!.slice());
  const tfAdam: AdamParam[] = tfValues.map((v) => ({ value: v, m: new Float32Array(v.length), s: new Float32Array(v.length), lrMul: 1, decay: true }));
  let tTf = 0;
  const tfStep = async () => {
    const { value, grads } = tf.variableGrads(() => tf.neg(tf.sum(tf.mul(tt, tf.logSoftmax(ex.run(xs)[hg.logits]!)))) as tf.Scalar, vars);
    const gs = vars.map((v) => grads[v.name]!.dataSync() as Float32Array);
    adamwUpdate(tfAdam, gs, { lr: 1e-5, beta1: 0.9, t: tTf++, scale: 1, weightDecay: 1e-4 });
    vars.forEach((v, i) => tf.tidy(() => v.assign(tf.tensor(tfValues[i]!, v.shape))));
    for (const t of [value, ...Object.values(grads)]) t.dispose();
  };
  const [ms, msTf] = await interleaved([step, tfStep], quick ? 5 : 10);
  console.log(`| --finetune ${blocks} (${params.length - 2} weight tensors) | ${fmt(alone!)} | ${fmt((B * 1000) / alone!)} | ${fmt(ms!)} | ${fmt(msTf!)} | ${fmt(msTf! / ms!, 2)}x |`);
  for (const t of [xs, tt]) t.dispose();
  ex.dispose();
  await prog.release();
}
console.log(`\npeak RSS of the ONNX Runtime fine-tuning (--finetune all at batch 16, bench process): ${fmt(ortPeakRss / 2 ** 20, 0)} MB`);

/** Shape of a tensor (without the batch axis), from one forward pass at batch 1. */
async function tensorDims(bytes: Uint8Array, tensor: string): Promise<number[]> {
  const m = parseOnnx(bytes, 'model');
  const { withOutputs } = await import('../src/onnx/cut.js');
  const s = await createSession(withOutputs(m.bytes, [tensor], 1), { where: 'bench', threads: 1 });
  const out = await s.run({ input: new ort.Tensor('float32', new Float32Array(3 * 224 * 224), [1, 3, 224, 224]) });
  await s.release();
  return [...out[tensor]!.dims].slice(1);
}

// ---------------------------------------------------------------------------------------------------------------
// 3. dream and attack
console.log('\n## 3. dream and attack (shared MobileNet)\n');
{
  // The classifier (gradient program + probability session) is loaded once, as `graft attack` does for a folder.
  const t0 = performance.now();
  const clf = await loadClassifier(mobilenetPath);
  await clf.crossEntropy(new Float32Array(224 * 224 * 3), 1, new Float32Array(1000).fill(1e-3));
  const load = (performance.now() - t0) / 1000;
  const d = await dream(clf, { classIndex: 281, steps: 200 });
  console.log(`dream 200 steps: ${fmt(d.seconds, 2)} s (p = ${d.probability.toFixed(3)} on the float image; model load ${fmt(load, 2)} s once)`);
  const dogsDir = join(shared, 'data', 'cats_vs_dogs', 'validation', 'dogs');
  const dogs = (await readdir(dogsDir)).sort().slice(0, quick ? 4 : 20).map((f) => join(dogsDir, f));
  const images = await Promise.all(dogs.map((p) => loadImageAndTensor(p, clf.spec).then((r) => r.image)));
  const t1 = performance.now();
  let steps = 0;
  let fooled = 0;
  for (const im of images) {
    const a = await attackImage(clf, im, { method: 'pgd', eps: 2 / 255, target: 281 });
    steps += a.steps;
    if (a.success) fooled++;
  }
  const per = (performance.now() - t1) / 1000 / images.length;
  console.log(`attack PGD 2/255 → tabby: ${fmt(per, 3)} s an image (${images.length} validation dogs, ${fmt(steps / images.length)} steps on average, ${fooled}/${images.length} fooled on the 8-bit picture)`);
  await clf.dispose();
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Per-layer formulations
if (!quick) {
  console.log('\n## 4. Convolution gradient formulations, per layer (ms for the whole program: forward + loss + the gradient)\n');
  const layer = (cin: number, cout: number, group: number, k: number, h: number, s: number) => {
    const b = new OnnxBuilder();
    b.input('x', ['N', cin, h, h]);
    b.floats('W', [cout, cin / group, k, k], wave(cout * (cin / group) * k * k, 0.7));
    const p = Math.floor(k / 2);
    b.node('Conv', ['x', 'W'], 'y', { group, strides: [s, s], pads: [p, p, p, p] });
    const oh = Math.floor((h + 2 * p - k) / s) + 1;
    b.output('y', ['N', cout, oh, oh]);
    return { bytes: b.build({ producer: 'bench', graphName: 'layer' }), xDims: [cin, h, h], yDims: [cout, oh, oh] };
  };
  const compare = async (title: string, l: ReturnType<typeof layer>, n: number, wrt: 'x' | 'W', variants: Partial<ConvMethods>[]) => {
    const progs = [];
    for (const conv of variants) {
      progs.push(await GradientProgram.create(l.bytes, { batch: n, params: wrt === 'W' ? ['W'] : [], wrt: [wrt], loss: [{ kind: 'dot', output: 'y', weights: 'wy' }], conv }, { threads }));
    }
    const x = wave(n * size(l.xDims));
    const wy = wave(n * size(l.yDims), 0.13);
    const ms = await interleaved(progs.map((p) => () => p.run({ x, wy, ...(wrt === 'W' ? p.paramValues() : {}) })), 10);
    console.log(`| ${title} | ${variants.map((v, i) => `${Object.values(v).join('/')} ${fmt(ms[i]!)}`).join(' · ')} |`);
    for (const p of progs) await p.release();
  };
  console.log('| layer (batch) | formulation ms |');
  console.log('|---|---|');
  for (const [c, h, s] of [[24, 112, 1], [48, 112, 2], [96, 56, 1], [192, 28, 1], [384, 14, 1], [768, 7, 1]] as const) {
    await compare(`depthwise 3x3 C=${c} ${h}x${h} s${s}, filter grad (16)`, layer(c, c, c, 3, h, s), 16, 'W', [{ depthwiseFilterGrad: 'grouped-conv' }, { depthwiseFilterGrad: 'unfold' }, { depthwiseFilterGrad: 'taps' }, ...(s === 1 ? [{ depthwiseFilterGrad: 'shifted-matmul' as const }] : [])]);
  }
  for (const [c, h, s] of [[24, 112, 1], [48, 112, 2], [192, 28, 1], [384, 14, 2]] as const) {
    await compare(`depthwise 3x3 C=${c} ${h}x${h} s${s}, input grad (1)`, layer(c, c, c, 3, h, s), 1, 'x', [{ inputGrad: 'conv' }, { inputGrad: 'conv-transpose' }]);
  }
  for (const [cin, cout, h] of [[48, 96, 56], [384, 384, 14]] as const) {
    await compare(`pointwise ${cin}→${cout} ${h}x${h}, filter grad (16)`, layer(cin, cout, 1, 1, h, 1), 16, 'W', [{ pointwiseFilterGrad: 'matmul' }, { pointwiseFilterGrad: 'conv' }]);
    await compare(`pointwise ${cin}→${cout} ${h}x${h}, input grad (1)`, layer(cin, cout, 1, 1, h, 1), 1, 'x', [{ inputGrad: 'conv' }, { inputGrad: 'conv-transpose' }]);
  }
  await compare('3x3 conv 3→24 224x224 s2 (stem), filter grad (16)', layer(3, 24, 1, 3, 224, 2), 16, 'W', [{ denseFilterGrad: 'conv' }, { denseFilterGrad: 'unfold' }]);
  await compare('3x3 conv 3→24 224x224 s2 (stem), input grad (1)', layer(3, 24, 1, 3, 224, 2), 1, 'x', [{ inputGrad: 'conv' }, { inputGrad: 'conv-transpose' }]);
}
clearInterval(rssTimer);
sampleRss();
console.log(`\npeak RSS of the whole run: ${fmt(peakRss / 2 ** 20, 0)} MB`);
