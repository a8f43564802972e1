/**
 * Kernels graft registers for the TF.js wasm backend (test/helpers/tf/wasm-kernels.ts), each checked against the cpu
 * backend's own kernel on the same inputs, over the geometries convolutions and pools meet.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { COMPOSED_WASM_KERNELS, DELEGATED_WASM_KERNELS, tf, setBackend } from './helpers/tf/index.js';
import { REPLACED_BY_CPU } from './helpers/tf/wasm-kernels.js';
import { gaussian, mulberry32 } from '../src/util/random.js';

type Pad = 'same' | 'valid' | number[][];
type Spec = { name: string; inputs: Record<string, { shape: number[]; dtype?: 'float32' | 'int32'; values?: number[] }>; attrs: Record<string, unknown>; array?: boolean };

function values(shape: number[], seed: number): number[] {
  const rng = mulberry32(seed);
  return Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => gaussian(rng));
}

/** Run kernel `name` on backend `be` with the spec's inputs; returns its output values and shape. */
async function runOn(be: 'cpu' | 'wasm', name: string, spec: Spec): Promise<{ data: Float32Array; shape: number[] }> {
  await setBackend(be);
  return tf.tidy(() => {
    const inputs: Record<string, tf.Tensor> = {};
    let seed = 1;
    for (const [k, v] of Object.entries(spec.inputs)) inputs[k] = tf.tensor(v.values ?? values(v.shape, seed++), v.shape, v.dtype ?? 'float32');
    const ins = spec.array ? Object.values(inputs) : inputs;
    const out = tf.engine().runKernel(name, ins as never, spec.attrs as never) as tf.Tensor;
    return { data: Float32Array.from(out.dataSync()), shape: out.shape };
  });
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'same size');
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

function scaleOf(a: ArrayLike<number>): number {
  let s = 1;
  for (let i = 0; i < a.length; i++) s = Math.max(s, Math.abs(a[i]!));
  return s;
}

async function compare(name: string, spec: Spec): Promise<void> {
  const c = await runOn('cpu', name, spec);
  const w = await runOn('wasm', name, spec);
  assert.deepEqual(w.shape, c.shape, `${spec.name}: shape`);
  let d = 0;
  let scale = 1;
  for (let i = 0; i < c.data.length; i++) {
    d = Math.max(d, Math.abs(c.data[i]! - w.data[i]!));
    scale = Math.max(scale, Math.abs(c.data[i]!));
  }
  assert.ok(d <= 1e-4 * scale, `${name} ${spec.name}: wasm differs from cpu by ${d} (scale ${scale})`);
}

function convInfo(x: number[], f: number[], strides: number, pad: Pad, dil: number, depthwise: boolean) {
  return tf.backend_util.computeConv2DInfo(x as [number, number, number, number], f as [number, number, number, number], strides, dil, pad as 'same', undefined, depthwise, 'channelsLast');
}

interface Geo { x: number[]; f: number[]; s: number; pad: Pad; dil?: number }
const CONV: Geo[] = [
  { x: [1, 7, 7, 3], f: [3, 3, 3, 4], s: 1, pad: 'same' },
  { x: [2, 8, 8, 3], f: [3, 3, 3, 5], s: 2, pad: 'same' },
  { x: [1, 9, 9, 2], f: [3, 3, 2, 2], s: 2, pad: 'valid' },
  { x: [1, 8, 9, 4], f: [1, 1, 4, 6], s: 1, pad: 'valid' },
  { x: [2, 8, 8, 4], f: [1, 1, 4, 3], s: 2, pad: 'valid' },
  { x: [1, 10, 11, 2], f: [5, 5, 2, 3], s: 3, pad: [[0, 0], [2, 1], [0, 2], [0, 0]] },
  { x: [1, 6, 6, 2], f: [3, 3, 2, 2], s: 1, pad: [[0, 0], [0, 1], [1, 0], [0, 0]] },
  { x: [1, 12, 12, 3], f: [4, 4, 3, 2], s: 2, pad: 'same' },
];
const DEPTHWISE: Geo[] = [
  { x: [1, 7, 7, 3], f: [3, 3, 3, 1], s: 1, pad: 'same' },
  { x: [2, 9, 9, 4], f: [3, 3, 4, 1], s: 2, pad: 'same' },
  { x: [1, 8, 8, 2], f: [3, 3, 2, 2], s: 2, pad: 'valid' },
  { x: [1, 10, 10, 3], f: [5, 5, 3, 1], s: 1, pad: [[0, 0], [2, 2], [1, 3], [0, 0]] },
  { x: [1, 11, 11, 2], f: [3, 3, 2, 3], s: 1, pad: 'same', dil: 2 },
  { x: [2, 9, 8, 2], f: [3, 3, 2, 1], s: 1, pad: 'valid', dil: 3 },
  // Channels a multiple of 4, multiplier 1: the filter gradient takes the SIMD path (simd.ts).
  { x: [2, 10, 9, 8], f: [3, 3, 8, 1], s: 1, pad: 'same' },
  { x: [2, 11, 12, 12], f: [5, 5, 12, 1], s: 2, pad: [[0, 0], [2, 1], [0, 3], [0, 0]] },
  { x: [1, 9, 9, 8], f: [3, 3, 8, 1], s: 3, pad: [[0, 0], [3, 3], [3, 3], [0, 0]] },
  { x: [3, 7, 6, 4], f: [1, 1, 4, 1], s: 2, pad: 'valid' },
  { x: [2, 9, 9, 4], f: [3, 3, 4, 1], s: 1, pad: 'valid', dil: 2 },
  { x: [1, 10, 10, 16], f: [3, 3, 16, 1], s: 2, pad: 'same', dil: 2 },
];

