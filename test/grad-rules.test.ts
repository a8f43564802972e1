/**
 * Every backward rule against central finite differences of a float64 reference (test/helpers/ref64.ts), on small
 * random graphs: the gradient graph (float32, ONNX Runtime) must agree with the float64 directional derivative along
 * random directions, for every input and weight, and for every formulation of the convolution gradients.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import onnxProto from 'onnx-proto';
import { GradientProgram } from '../src/engine/grad/program.js';
import type { ConvMethods } from '../src/engine/grad/rules/registry.js';
import { OnnxBuilder, type Attr } from '../src/models/importers/onnx-builder.js';
import { mulberry32 } from '../src/util/random.js';
import { eval64, type T64 } from './helpers/ref64.js';

const size = (d: number[]) => d.reduce((a, b) => a * b, 1);

interface Case {
  /** Graph inputs (differentiated) with their shapes. */
  inputs: Record<string, number[]>;
  /** Float initializers: trained (differentiated) unless listed in `constants`. */
  weights?: Record<string, number[]>;
  constants?: string[];
  /** Integer constants (axes, shapes, pads…). */
  ints?: Record<string, number[]>;
  /** Inputs declared with fixed sizes (their first axis is not a batch). */
  fixedInputs?: boolean;
  /** Nodes with several outputs: first output → all outputs. */
  multi?: Record<string, string[]>;
  opset?: number;
  /** Float constants with given values: [dims, values]. */
  fixed?: Record<string, [number[], number[]]>;
  nodes: [op: string, inputs: string[], output: string, attrs?: Record<string, Attr>][];
  output: string;
  outDims: number[];
  /** Range of the random values (default [-1, 1]). */
  range?: [number, number];
}

function build(c: Case, rng: () => number): { bytes: Uint8Array; values: Record<string, Float32Array> } {
  const b = new OnnxBuilder();
  const values: Record<string, Float32Array> = {};
  const [lo, hi] = c.range ?? [-1, 1];
  const rand = (n: number) => Float32Array.from({ length: n }, () => lo + (hi - lo) * rng());
  for (const [name, dims] of Object.entries(c.inputs)) {
    b.input(name, c.fixedInputs ? dims : ['N', ...dims.slice(1)]);
    values[name] = rand(size(dims));
  }
  for (const [name, dims] of Object.entries(c.weights ?? {})) {
    values[name] = rand(size(dims));
    b.floats(name, dims, values[name]!);
  }
  for (const [name, v] of Object.entries(c.ints ?? {})) b.ints(name, v);
  for (const [name, [dims, v]] of Object.entries(c.fixed ?? {})) b.floats(name, dims, Float32Array.from(v));
  for (const [op, ins, out, attrs] of c.nodes) b.node(op, ins, out, attrs ?? {});
  b.output(c.output, c.fixedInputs ? c.outDims : ['N', ...c.outDims.slice(1)]);
  let bytes = b.build({ producer: 'test', graphName: 'case' });
  if (c.multi || c.opset) {
    const m = onnxProto.onnx.ModelProto.decode(bytes);
    for (const n of m.graph!.node!) if (c.multi?.[n.output![0]!]) n.output = c.multi[n.output![0]!]!;
    if (c.opset) m.opsetImport = [{ domain: '', version: c.opset }];
    bytes = onnxProto.onnx.ModelProto.encode(m).finish();
  }
  return { bytes, values };
}

const to64 = (dims: number[], v: Float32Array | Float64Array): T64 => ({ dims, data: Float64Array.from(v) });

/**
 * Gradients of L = Σ w·output with respect to every input and trained weight: ONNX Runtime's gradient graph vs the
 * float64 central difference along 3 random directions per tensor.
 */
