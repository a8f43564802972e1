/**
 * Batch norm in training mode: the executor's training-mode BatchNormalization (batch statistics, gradients through
 * them, running-statistic updates by the momentum rule) and fine-tuning with `trainBn` on a model with real
 * BatchNormalization nodes (statistics trained, checkpointed, exported).
 */
import { stopAfter } from '../src/learn/fit.js';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { OrtModel } from '../src/engine/ort.js';
import { tf } from './helpers/tf/backend.js';
import { TfExecutor } from './helpers/tf/executor.js';
import { buildLoaded, type GraphSpec } from './helpers/onnx-builder.js';
import { bnStatNames, type CutSet, finetune, replaceInitializers, suffixModel } from '../src/learn/finetune.js';
import { parseOnnx } from '../src/models/onnx-file.js';
import { gaussian, mulberry32 } from '../src/util/random.js';
import { tinyCnn, TINY_SIZE, tinyCutSet } from './helpers/tiny-cnn.js';

const S = TINY_SIZE;
const EPS = 1e-3;
const MOMENTUM = 0.8;

function randn(n: number, seed: number, scale = 1, shift = 0): number[] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => gaussian(rng) * scale + shift);
}

/** x [N,3,5,5] → Conv 3x3 (3→4, pad 1) → BatchNormalization (momentum 0.8) → Relu → y; 'c' and 'bn' observable. */
function convBnRelu(): GraphSpec {
  return {
    inputs: [{ name: 'x', shape: ['N', 3, 5, 5] }],
    outputs: ['y'],
    initializers: [
      { name: 'w', dims: [4, 3, 3, 3], values: randn(108, 1, 0.4) },
      { name: 'b', dims: [4], values: randn(4, 2, 0.1) },
      { name: 'scale', dims: [4], values: randn(4, 3, 0.2, 1) },
      { name: 'B', dims: [4], values: randn(4, 4, 0.1) },
      { name: 'mean', dims: [4], values: randn(4, 5, 0.2) },
      { name: 'var', dims: [4], values: randn(4, 6, 0.1, 1).map(Math.abs) },
    ],
    nodes: [
      { op: 'Conv', name: 'conv', inputs: ['x', 'w', 'b'], outputs: ['c'], attrs: { pads: { ints: [1, 1, 1, 1] } } },
      { op: 'BatchNormalization', name: 'bn', inputs: ['c', 'scale', 'B', 'mean', 'var'], outputs: ['bn'], attrs: { epsilon: { f: EPS }, momentum: { f: MOMENTUM } } },
      { op: 'Relu', name: 'relu', inputs: ['bn'], outputs: ['y'] },
    ],
  };
}

const init = (spec: GraphSpec, name: string) => Float64Array.from(spec.initializers!.find((t) => t.name === name)!.values);

/** Batch mean, biased and unbiased variance per channel of an NCHW array, in float64. */
function batchStats(c: ArrayLike<number>, shape: number[]): { mean: number[]; biased: number[]; unbiased: number[] } {
  const [n, ch, h, w] = shape as [number, number, number, number];
  const hw = h * w;
  const cnt = n * hw;
  const mean: number[] = [];
  const biased: number[] = [];
  const unbiased: number[] = [];
  for (let k = 0; k < ch; k++) {
    let s = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < hw; j++) s += c[(i * ch + k) * hw + j]!;
    const m = s / cnt;
    let q = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < hw; j++) q += (c[(i * ch + k) * hw + j]! - m) ** 2;
    mean.push(m);
    biased.push(q / cnt);
    unbiased.push(q / (cnt - 1));
  }
  return { mean, biased, unbiased };
}

/** Batch norm of an NCHW array with given per-channel mean and variance, in float64. */
function bnHand(c: ArrayLike<number>, shape: number[], mean: ArrayLike<number>, vr: ArrayLike<number>, scale: ArrayLike<number>, B: ArrayLike<number>): number[] {
  const [n, ch, h, w] = shape as [number, number, number, number];
  const hw = h * w;
  const out: number[] = new Array(c.length);
  for (let i = 0; i < n; i++)
    for (let k = 0; k < ch; k++)
      for (let j = 0; j < hw; j++) {
        const at = (i * ch + k) * hw + j;
        out[at] = ((c[at]! - mean[k]!) / Math.sqrt(vr[k]! + EPS)) * scale[k]! + B[k]!;
      }
  return out;
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'same lengths');
  let m = 0;
  for (let k = 0; k < a.length; k++) m = Math.max(m, Math.abs(a[k]! - b[k]!));
  return m;
}