const label = (g: Geo) => `x[${g.x}] f[${g.f}] s${g.s} ${typeof g.pad === 'string' ? g.pad : JSON.stringify(g.pad)}${g.dil ? ` d${g.dil}` : ''}`;

describe('wasm kernels graft registers, against cpu', () => {
  test('every kernel cpu has is now available on wasm (except complex/string/canvas ones)', async () => {
    await setBackend('wasm');
    const wasm = new Set(tf.getKernelsForBackend('wasm').map((k) => k.kernelName));
    const irrelevant = new Set(['Complex', 'ComplexAbs', 'FFT', 'IFFT', 'Real', 'Imag', 'StaticRegexReplace', 'Draw']);
    const missing = tf.getKernelsForBackend('cpu').map((k) => k.kernelName).filter((k) => !wasm.has(k) && !irrelevant.has(k));
    assert.deepEqual(missing, []);
    for (const k of ['Conv2DBackpropFilter', 'DepthwiseConv2dNativeBackpropInput', 'DepthwiseConv2dNativeBackpropFilter', 'Conv2DBackpropInput']) {
      assert.ok(k in COMPOSED_WASM_KERNELS, `${k} is composed from wasm kernels`);
    }
    for (const k of ['UnsortedSegmentSum', 'Einsum', 'MaxPoolGrad']) assert.ok(DELEGATED_WASM_KERNELS.includes(k), `${k} delegates to cpu`);
    assert.deepEqual(REPLACED_BY_CPU, ['MaxPoolGrad']);
  });

  test('Identity (tf.clone) shares data on wasm: equal values, each tensor outlives the other', async () => {
    await setBackend('wasm');
    const a = tf.tensor([1, 2, 3, 4], [2, 2]);
    const b = tf.clone(a);
    assert.deepEqual(Array.from(b.dataSync()), [1, 2, 3, 4], 'clone has the values');
    a.dispose();
    assert.deepEqual(Array.from(b.dataSync()), [1, 2, 3, 4], 'clone survives the original');
    const c = tf.clone(b);
    b.dispose();
    assert.deepEqual(Array.from(tf.add(c, 1).dataSync()), [2, 3, 4, 5], 'clone of a clone computes');
    c.dispose();
  });

  for (const g of CONV) {
    test(`Conv2DBackpropInput and Conv2DBackpropFilter ${label(g)}`, async () => {
      const info = convInfo(g.x, g.f, g.s, g.pad, 1, false);
      const dy = [g.x[0]!, info.outHeight, info.outWidth, g.f[3]!];
      const common = { strides: g.s, pad: g.pad, dataFormat: 'NHWC', dimRoundingMode: undefined };
      await compare('Conv2DBackpropInput', { name: label(g), inputs: { dy: { shape: dy }, filter: { shape: g.f } }, attrs: { ...common, inputShape: g.x } });
      await compare('Conv2DBackpropFilter', { name: label(g), inputs: { x: { shape: g.x }, dy: { shape: dy } }, attrs: { ...common, filterShape: g.f } });
    });
  }

  for (const g of DEPTHWISE) {
    test(`DepthwiseConv2dNativeBackpropInput and ...Filter ${label(g)}`, async () => {
      const d = g.dil ?? 1;
      const info = convInfo(g.x, g.f, g.s, g.pad, d, true);
      const dy = [g.x[0]!, info.outHeight, info.outWidth, g.f[2]! * g.f[3]!];
      const common = { strides: g.s, pad: g.pad, dilations: d, dimRoundingMode: undefined };
      const inSpec: Spec = { name: label(g), inputs: { dy: { shape: dy }, filter: { shape: g.f } }, attrs: { ...common, inputShape: g.x } };
      const fSpec: Spec = { name: label(g), inputs: { x: { shape: g.x }, dy: { shape: dy } }, attrs: { ...common, filterShape: g.f } };
      if (d === 1) {
        await compare('DepthwiseConv2dNativeBackpropInput', inSpec);
        await compare('DepthwiseConv2dNativeBackpropFilter', fSpec);
        return;
      }
      // The cpu kernels ignore dilations: the reference is the cpu kernel on the equivalent zero-dilated filter.
      const [kh, kw, c, m] = g.f as [number, number, number, number];
      const ekh = (kh - 1) * d + 1;
      const ekw = (kw - 1) * d + 1;
      const fv = values(g.f, 2);
      const dil = new Array<number>(ekh * ekw * c * m).fill(0);
      for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) for (let q = 0; q < c * m; q++) dil[((a * d) * ekw + b * d) * c * m + q] = fv[(a * kw + b) * c * m + q]!;
      const dyv = values(dy, 1);
      const w = await runOn('wasm', 'DepthwiseConv2dNativeBackpropInput', { ...inSpec, inputs: { dy: { shape: dy, values: dyv }, filter: { shape: g.f, values: fv } } });
      const r = await runOn('cpu', 'DepthwiseConv2dNativeBackpropInput', { ...inSpec, inputs: { dy: { shape: dy, values: dyv }, filter: { shape: [ekh, ekw, c, m], values: dil } }, attrs: { ...inSpec.attrs, dilations: 1 } });
      assert.ok(maxDiff(w.data, r.data) <= 1e-4 * scaleOf(r.data), `input gradient, dilation ${d}: ${maxDiff(w.data, r.data)}`);
      const xv = values(g.x, 3);
      const wf = await runOn('wasm', 'DepthwiseConv2dNativeBackpropFilter', { ...fSpec, inputs: { x: { shape: g.x, values: xv }, dy: { shape: dy, values: dyv } } });
      const rf = await runOn('cpu', 'DepthwiseConv2dNativeBackpropFilter', { ...fSpec, inputs: { x: { shape: g.x, values: xv }, dy: { shape: dy, values: dyv } }, attrs: { ...fSpec.attrs, dilations: 1, filterShape: [ekh, ekw, c, m] } });
      const taps: number[] = [];
      for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) for (let q = 0; q < c * m; q++) taps.push(rf.data[((a * d) * ekw + b * d) * c * m + q]!);
      assert.ok(maxDiff(wf.data, taps) <= 1e-4 * scaleOf(taps), `filter gradient, dilation ${d}: ${maxDiff(wf.data, taps)}`);
    });
  }

  test('UnsortedSegmentSum (gradient of Gather)', async () => {
    await compare('UnsortedSegmentSum', {
      name: 'rows',
      inputs: { x: { shape: [5, 3] }, segmentIds: { shape: [5], dtype: 'int32', values: [2, 0, 2, 3, 0] } },
      attrs: { numSegments: 4 },
    });
  });

  test('Einsum', async () => {
    await compare('Einsum', { name: 'matmul', inputs: { 0: { shape: [3, 4] }, 1: { shape: [4, 2] } }, attrs: { equation: 'ij,jk->ik' }, array: true });
  });

  for (const [k, s, pad, shape] of [
    [3, 2, 'same', [1, 5, 5, 2]],
    [3, 2, 'valid', [2, 7, 7, 3]],
    [2, 2, 'valid', [1, 6, 6, 1]],
    [3, 1, [[0, 0], [1, 1], [1, 1], [0, 0]], [1, 6, 5, 2]],
  ] as const) {
    test(`MaxPoolGrad and AvgPoolGrad k${k} s${s} ${JSON.stringify(pad)}`, async () => {
      // MaxPoolGrad needs the forward output; computed per backend from the same input.
      for (const be of ['cpu', 'wasm'] as const) await setBackend(be);
      const xs = values([...shape], 3);
      const outFor = async () => {
        await setBackend('cpu');
        return tf.tidy(() => tf.maxPool(tf.tensor4d(xs, [...shape] as [number, number, number, number]), k, s, pad as 'same').dataSync().slice());
      };
      const y = await outFor();
      const info = tf.backend_util.computePool2DInfo([...shape] as [number, number, number, number], k, s, 1, pad as 'same');
      const dyShape = [shape[0], info.outHeight, info.outWidth, shape[3]];
      await compare('MaxPoolGrad', {
        name: 'max',
        inputs: { dy: { shape: dyShape }, input: { shape: [...shape], values: xs }, output: { shape: dyShape, values: Array.from(y) } },
        attrs: { filterSize: k, strides: s, pad, dimRoundingMode: undefined },
      });
      if (typeof pad === 'string') {
        await compare('AvgPoolGrad', { name: 'avg', inputs: { dy: { shape: dyShape }, input: { shape: [...shape] } }, attrs: { filterSize: k, strides: s, pad } });
      }
    });
  }

  test('LRNGrad', async () => {
    await setBackend('cpu');
    const x = values([1, 3, 3, 6], 9);
    const y = tf.tidy(() => tf.localResponseNormalization(tf.tensor4d(x, [1, 3, 3, 6]), 1, 1, 0.01, 0.75).dataSync().slice());
    await compare('LRNGrad', {
      name: 'r1',
      inputs: { x: { shape: [1, 3, 3, 6], values: x }, y: { shape: [1, 3, 3, 6], values: Array.from(y) }, dy: { shape: [1, 3, 3, 6] } },
      attrs: { depthRadius: 1, bias: 1, alpha: 0.01, beta: 0.75 },
    });
  });
});