async function check(label: string, c: Case, conv: Partial<ConvMethods> = {}, seed = 1): Promise<void> {
  const rng = mulberry32(seed);
  const { bytes, values } = build(c, rng);
  const batch = Object.values(c.inputs)[0]![0]!;
  const params = Object.keys(c.weights ?? {}).filter((w) => !(c.constants ?? []).includes(w));
  const wrt = [...Object.keys(c.inputs), ...params];
  const prog = await GradientProgram.create(bytes, { batch, params, wrt, loss: [{ kind: 'dot', output: c.output, weights: 'lw' }], conv }, { threads: 1 });
  try {
    const lw = Float32Array.from({ length: size(c.outDims) }, () => rng() * 2 - 1);
    const feeds: Record<string, Float32Array> = { lw };
    for (const k of wrt) feeds[k] = values[k]!;
    const r = await prog.run(feeds);
    const dims: Record<string, number[]> = { ...c.inputs, ...c.weights };
    const loss64 = (over: Record<string, Float64Array>): number => {
      const f: Record<string, T64> = {};
      for (const k of wrt) f[k] = to64(dims[k]!, over[k] ?? values[k]!);
      const y = eval64(bytes, f, [c.output])[c.output]!;
      assert.deepEqual(y.dims, c.outDims, `${label}: reference output shape`);
      let s = 0;
      for (let i = 0; i < y.data.length; i++) s += y.data[i]! * lw[i]!;
      return s;
    };
    const l0 = loss64({});
    assert.ok(Math.abs(r.loss - l0) <= 1e-4 * (1 + Math.abs(l0)), `${label}: loss ${r.loss} vs float64 ${l0}`);
    const h = 1e-6;
    for (const k of wrt) {
      const g = r.grads[k]!;
      for (let d = 0; d < 3; d++) {
        const v = Float64Array.from({ length: g.length }, () => rng() * 2 - 1);
        const plus = Float64Array.from(values[k]!, (x, i) => x + h * v[i]!);
        const minus = Float64Array.from(values[k]!, (x, i) => x - h * v[i]!);
        const fd = (loss64({ [k]: plus }) - loss64({ [k]: minus })) / (2 * h);
        let an = 0;
        let scale = 0;
        for (let i = 0; i < g.length; i++) {
          an += g[i]! * v[i]!;
          scale += Math.abs(g[i]! * v[i]!);
        }
        assert.ok(Math.abs(an - fd) <= 1e-4 * scale + 1e-5, `${label}: d/d${k} along direction ${d}: gradient ${an}, finite difference ${fd}`);
      }
    }
  } finally {
    await prog.release();
  }
}

/** One conv node on x [N, C, H, W] with weight W [M, C/g, kh, kw] and optional bias. */
function convCase(x: number[], w: number[], out: number[], attrs: Record<string, Attr>, bias = true, act?: [string, Record<string, Attr>?]): Case {
  const nodes: Case['nodes'] = [['Conv', ['x', 'W', ...(bias ? ['B'] : [])], act ? 'z' : 'y', attrs]];
  if (act) nodes.push([act[0], ['z'], 'y', act[1] ?? {}]);
  return { inputs: { x }, weights: { W: w, ...(bias ? { B: [w[0]!] } : {}) }, nodes, output: 'y', outDims: out };
}

const ALL_CONV: Partial<ConvMethods>[] = [
  { inputGrad: 'conv', depthwiseFilterGrad: 'grouped-conv', denseFilterGrad: 'conv', pointwiseFilterGrad: 'matmul' },
  { inputGrad: 'conv-transpose', depthwiseFilterGrad: 'unfold', pointwiseFilterGrad: 'conv' },
  { inputGrad: 'auto', depthwiseFilterGrad: 'taps' },
  { inputGrad: 'auto', depthwiseFilterGrad: 'shifted-matmul', denseFilterGrad: 'unfold' },
];