const SHAPE = [3, 3, 5, 5];
/** Shape of the conv / batch-norm output. */
const CSHAPE = [3, 4, 5, 5];

describe('executor: batch norm in training mode', () => {
  const spec = convBnRelu();
  const xv = Float32Array.from(randn(3 * 3 * 25, 11, 1, 0.5));

  /** Conv output 'c' for x, from an inference executor. */
  async function convOut(): Promise<Float32Array> {
    const ex = await TfExecutor.load(buildLoaded(spec), { outputs: ['c'] });
    try {
      return tf.tidy(() => ex.run(tf.tensor(xv, SHAPE)).c!.dataSync().slice() as Float32Array);
    } finally {
      ex.dispose();
    }
  }

  test('training-mode forward = batch norm with batch statistics (1e-5); gradients match finite differences', async () => {
    const c = await convOut();
    const ex = await TfExecutor.load(buildLoaded(spec), { outputs: ['bn', 'y'], trainable: ['w', 'scale', 'B'], statistics: ['mean', 'var'] });
    try {
      const x = tf.tensor(xv, SHAPE);
      const out = ex.run(x, { training: true });
      const bn = out.bn!.dataSync();
      const y = out.y!.dataSync();
      tf.dispose(out);
      const st = batchStats(c, CSHAPE);
      const want = bnHand(c, CSHAPE, st.mean, st.biased, init(spec, 'scale'), init(spec, 'B'));
      assert.ok(maxAbs(bn, want) <= 1e-5, `bn vs hand: ${maxAbs(bn, want)}`);
      assert.ok(maxAbs(y, want.map((v) => Math.max(0, v))) <= 1e-5, `relu(bn) vs hand: ${maxAbs(y, want.map((v) => Math.max(0, v)))}`);
      assert.equal(ex.pendingBatchNormUpdates, 1, 'one update recorded');
      ex.discardBatchNormUpdates();

      // Gradients of sum(bn * r) w.r.t. the input and weights, through the batch statistics.
      const r = randn(bn.length, 7);
      const rt = tf.tensor(r, CSHAPE);
      const lossOf = (t: tf.Tensor) => tf.sum(tf.mul(ex.run(t, { training: true }).bn!, rt)) as tf.Scalar;
      const hostLoss = (t: tf.Tensor) => tf.tidy(() => Array.from(ex.run(t, { training: true }).bn!.dataSync()).reduce((s, v, k) => s + v * r[k]!, 0));
      const check = (what: string, analytic: ArrayLike<number>, fd: number[], coords: number[]) => {
        const bad = coords.filter((k, j) => Math.abs(analytic[k]! - fd[j]!) > 2e-3 + 2e-2 * Math.abs(fd[j]!));
        assert.ok(bad.length === 0, `${what}: gradient differs from finite differences at ${bad.map((k) => `#${k}`).join(',')}`);
      };
      const h = 1e-2;
      const gx = tf.tidy(() => tf.valueAndGrad(lossOf)(x).grad.dataSync().slice());
      const coords = [0, 5, 17, 40, 77, 101, 150, 190, 224];
      const fdx = coords.map((k) => {
        const at = (d: number) => {
          const p = xv.slice();
          p[k] += d;
          const t = tf.tensor(p, SHAPE);
          const l = hostLoss(t);
          t.dispose();
          return l;
        };
        return (at(h) - at(-h)) / (2 * h);
      });
      check('input', gx, fdx, coords);
      // (The finite differences run in training mode too, so they see the batch statistics move with the input.)
      const { value, grads } = tf.variableGrads(() => lossOf(x));
      value.dispose();
      for (const name of ['w', 'scale', 'B']) {
        const v = ex.variables[name]!;
        const g = grads[v.name]!.dataSync().slice();
        const orig = v.dataSync().slice();
        const wc = Array.from({ length: Math.min(orig.length, 10) }, (_, i) => (i * 7) % orig.length);
        const fd = wc.map((k) => {
          const at = (d: number) => {
            const p = orig.slice();
            p[k] += d;
            tf.tidy(() => v.assign(tf.tensor(p, v.shape)));
            return hostLoss(x);
          };
          const dd = (at(h) - at(-h)) / (2 * h);
          tf.tidy(() => v.assign(tf.tensor(orig, v.shape)));
          return dd;
        });
        check(`weight ${name}`, g, fd, wc);
      }
      tf.dispose(grads);
      ex.discardBatchNormUpdates();
      x.dispose();
      rt.dispose();
    } finally {
      ex.dispose();
    }
  });

  test('running statistics follow the momentum rule after one step (unbiased variance); inference then uses them', async () => {
    const c = await convOut();
    const ex = await TfExecutor.load(buildLoaded(spec), { outputs: ['bn'], statistics: ['mean', 'var'] });
    try {
      const x = tf.tensor(xv, SHAPE);
      // Inference mode: running statistics, nothing recorded.
      const before = tf.tidy(() => ex.run(x).bn!.dataSync().slice());
      const m0 = init(spec, 'mean');
      const v0 = init(spec, 'var');
      assert.ok(maxAbs(before, bnHand(c, CSHAPE, m0, v0, init(spec, 'scale'), init(spec, 'B'))) <= 1e-5, 'inference mode uses the running statistics');
      assert.equal(ex.pendingBatchNormUpdates, 0, 'inference records nothing');

      tf.dispose(ex.run(x, { training: true }));
      assert.equal(ex.applyBatchNormUpdates(), 1, 'one update applied');
      assert.equal(ex.pendingBatchNormUpdates, 0, 'nothing pending after apply');
      const st = batchStats(c, CSHAPE);
      const m1 = Array.from(m0, (m, k) => MOMENTUM * m + (1 - MOMENTUM) * st.mean[k]!);
      const v1 = Array.from(v0, (v, k) => MOMENTUM * v + (1 - MOMENTUM) * st.unbiased[k]!);
      assert.ok(maxAbs(ex.statistics.mean!.dataSync(), m1) <= 1e-5, `running mean: ${maxAbs(ex.statistics.mean!.dataSync(), m1)}`);
      assert.ok(maxAbs(ex.statistics.var!.dataSync(), v1) <= 1e-5, `running var: ${maxAbs(ex.statistics.var!.dataSync(), v1)}`);

      // Inference after training: the updated running statistics.
      const afterInf = tf.tidy(() => ex.run(x).bn!.dataSync().slice());
      assert.ok(maxAbs(afterInf, bnHand(c, CSHAPE, m1, v1, init(spec, 'scale'), init(spec, 'B'))) <= 1e-5, 'inference uses the updated running statistics');
      assert.ok(maxAbs(afterInf, before) > 1e-3, 'and they differ from before');
      x.dispose();
    } finally {
      ex.dispose();
    }
  });

  test('statistics must be batch-norm running mean/var', async () => {
    await assert.rejects(TfExecutor.load(buildLoaded(spec), { statistics: ['scale'] }), /not the running mean or variance/);
  });
});

/** The tiny CNN with its folded batch norm (Mul/Add) replaced by a real BatchNormalization node. */
function tinyBnCnn(): GraphSpec {
  const spec = tinyCnn();
  const rng = mulberry32(21);
  const inits = spec.initializers!.filter((t) => t.name !== 'bn_s' && t.name !== 'bn_b');
  inits.push(
    { name: 'bn_scale', dims: [6], values: Array.from({ length: 6 }, () => 1 + (rng() - 0.5) * 0.4) },
    { name: 'bn_bias', dims: [6], values: Array.from({ length: 6 }, () => (rng() - 0.5) * 0.2) },
    { name: 'bn_mean', dims: [6], values: Array.from({ length: 6 }, () => (rng() - 0.5) * 0.2) },
    { name: 'bn_var', dims: [6], values: Array.from({ length: 6 }, () => 0.5 + rng()) },
  );
  const nodes = spec.nodes.filter((n) => n.name !== 'bn_mul' && n.name !== 'bn_add');
  const at = nodes.findIndex((n) => n.name === 'clip1');
  nodes.splice(at, 0, { op: 'BatchNormalization', name: 'bn', inputs: ['p1', 'bn_scale', 'bn_bias', 'bn_mean', 'bn_var'], outputs: ['a1'], attrs: { epsilon: { f: 1e-3 } } });
  return { ...spec, initializers: inits, nodes };
}

const cutSet = tinyCutSet;

describe('fine-tuning with trainBn on a model with real batch norm', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'graft-bn-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));
  const opts = { epochs: 4, batchSize: 8, lr: 5e-3, probeEpochs: 5, patience: Infinity, seed: 4, dropout: 0.2, backboneLrFactor: 1 };
  const m = buildLoaded(tinyBnCnn());
  const train = cutSet(24, 1);
  const val = cutSet(12, 2);
  const orig = (name: string) => Float32Array.from(tinyBnCnn().initializers!.find((t) => t.name === name)!.values);

  test('running statistics train; the exported model on ONNX Runtime = the executor (1e-4); resume is exact (1e-6)', async () => {
    assert.deepEqual(bnStatNames(m), ['bn_mean', 'bn_var']);
    const infos: string[] = [];
    const a = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...opts, trainBn: true, checkpointDir: join(dir, 'a'), onInfo: (s) => infos.push(s) });
    assert.ok(infos.some((s) => /1 batch-norm layer .*training mode/.test(s)), `info: ${infos.join(' | ')}`);
    for (const name of ['bn_mean', 'bn_var', 'bn_scale', 'bn_bias']) {
      assert.ok(a.weights[name], `${name} in the weights`);
      assert.ok(maxAbs(a.weights[name]!, orig(name)) > 1e-4, `${name} changed`);
    }
    // Export, run the full model on ORT; the executor on the exported suffix in inference mode gives the same.
    const exported = parseOnnx(replaceInitializers(m, a.weights), 'exported.onnx');
    const ort = await OrtModel.create(exported, ['r0', 'features'], { threads: 1 });
    const rng = mulberry32(9);
    const x = Float32Array.from({ length: 3 * 3 * S * S }, () => rng());
    const out = await ort.run(x, [3, 3, S, S]);
    await ort.dispose();
    const ex = await TfExecutor.load(suffixModel(m, 'r0', [4, S, S], ['features']), { outputs: ['features'], statistics: ['bn_mean', 'bn_var'], trainable: Object.keys(a.weights).filter((k) => k !== 'bn_mean' && k !== 'bn_var') });
    try {
      for (const [k, v] of Object.entries(a.weights)) tf.tidy(() => (ex.variables[k] ?? ex.statistics[k])!.assign(tf.tensor(v, (ex.variables[k] ?? ex.statistics[k])!.shape)));
      const f = tf.tidy(() => ex.run(tf.tensor(out.r0!.data, out.r0!.dims)).features!.dataSync().slice());
      const d = maxAbs(f, out.features!.data);
      assert.ok(d <= 1e-4, `executor (inference mode) vs ORT on the exported model: ${d}`);
    } finally {
      ex.dispose();
    }

    // Resume mid-run (2 epochs, then 2 more) = uninterrupted.
    const ckB = join(dir, 'b');
    await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...opts, trainBn: true, checkpointDir: ckB, callbacks: [stopAfter(2)] });
    const b = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...opts, trainBn: true, checkpointDir: ckB, resume: true });
    assert.deepEqual(Object.keys(b.weights).sort(), Object.keys(a.weights).sort());
    for (const k of Object.keys(a.weights)) assert.ok(maxAbs(a.weights[k]!, b.weights[k]!) <= 1e-6, `${k}: resumed vs uninterrupted ${maxAbs(a.weights[k]!, b.weights[k]!)}`);
    for (let e = 0; e < 4; e++) assert.ok(Math.abs(a.history[e]!.trainLoss - b.history[e]!.trainLoss) < 1e-6, `epoch ${e + 1} loss`);
  });

  test('without trainBn batch norm stays frozen: no statistics or affine parameters change', async () => {
    const infos: string[] = [];
    const r = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...opts, epochs: 2, onInfo: (s) => infos.push(s) });
    assert.equal(infos.length, 0, `no info: ${infos.join(' | ')}`);
    for (const name of ['bn_mean', 'bn_var', 'bn_scale', 'bn_bias']) assert.ok(!(name in r.weights), `${name} not in the weights`);
    const exported = parseOnnx(replaceInitializers(m, r.weights), 'exported.onnx');
    for (const name of ['bn_mean', 'bn_var']) {
      const t = exported.proto.graph!.initializer!.find((i) => i.name === name)!;
      const vals = t.floatData?.length ? Float32Array.from(t.floatData) : new Float32Array(new Uint8Array(t.rawData!).buffer);
      assert.ok(maxAbs(vals, orig(name)) === 0, `${name} unchanged in the exported model`);
    }
  });

  test('folded batch norm (Mul/Add): trainBn says only scale and shift train', async () => {
    const infos: string[] = [];
    const r = await finetune({ model: buildLoaded(tinyCnn()), featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val: undefined, classes: ['a', 'b'] }, { ...opts, epochs: 1, trainBn: true, onInfo: (s) => infos.push(s) });
    assert.equal(infos.length, 1, `one info line: ${infos.join(' | ')}`);
    assert.match(infos[0]!, /folded.*only its scale and shift train/);
    assert.ok(r.weights.bn_s && r.weights.bn_b, 'folded scale and shift are trained');
  });
});