describe('convolution rules (every formulation) vs float64 finite differences', () => {
  const cases: [string, Case][] = [
    ['3x3 pad 1', convCase([2, 3, 6, 6], [4, 3, 3, 3], [2, 4, 6, 6], { pads: [1, 1, 1, 1] })],
    ['3x3 stride 2, TF-style pads', convCase([2, 3, 7, 7], [4, 3, 3, 3], [2, 4, 4, 4], { strides: [2, 2], pads: [1, 1, 1, 1] })],
    ['3x3 stride 2, asymmetric pads', convCase([1, 2, 8, 8], [3, 2, 3, 3], [1, 3, 4, 4], { strides: [2, 2], pads: [0, 0, 1, 1] })],
    ['3x3 dilation 2', convCase([1, 2, 7, 7], [3, 2, 3, 3], [1, 3, 5, 5], { dilations: [2, 2], pads: [1, 1, 1, 1] })],
    ['5x3 kernel, stride (2,1), no pads', convCase([1, 2, 9, 6], [2, 2, 5, 3], [1, 2, 3, 4], { strides: [2, 1] })],
    ['grouped (g=2)', convCase([1, 4, 5, 5], [6, 2, 3, 3], [1, 6, 5, 5], { group: 2, pads: [1, 1, 1, 1] })],
    ['depthwise stride 1', convCase([2, 4, 6, 6], [4, 1, 3, 3], [2, 4, 6, 6], { group: 4, pads: [1, 1, 1, 1] })],
    ['depthwise 3x3 dilation 2, pads 2', convCase([2, 3, 7, 6], [3, 1, 3, 3], [2, 3, 7, 6], { group: 3, dilations: [2, 2], pads: [2, 2, 2, 2] })],
    ['depthwise 3x2 kernel, asymmetric pads', convCase([2, 3, 6, 5], [3, 1, 3, 2], [2, 3, 5, 5], { group: 3, pads: [0, 1, 1, 0] })],
    ['depthwise stride 2', convCase([2, 4, 7, 7], [4, 1, 3, 3], [2, 4, 3, 3], { group: 4, strides: [2, 2] })],
    ['depthwise, channel multiplier 2', convCase([1, 3, 5, 5], [6, 1, 3, 3], [1, 6, 5, 5], { group: 3, pads: [1, 1, 1, 1] })],
    ['1x1 pointwise', convCase([2, 5, 4, 4], [3, 5, 1, 1], [2, 3, 4, 4], {}, false)],
    ['1x1 pointwise, more channels than positions', convCase([3, 6, 2, 2], [5, 6, 1, 1], [3, 5, 2, 2], {})],
    ['auto_pad SAME_UPPER stride 2', convCase([1, 2, 6, 6], [3, 2, 3, 3], [1, 3, 3, 3], { auto_pad: 'SAME_UPPER', strides: [2, 2] })],
    ['auto_pad SAME_LOWER', convCase([1, 2, 5, 5], [2, 2, 2, 2], [1, 2, 5, 5], { auto_pad: 'SAME_LOWER' })],
  ];
  for (const [name, c] of cases) {
    test(name, async () => {
      for (const conv of ALL_CONV) await check(`${name} ${JSON.stringify(conv)}`, c, conv);
    });
  }
});

describe('activation, arithmetic, linear and layout rules vs float64 finite differences', () => {
  const act = (op: string, attrs: Record<string, Attr> = {}, range?: [number, number]): Case => ({
    inputs: { x: [2, 3, 4] },
    nodes: [[op, ['x'], 'y', attrs]],
    output: 'y',
    outDims: [2, 3, 4],
    range,
  });
  const cases: [string, Case][] = [
    ['Relu', act('Relu')],
    ['LeakyRelu', act('LeakyRelu', { alpha: { f: 0.1 } })],
    ['Sigmoid', act('Sigmoid')],
    ['Tanh', act('Tanh')],
    ['HardSigmoid', act('HardSigmoid', { alpha: { f: 0.5 } }, [-3, 3])],
    ['HardSwish', { ...act('HardSwish', {}, [-5, 5]), opset: 14 }],
    ['Sqrt', act('Sqrt', {}, [0.5, 2])],
    ['Softmax', act('Softmax', { axis: 1 })],
    ['LogSoftmax', act('LogSoftmax', { axis: -1 })],
    ['Clip (constant bounds)', { inputs: { x: [2, 6] }, fixed: { lo: [[], [-0.5]], hi: [[], [0.8]] }, nodes: [['Clip', ['x', 'lo', 'hi'], 'y']], output: 'y', outDims: [2, 6], range: [-2, 2] }],
    ['Add/Sub/Mul/Div with broadcasting', {
      inputs: { a: [2, 3, 4] },
      weights: { b: [3, 1], c: [4], d: [1, 3, 1] },
      nodes: [['Add', ['a', 'b'], 's'], ['Mul', ['s', 'c'], 'm'], ['Sub', ['m', 'd'], 'u'], ['Sigmoid', ['d'], 'sd'], ['Add', ['sd', 'sd'], 'q'], ['Div', ['u', 'q'], 'y']],
      output: 'y',
      outDims: [2, 3, 4],
    }],
    ['fan-out summed: x·x + x', { inputs: { x: [2, 5] }, nodes: [['Mul', ['x', 'x'], 'sq'], ['Add', ['sq', 'x'], 'y']], output: 'y', outDims: [2, 5] }],
    ['Gemm transB, alpha, beta, broadcast C', { inputs: { a: [3, 4] }, weights: { B: [5, 4], C: [5] }, nodes: [['Gemm', ['a', 'B', 'C'], 'y', { transB: 1, alpha: { f: 0.7 }, beta: { f: 1.3 } }]], output: 'y', outDims: [3, 5] }],
    ['Gemm transA', { inputs: { a: [4, 3] }, fixedInputs: true, weights: { B: [4, 2] }, nodes: [['Gemm', ['a', 'B'], 'y', { transA: 1 }]], output: 'y', outDims: [3, 2] }],
    ['MatMul, batched with a broadcast weight', { inputs: { a: [2, 3, 4] }, weights: { B: [4, 5] }, nodes: [['MatMul', ['a', 'B'], 'y']], output: 'y', outDims: [2, 3, 5] }],
    ['BatchNormalization (inference)', {
      inputs: { x: [2, 3, 4, 4] },
      weights: { s: [3], b: [3], m: [3], v: [3] },
      constants: ['m', 'v'],
      nodes: [['Sigmoid', ['v'], 'vp'], ['BatchNormalization', ['x', 's', 'b', 'm', 'vp'], 'y', { epsilon: { f: 1e-3 } }]],
      output: 'y',
      outDims: [2, 3, 4, 4],
    }],
    ['GlobalAveragePool', { inputs: { x: [2, 3, 4, 5] }, nodes: [['GlobalAveragePool', ['x'], 'y']], output: 'y', outDims: [2, 3, 1, 1] }],
    ['GlobalMaxPool', { inputs: { x: [2, 3, 4, 5] }, nodes: [['GlobalMaxPool', ['x'], 'y']], output: 'y', outDims: [2, 3, 1, 1] }],
    ['AveragePool, pads, count_include_pad 0', { inputs: { x: [1, 2, 5, 5] }, nodes: [['AveragePool', ['x'], 'y', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }]], output: 'y', outDims: [1, 2, 3, 3] }],
    ['AveragePool, count_include_pad 1', { inputs: { x: [1, 2, 5, 5] }, nodes: [['AveragePool', ['x'], 'y', { kernel_shape: [3, 3], pads: [1, 1, 1, 1], count_include_pad: 1 }]], output: 'y', outDims: [1, 2, 5, 5] }],
    ['MaxPool 3x3 stride 2 pad 1 (overlapping windows)', { inputs: { x: [2, 2, 7, 7] }, nodes: [['MaxPool', ['x'], 'y', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }]], output: 'y', outDims: [2, 2, 4, 4] }],
    ['Pad (constant), Slice, Concat', {
      inputs: { x: [2, 3, 4, 4] },
      ints: { pads: [0, 0, 1, 2, 0, 0, 2, 0], st: [1, 0], en: [5, 3], ax: [2, 3] },
      nodes: [['Pad', ['x', 'pads'], 'p'], ['Slice', ['p', 'st', 'en', 'ax'], 's'], ['Relu', ['s'], 's2'], ['Concat', ['s', 's2'], 'y', { axis: 1 }]],
      output: 'y',
      outDims: [2, 6, 4, 3],
    }],
    ['Reshape, Transpose, Flatten, Squeeze, Unsqueeze', {
      inputs: { x: [2, 3, 4] },
      ints: { shape: [0, 4, 3], ax1: [1] },
      nodes: [['Reshape', ['x', 'shape'], 'r'], ['Transpose', ['r'], 't', { perm: [0, 2, 1] }], ['Unsqueeze', ['t', 'ax1'], 'u'], ['Squeeze', ['u', 'ax1'], 'q'], ['Flatten', ['q'], 'y', { axis: 1 }]],
      output: 'y',
      outDims: [2, 12],
    }],
    ['Split (one output unused)', {
      inputs: { x: [2, 5] },
      ints: { sp: [2, 1, 2] },
      nodes: [['Split', ['x', 'sp'], 'a', { axis: 1 }], ['Mul', ['a', 'c'], 'ac'], ['Add', ['ac', 'a'], 'y']],
      multi: { a: ['a', 'b', 'c'] },
      output: 'y',
      outDims: [2, 2],
    }],
    ['ReduceMean, ReduceSum', {
      inputs: { x: [2, 3, 4] },
      ints: { ax: [2] },
      nodes: [['ReduceMean', ['x'], 'm', { axes: [1], keepdims: 1 }], ['Mul', ['x', 'm'], 'p'], ['ReduceSum', ['p', 'ax'], 'y', { keepdims: 0 }]],
      output: 'y',
      outDims: [2, 3],
    }],
  ];
  for (const [name, c] of cases) test(name, () => check(name, c));
  // A 4-D Relu, both masks: the comparison, and the NCHWc-friendly min(1, 2^126·y) as 1x1 Convs and a Relu.
  const relu4: Case = { inputs: { x: [2, 3, 4, 4] }, nodes: [['Relu', ['x'], 'y']], output: 'y', outDims: [2, 3, 4, 4] };
  for (const reluMask of ['cast', 'conv'] as const) test(`Relu 4-D, ${reluMask} mask`, () => check(`Relu 4-D ${reluMask}`, relu4, { reluMask }));
});

test('cross-entropy loss and its gradient (soft targets) vs float64', async () => {
  const rng = mulberry32(3);
  const b = new OnnxBuilder();
  b.input('x', ['N', 4]);
  const W = Float32Array.from({ length: 20 }, () => rng() - 0.5);
  b.floats('W', [5, 4], W);
  b.node('Gemm', ['x', 'W'], 'logits', { transB: 1 });
  b.output('logits', ['N', 5]);
  const bytes = b.build({ producer: 'test', graphName: 'ce' });
  const prog = await GradientProgram.create(bytes, { batch: 3, wrt: ['x'], loss: [{ kind: 'cross-entropy', logits: 'logits', targets: 't' }] });
  const x = Float32Array.from({ length: 12 }, () => rng() * 2 - 1);
  const t = Float32Array.from({ length: 15 }, () => rng() / 5);
  const r = await prog.run({ x, t });
  await prog.release();
  const loss64 = (xv: Float64Array) => {
    const z = eval64(bytes, { x: { dims: [3, 4], data: xv } }, ['logits']).logits!.data;
    let l = 0;
    for (let i = 0; i < 3; i++) {
      const row = Array.from(z.subarray(i * 5, i * 5 + 5));
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
      for (let k = 0; k < 5; k++) l -= t[i * 5 + k]! * (row[k]! - lse);
    }
    return l;
  };
  const x64 = Float64Array.from(x);
  assert.ok(Math.abs(r.loss - loss64(x64)) < 1e-5);
  for (let i = 0; i < 12; i++) {
    const p = x64.slice();
    const m = x64.slice();
    p[i]! += 1e-6;
    m[i]! -= 1e-6;
    const fd = (loss64(p) - loss64(m)) / 2e-6;
    assert.ok(Math.abs(r.grads.x![i]! - fd) < 1e-5, `d/dx[${i}]: ${r.grads.x![i]} vs ${fd}`);
  }
});

test('QuantizeLinear → DequantizeLinear passes the gradient straight through', async () => {
  const b = new OnnxBuilder();
  b.input('x', ['N', 6]);
  b.floats('scale', [], Float32Array.of(0.05));
  b.raw('zp', 2, [], Uint8Array.of(128));
  b.node('QuantizeLinear', ['x', 'scale', 'zp'], 'q');
  b.node('DequantizeLinear', ['q', 'scale', 'zp'], 'dq');
  b.node('Mul', ['dq', 'dq'], 'y');
  b.output('y', ['N', 6]);
  const prog = await GradientProgram.create(b.build({ producer: 'test', graphName: 'qdq' }), { batch: 1, wrt: ['x'], loss: [{ kind: 'dot', output: 'y', weights: 'w' }], outputs: ['dq'] });
  const x = Float32Array.of(-1, -0.3, 0, 0.21, 0.5, 1.1);
  const w = Float32Array.of(1, 2, 3, 4, 5, 6);
  const r = await prog.run({ x, w });
  await prog.release();
  const dq = r.outputs.dq!.data;
  // y = dq², d/dx = 2·dq·w (the quantiser itself counts as the identity)
  for (let i = 0; i < 6; i++) assert.ok(Math.abs(r.grads.x![i]! - 2 * dq[i]! * w[i]!) < 1e-6, `element ${i}`);
});

test('only what is asked for: no weight gradients for an input gradient, and an operator without a rule is named', async () => {
  const c = convCase([1, 3, 6, 6], [4, 3, 3, 3], [1, 4, 6, 6], { pads: [1, 1, 1, 1] }, true, ['Relu']);
  const { bytes } = build(c, mulberry32(5));
  const nodes = async (wrt: string[], params: string[]) => {
    const p = await GradientProgram.create(bytes, { batch: 1, params, wrt, loss: [{ kind: 'dot', output: 'y', weights: 'w' }] });
    const n = onnxProto.onnx.ModelProto.decode(p.graph.bytes).graph!.node!.length;
    await p.release();
    return n;
  };
  const inputOnly = await nodes(['x'], []);
  const weightsOnly = await nodes(['W', 'B'], ['W', 'B']);
  const both = await nodes(['x', 'W', 'B'], ['W', 'B']);
  assert.ok(inputOnly < both && weightsOnly < both, `nodes: input ${inputOnly}, weights ${weightsOnly}, both ${both}`);

  const b = new OnnxBuilder();
  b.input('x', ['N', 4]);
  b.node('Cos', ['x'], 'c', {}, 'my_cos');
  b.node('Relu', ['c'], 'y');
  b.output('y', ['N', 4]);
  await assert.rejects(
    GradientProgram.create(b.build({ producer: 'test', graphName: 'nocos' }), { batch: 1, wrt: ['x'], loss: [{ kind: 'dot', output: 'y', weights: 'w' }] }),
    /node 'my_cos': operator Cos has no gradient rule/,
  );
});

test('BatchNormalization in training mode (batch statistics) vs float64 finite differences of the same formula', async () => {
  const rng = mulberry32(9);
  const dims = [3, 2, 3, 3];
  const x = Float32Array.from({ length: size(dims) }, () => rng() * 2 - 1);
  const scale = Float32Array.of(1.3, 0.7);
  const bias = Float32Array.of(0.1, -0.2);
  const eps = 1e-3;
  const bn = new OnnxBuilder();
  bn.input('x', ['N', 2, 3, 3]);
  bn.floats('s', [2], scale);
  bn.floats('b', [2], bias);
  bn.floats('m', [2], Float32Array.of(5, -5)); // running statistics: must not be used in training mode
  bn.floats('v', [2], Float32Array.of(9, 9));
  bn.node('BatchNormalization', ['x', 's', 'b', 'm', 'v'], 'y', { epsilon: { f: eps } });
  bn.output('y', ['N', 2, 3, 3]);
  const prog = await GradientProgram.create(bn.build({ producer: 'test', graphName: 'bn' }), {
    batch: 3, params: ['s', 'b'], wrt: ['x', 's', 'b'], bnTraining: ['m'], loss: [{ kind: 'dot', output: 'y', weights: 'w' }],
  });
  const w = Float32Array.from({ length: size(dims) }, () => rng() * 2 - 1);
  const r = await prog.run({ x, w, s: scale, b: bias });
  // Batch mean and unbiased variance come out for the running update.
  const stats = prog.fwd.bnStats[0]!;
  const bm = r.outputs[stats.batchMean]!.data;
  await prog.release();
  const loss64 = (xv: Float64Array, sv: Float64Array, bv: Float64Array) => {
    let l = 0;
    for (let c = 0; c < 2; c++) {
      const vals: number[] = [];
      for (let n = 0; n < 3; n++) for (let i = 0; i < 9; i++) vals.push(xv[(n * 2 + c) * 9 + i]!);
      const mu = vals.reduce((a, b) => a + b, 0) / vals.length;
      const va = vals.reduce((a, b) => a + (b - mu) ** 2, 0) / vals.length;
      for (let n = 0; n < 3; n++) for (let i = 0; i < 9; i++) {
        const k = (n * 2 + c) * 9 + i;
        l += w[k]! * ((sv[c]! * (xv[k]! - mu)) / Math.sqrt(va + eps) + bv[c]!);
      }
    }
    return l;
  };
  const X = Float64Array.from(x);
  const S = Float64Array.from(scale);
  const B = Float64Array.from(bias);
  assert.ok(Math.abs(r.loss - loss64(X, S, B)) < 1e-4);
  const h = 1e-6;
  const fdCheck = (name: string, base: Float64Array, g: Float32Array, f: (v: Float64Array) => number) => {
    for (let i = 0; i < base.length; i++) {
      const p = base.slice();
      const m = base.slice();
      p[i]! += h;
      m[i]! -= h;
      const fd = (f(p) - f(m)) / (2 * h);
      assert.ok(Math.abs(g[i]! - fd) < 1e-4 * (1 + Math.abs(fd)), `d/d${name}[${i}]: ${g[i]} vs ${fd}`);
    }
  };
  fdCheck('x', X, r.grads.x!, (v) => loss64(v, S, B));
  fdCheck('scale', S, r.grads.s!, (v) => loss64(X, v, B));
  fdCheck('bias', B, r.grads.b!, (v) => loss64(X, S, v));
  for (let c = 0; c < 2; c++) {
    let mu = 0;
    for (let n = 0; n < 3; n++) for (let i = 0; i < 9; i++) mu += x[(n * 2 + c) * 9 + i]! / 27;
    assert.ok(Math.abs(bm[c]! - mu) < 1e-6, `batch mean of channel ${c}`);
  }
});

test('a trained Conv followed by a frozen per-channel Mul + Add (folded batch norm) scales its weights: same gradients', async () => {
  const c: Case = {
    inputs: { x: [2, 3, 6, 6] },
    weights: { W: [4, 3, 3, 3] },
    fixed: {
      B: [[4], [0.1, -0.2, 0.3, 0]],
      s: [[1, 4, 1, 1], [1.5, 0.5, -0.7, 2]],
      t: [[1, 4, 1, 1], [0.2, -0.1, 0.4, 0.3]],
      lo: [[], [0]],
      hi: [[], [1]],
    },
    nodes: [
      ['Conv', ['x', 'W', 'B'], 'z', { pads: [1, 1, 1, 1] }],
      ['Mul', ['z', 's'], 'zs'],
      ['Add', ['zs', 't'], 'zb'],
      ['Clip', ['zb', 'lo', 'hi'], 'y'],
    ],
    output: 'y',
    outDims: [2, 4, 6, 6],
  };
  // Gradients of the rewritten graph equal float64 finite differences of the original one...
  await check('conv + frozen affine + clip', c);
  // ...and the rewrite took place: the affine is gone from the activations (only the weight scaling remains).
  const { bytes } = build(c, mulberry32(1));
  const prog = await GradientProgram.create(bytes, { batch: 2, params: ['W'], wrt: ['W'], loss: [{ kind: 'dot', output: 'y', weights: 'lw' }] }, { threads: 1 });
  try {
    assert.deepEqual(prog.fwd.nodes.map((n) => n.opType), ['Mul', 'Conv', 'Clip']);
    assert.deepEqual(prog.fwd.dims.get(prog.fwd.nodes[0]!.outputs[0]!), [4, 3, 3, 3]);
  } finally {
    await prog.release();
  }
});
