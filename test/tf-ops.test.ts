/**
 * The TF.js executor op by op, on small ONNX graphs built here: forward equal to ONNX Runtime, input gradients
 * (and weight gradients where weights are trainable) equal to central finite differences, on the cpu and the wasm
 * backends.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { OrtModel } from '../src/engine/ort.js';
import { TfExecutor, tf, setBackend, type TfBackendName } from './helpers/tf/index.js';
import { buildLoaded, type AttrSpec, type GraphSpec, type NodeSpec } from './helpers/onnx-builder.js';
import { GraftError } from '../src/errors.js';
import { gaussian, mulberry32 } from '../src/util/random.js';

const BACKENDS: TfBackendName[] = ['cpu', 'wasm'];

function randn(n: number, seed: number, scale = 1): number[] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => gaussian(rng) * scale);
}

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

interface Case {
  name: string;
  spec: GraphSpec;
  shape: number[];
  /** Input values (default: standard normal, seeded). */
  input?: number[];
  /** Initializers to train: their gradients are checked too. */
  trainable?: string[];
  /** Skip the ONNX Runtime comparison (op or opset ORT would not take). */
  noOrt?: boolean;
  /** Finite-difference step (default 1e-3) and how many coordinates to check (default 24). */
  eps?: number;
  coords?: number;
}

const i = (v: number): AttrSpec => ({ i: v });
const f = (v: number): AttrSpec => ({ f: v });
const ints = (v: number[]): AttrSpec => ({ ints: v });
const s = (v: string): AttrSpec => ({ s: v });
const node = (op: string, inputs: string[], outputs: string[], attrs?: Record<string, AttrSpec>): NodeSpec => ({ op, inputs, outputs, attrs });
const w = (name: string, dims: number[], seed: number, scale = 0.5) => ({ name, dims, values: randn(size(dims), seed, scale) });
const int64 = (name: string, values: number[]) => ({ name, dims: [values.length], values, dataType: 7 });
const fconst = (name: string, dims: number[], values: number[]) => ({ name, dims, values });

/** A graph with one input x [shape] and one output y. */
function g(shape: (number | string)[], nodes: NodeSpec[], initializers: GraphSpec['initializers'] = [], opset = 13): GraphSpec {
  return { inputs: [{ name: 'x', shape }], outputs: ['y'], initializers, nodes, opset };
}

const CASES: Case[] = [
  {
    name: 'Conv 3x3 pads 1, bias, batch 2',
    shape: [2, 3, 7, 7],
    spec: g([2, 3, 7, 7], [node('Conv', ['x', 'W', 'B'], ['y'], { pads: ints([1, 1, 1, 1]) })], [w('W', [4, 3, 3, 3], 1), w('B', [4], 2)]),
    trainable: ['W', 'B'],
  },
  {
    name: 'Conv stride 2, dilation 2, asymmetric pads',
    shape: [1, 2, 11, 10],
    spec: g([1, 2, 11, 10], [node('Conv', ['x', 'W'], ['y'], { strides: ints([2, 2]), dilations: ints([2, 2]), pads: ints([0, 1, 2, 1]) })], [w('W', [3, 2, 3, 3], 3)]),
    trainable: ['W'],
  },
  {
    name: 'Conv auto_pad SAME_UPPER stride 2',
    shape: [1, 3, 8, 8],
    spec: g([1, 3, 8, 8], [node('Conv', ['x', 'W'], ['y'], { strides: ints([2, 2]), auto_pad: s('SAME_UPPER'), kernel_shape: ints([3, 3]) })], [w('W', [2, 3, 3, 3], 4)]),
  },
  {
    name: 'Conv auto_pad SAME_LOWER 4x4 kernel',
    shape: [1, 2, 7, 7],
    spec: g([1, 2, 7, 7], [node('Conv', ['x', 'W'], ['y'], { strides: ints([2, 2]), auto_pad: s('SAME_LOWER') })], [w('W', [2, 2, 4, 4], 5)]),
  },
  {
    name: 'Conv 1x1 (pointwise) + bias',
    shape: [2, 5, 4, 4],
    spec: g([2, 5, 4, 4], [node('Conv', ['x', 'W', 'B'], ['y'])], [w('W', [6, 5, 1, 1], 6), w('B', [6], 7)]),
    trainable: ['W', 'B'],
  },
  {
    name: 'depthwise Conv stride 2 pads 1',
    shape: [2, 4, 9, 9],
    spec: g([2, 4, 9, 9], [node('Conv', ['x', 'W', 'B'], ['y'], { group: i(4), strides: ints([2, 2]), pads: ints([1, 1, 1, 1]) })], [w('W', [4, 1, 3, 3], 8), w('B', [4], 9)]),
    trainable: ['W', 'B'],
  },
  {
    name: 'depthwise Conv multiplier 2, dilation 2',
    shape: [1, 3, 9, 9],
    spec: g([1, 3, 9, 9], [node('Conv', ['x', 'W'], ['y'], { group: i(3), dilations: ints([2, 2]), pads: ints([2, 2, 2, 2]) })], [w('W', [6, 1, 3, 3], 10)]),
    trainable: ['W'],
  },
  {
    name: 'grouped Conv (2 groups)',
    shape: [1, 4, 6, 6],
    spec: g([1, 4, 6, 6], [node('Conv', ['x', 'W', 'B'], ['y'], { group: i(2), pads: ints([1, 1, 1, 1]) })], [w('W', [6, 2, 3, 3], 11), w('B', [6], 12)]),
    trainable: ['W', 'B'],
  },
  {
    name: 'ConvTranspose stride 2, pads 1, output_padding 1, bias',
    shape: [1, 3, 4, 5],
    spec: g([1, 3, 4, 5], [node('ConvTranspose', ['x', 'W', 'B'], ['y'], { strides: ints([2, 2]), pads: ints([1, 1, 1, 1]), output_padding: ints([1, 1]) })], [w('W', [3, 2, 3, 3], 13), w('B', [2], 14)]),
    trainable: ['W', 'B'],
  },
  {
    name: 'MobileNet block: Pad -> Conv -> Mul -> Add -> Relu -> Clip (folded)',
    shape: [1, 3, 8, 8],
    spec: g(
      [1, 3, 8, 8],
      [
        node('Pad', ['x', 'pads'], ['p']),
        node('Conv', ['p', 'W'], ['c'], { strides: ints([2, 2]) }),
        node('Mul', ['c', 'scale'], ['m']),
        node('Add', ['m', 'shift'], ['a']),
        node('Relu', ['a'], ['r']),
        node('Clip', ['r', 'lo', 'hi'], ['y']),
      ],
      [int64('pads', [0, 0, 0, 0, 0, 0, 1, 1]), w('W', [4, 3, 3, 3], 15), fconst('scale', [4, 1, 1], [2, 0.5, 1.5, 3]), fconst('shift', [4, 1, 1], [0.5, 1, -0.5, 2]), fconst('lo', [], [0]), fconst('hi', [], [6])],
    ),
    input: randn(192, 16, 2),
  },
  {
    name: 'MobileNet block with trainable weights and BN constants',
    shape: [1, 3, 8, 8],
    spec: g(
      [1, 3, 8, 8],
      [node('Conv', ['x', 'W'], ['c'], { pads: ints([1, 1, 1, 1]) }), node('Mul', ['c', 'scale'], ['m']), node('Add', ['m', 'shift'], ['a']), node('Clip', ['a', 'lo', 'hi'], ['y'])],
      [w('W', [4, 3, 3, 3], 17), w('scale', [4, 1, 1], 18), w('shift', [4, 1, 1], 19), fconst('lo', [], [0]), fconst('hi', [], [6])],
    ),
    trainable: ['W', 'scale', 'shift'],
    input: randn(192, 20, 2),
  },
  {
    name: 'BatchNormalization after Conv (folded) and on the input',
    shape: [1, 3, 6, 6],
    spec: g(
      [1, 3, 6, 6],
      [
        node('BatchNormalization', ['x', 's0', 'b0', 'm0', 'v0'], ['n0'], { epsilon: f(1e-3) }),
        node('Conv', ['n0', 'W'], ['c'], { pads: ints([1, 1, 1, 1]) }),
        node('BatchNormalization', ['c', 's1', 'b1', 'm1', 'v1'], ['y']),
      ],
      [
        w('s0', [3], 21), w('b0', [3], 22), w('m0', [3], 23), fconst('v0', [3], [0.5, 1, 2]),
        w('W', [4, 3, 3, 3], 24), w('s1', [4], 25), w('b1', [4], 26), w('m1', [4], 27), fconst('v1', [4], [0.3, 1, 2, 4]),
      ],
    ),
    trainable: ['s1', 'b1'],
  },
  {
    name: 'Clip with attributes (opset 6), non-ReLU bounds',
    shape: [1, 2, 5, 5],
    spec: g([1, 2, 5, 5], [node('Conv', ['x', 'W'], ['c']), node('Clip', ['c'], ['y'], { min: f(-0.5), max: f(0.7) })], [w('W', [3, 2, 1, 1], 28)], 6),
  },
  {
    name: 'activations: LeakyRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Elu, Softplus',
    shape: [1, 2, 4, 4],
    spec: g([1, 2, 4, 4], [
      node('LeakyRelu', ['x'], ['a'], { alpha: f(0.1) }),
      node('Sigmoid', ['a'], ['b']),
      node('HardSigmoid', ['x'], ['c'], { alpha: f(0.3), beta: f(0.4) }),
      node('HardSwish', ['x'], ['d']),
      node('Tanh', ['d'], ['e']),
      node('Elu', ['x'], ['h'], { alpha: f(0.7) }),
      node('Softplus', ['x'], ['k']),
      node('Sum', ['b', 'c', 'e', 'h', 'k'], ['y']),
    ], [], 14),
    input: randn(32, 29, 2),
  },
  {
    name: 'PRelu with per-channel slope after Conv (NHWC layout)',
    shape: [1, 2, 5, 5],
    spec: g([1, 2, 5, 5], [node('Conv', ['x', 'W'], ['c']), node('PRelu', ['c', 'slope'], ['y'])], [w('W', [3, 2, 1, 1], 30), fconst('slope', [3, 1, 1], [0.1, 0.2, 0.3])]),
    trainable: ['slope'],
  },
  {
    name: 'element-wise with broadcasting: swish, x / (1 + |x|), Sub/Div by constants, Pow',
    shape: [2, 3, 4, 4],
    spec: g([2, 3, 4, 4], [
      node('Conv', ['x', 'W'], ['c']),
      node('Sigmoid', ['c'], ['sg']),
      node('Mul', ['c', 'sg'], ['sw']),
      node('Abs', ['sw'], ['ab']),
      node('Add', ['ab', 'one'], ['den']),
      node('Div', ['sw', 'den'], ['q']),
      node('Sub', ['q', 'row'], ['r']),
      node('Div', ['two', 'den'], ['u']),
      node('Pow', ['den', 'ex'], ['pw']),
      node('Sub', ['u', 'r'], ['v']),
      node('Add', ['v', 'pw'], ['y']),
    ], [w('W', [3, 3, 1, 1], 31), fconst('one', [], [1]), fconst('two', [1], [2]), fconst('row', [4], [0.1, -0.2, 0.3, 0.4]), fconst('ex', [], [1.5])]),
  },
  {
    name: 'Gemm transB, alpha, beta, C; Flatten; MatMul',
    shape: [2, 3, 2, 2],
    spec: g([2, 3, 2, 2], [
      node('Flatten', ['x'], ['fl']),
      node('Gemm', ['fl', 'B', 'C'], ['gm'], { transB: i(1), alpha: f(0.5), beta: f(2) }),
      node('MatMul', ['gm', 'M'], ['y']),
    ], [w('B', [5, 12], 32), w('C', [5], 33), w('M', [5, 3], 34)]),
    trainable: ['B', 'C', 'M'],
  },
  {
    name: 'Gemm with constant B (transB) and C: fused forward, custom gradient',
    shape: [3, 6],
    spec: g([3, 6], [node('Gemm', ['x', 'B', 'C'], ['y'], { transB: i(1) })], [w('B', [4, 6], 47), w('C', [4], 48)]),
  },
  {
    name: 'Gemm with constant B (no transpose) and 2-D C',
    shape: [2, 5],
    spec: g([2, 5], [node('Gemm', ['x', 'B', 'C'], ['y'])], [w('B', [5, 3], 49), w('C', [1, 3], 50)]),
  },
  {
    name: 'Gemm transA with a constant A-side input',
    shape: [4, 3],
    spec: g([4, 3], [node('Gemm', ['x', 'B'], ['y'], { transA: i(1) })], [w('B', [4, 2], 35)]),
  },
  {
    name: 'MaxPool 3x3 stride 2 pads 1',
    shape: [1, 2, 7, 7],
    spec: g([1, 2, 7, 7], [node('MaxPool', ['x'], ['y'], { kernel_shape: ints([3, 3]), strides: ints([2, 2]), pads: ints([1, 1, 1, 1]) })]),
  },
  {
    name: 'MaxPool ceil_mode after Conv',
    shape: [1, 2, 8, 8],
    spec: g([1, 2, 8, 8], [node('Conv', ['x', 'W'], ['c']), node('MaxPool', ['c'], ['y'], { kernel_shape: ints([3, 3]), strides: ints([2, 2]), ceil_mode: i(1) })], [w('W', [2, 2, 1, 1], 36)]),
  },
  {
    name: 'AveragePool pads 1, count_include_pad 0',
    shape: [1, 2, 6, 6],
    spec: g([1, 2, 6, 6], [node('AveragePool', ['x'], ['y'], { kernel_shape: ints([3, 3]), strides: ints([2, 2]), pads: ints([1, 1, 1, 1]) })]),
  },
  {
    name: 'AveragePool pads, count_include_pad 1, ceil_mode',
    shape: [1, 2, 7, 7],
    spec: g([1, 2, 7, 7], [node('AveragePool', ['x'], ['y'], { kernel_shape: ints([3, 3]), strides: ints([2, 2]), pads: ints([1, 0, 1, 0]), count_include_pad: i(1), ceil_mode: i(1) })], [], 19),
  },
  {
    name: 'AveragePool 2x2 stride 2 (no padding)',
    shape: [1, 3, 6, 6],
    spec: g([1, 3, 6, 6], [node('AveragePool', ['x'], ['y'], { kernel_shape: ints([2, 2]), strides: ints([2, 2]) })]),
  },
  {
    name: 'GlobalAveragePool -> Flatten -> Gemm -> Softmax; GlobalMaxPool',
    shape: [2, 3, 5, 5],
    spec: g([2, 3, 5, 5], [
      node('Conv', ['x', 'W'], ['c']),
      node('GlobalAveragePool', ['c'], ['gp']),
      node('GlobalMaxPool', ['c'], ['gm']),
      node('Add', ['gp', 'gm'], ['gs']),
      node('Flatten', ['gs'], ['fl']),
      node('Gemm', ['fl', 'B', 'C'], ['lg'], { transB: i(1) }),
      node('Softmax', ['lg'], ['y']),
    ], [w('W', [4, 3, 3, 3], 37), w('B', [6, 4], 38), w('C', [6], 39)]),
    trainable: ['B'],
  },
  {
    name: 'Softmax over channels of a 4-D tensor (opset 13) and LogSoftmax',
    shape: [1, 3, 3, 4],
    spec: g([1, 3, 3, 4], [node('Conv', ['x', 'W'], ['c']), node('Softmax', ['c'], ['s1'], { axis: i(1) }), node('LogSoftmax', ['c'], ['s2'], { axis: i(2) }), node('Add', ['s1', 's2'], ['y'])], [w('W', [3, 3, 1, 1], 40)]),
  },
  {
    name: 'Softmax opset 11 (flattened from axis 1) on a 4-D tensor',
    shape: [2, 2, 2, 3],
    spec: g([2, 2, 2, 3], [node('Softmax', ['x'], ['y'], { axis: i(1) })], [], 11),
  },
  {
    name: 'Pad constant 0.5 / reflect / edge',
    shape: [1, 2, 4, 5],
    spec: g([1, 2, 4, 5], [
      node('Pad', ['x', 'p1', 'v'], ['a'], { mode: s('constant') }),
      node('Pad', ['x', 'p1'], ['b'], { mode: s('reflect') }),
      node('Pad', ['x', 'p1'], ['c'], { mode: s('edge') }),
      node('Add', ['a', 'b'], ['ab']),
      node('Add', ['ab', 'c'], ['y']),
    ], [int64('p1', [0, 0, 1, 2, 0, 0, 2, 1]), fconst('v', [], [0.5])]),
  },
  {
    name: 'Concat (conv output with input), Transpose, Reshape, Squeeze/Unsqueeze',
    shape: [1, 2, 3, 4],
    spec: g([1, 2, 3, 4], [
      node('Conv', ['x', 'W'], ['c']),
      node('Concat', ['c', 'x'], ['cat'], { axis: i(1) }),
      node('Transpose', ['cat'], ['t'], { perm: ints([0, 2, 3, 1]) }),
      node('Reshape', ['t', 'shp'], ['r']),
      node('Unsqueeze', ['r', 'ax0'], ['u']),
      node('Squeeze', ['u', 'ax0'], ['q']),
      node('Transpose', ['q'], ['y'], { perm: ints([1, 0]) }),
    ], [w('W', [3, 2, 1, 1], 41), int64('shp', [12, -1]), int64('ax0', [0])]),
  },
  {
    name: 'Unsqueeze/Squeeze with axes attributes (opset 11) after GlobalAveragePool',
    shape: [2, 3, 4, 4],
    spec: g([2, 3, 4, 4], [
      node('Conv', ['x', 'W'], ['c']),
      node('GlobalAveragePool', ['c'], ['gp']),
      node('Squeeze', ['gp'], ['sq'], { axes: ints([2, 3]) }),
      node('Unsqueeze', ['sq'], ['us'], { axes: ints([0]) }),
      node('Softmax', ['us'], ['y'], { axis: i(2) }),
    ], [w('W', [3, 3, 3, 3], 51)], 11),
  },
  {
    name: 'PyTorch flatten pattern Shape->Gather->Unsqueeze->Concat->Reshape with dynamic batch',
    shape: [3, 2, 2, 2],
    spec: {
      inputs: [{ name: 'x', shape: ['N', 2, 2, 2] }],
      outputs: ['y'],
      initializers: [int64('idx', [0]), int64('minus1', [-1]), w('W', [2, 2, 1, 1], 42)],
      nodes: [
        node('Conv', ['x', 'W'], ['c']),
        node('Shape', ['c'], ['sh']),
        node('Gather', ['sh', 'idx'], ['n']),
        node('Concat', ['n', 'minus1'], ['target'], { axis: i(0) }),
        node('Reshape', ['c', 'target'], ['y']),
      ],
      opset: 13,
    },
  },
  {
    name: 'Slice with steps (2 and -1) and Gather on channels',
    shape: [1, 4, 6, 5],
    spec: g([1, 4, 6, 5], [
      node('Conv', ['x', 'W'], ['c']),
      node('Slice', ['c', 'st', 'en', 'ax', 'sp'], ['sl']),
      node('Gather', ['sl', 'gi'], ['y'], { axis: i(1) }),
    ], [w('W', [4, 4, 1, 1], 43), int64('st', [1, 4]), int64('en', [6, 0]), int64('ax', [2, 3]), int64('sp', [2, -1]), int64('gi', [2, 0, 3])]),
  },
  {
    name: 'ReduceMean keepdims 0 over H,W of NHWC data; ReduceSum (axes input); ReduceMax',
    shape: [2, 3, 4, 4],
    spec: g([2, 3, 4, 4], [
      node('Conv', ['x', 'W'], ['c']),
      node('ReduceMean', ['c'], ['m'], { axes: ints([2, 3]), keepdims: i(0) }),
      node('ReduceSum', ['c', 'ax'], ['s1'], { keepdims: i(0) }),
      node('ReduceMax', ['c'], ['mx'], { axes: ints([1]), keepdims: i(0) }),
      node('ReduceMean', ['mx'], ['mm'], { axes: ints([1, 2]), keepdims: i(1) }),
      node('Add', ['m', 's1'], ['ms']),
      node('Add', ['ms', 'mm'], ['y']),
    ], [w('W', [3, 3, 1, 1], 44), int64('ax', [2, 3])]),
  },
  {
    name: 'LRN size 3 after Conv',
    shape: [1, 2, 4, 4],
    spec: g([1, 2, 4, 4], [node('Conv', ['x', 'W'], ['c']), node('LRN', ['c'], ['y'], { size: i(3), alpha: f(0.01), beta: f(0.75), bias: f(1) })], [w('W', [5, 2, 1, 1], 45)]),
  },
  {
    name: 'Dropout, Identity, Cast float->float',
    shape: [2, 3],
    spec: g([2, 3], [node('Dropout', ['x'], ['d']), node('Identity', ['d'], ['e']), node('Cast', ['e'], ['c'], { to: i(1) }), node('Mul', ['c', 'c'], ['y'])]),
  },
  {
    name: 'Split (sizes input) -> Mul of parts; Expand; Tile',
    shape: [1, 4, 3, 3],
    spec: g([1, 4, 3, 3], [
      node('Conv', ['x', 'W'], ['c']),
      node('Split', ['c', 'sizes'], ['a', 'b'], { axis: i(1) }),
      node('Mul', ['a', 'b'], ['m']),
      node('Expand', ['m', 'eshape'], ['e']),
      node('Tile', ['e', 'reps'], ['y']),
    ], [w('W', [4, 4, 1, 1], 46), int64('sizes', [2, 2]), int64('eshape', [2, 2, 3, 3]), int64('reps', [1, 1, 1, 2])]),
  },
];

interface Ref { data: Float32Array; dims: number[] }
const ortCache = new Map<string, Ref>();

async function ortForward(c: Case, x: Float32Array): Promise<Ref> {
  let r = ortCache.get(c.name);
  if (!r) {
    const ort = await OrtModel.create(buildLoaded(c.spec, `${c.name}.onnx`), ['y'], { parallelism: 'intra-op', threads: 1 });
    try {
      r = (await ort.run(x.slice(), c.shape)).y!;
    } finally {
      await ort.dispose();
    }
    ortCache.set(c.name, r);
  }
  return r;
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let k = 0; k < a.length; k++) m = Math.max(m, Math.abs(a[k]! - b[k]!));
  return m;
}

/** sum(y * r) in float64 on the host. */
function hostLoss(y: ArrayLike<number>, r: number[]): number {
  let s = 0;
  for (let k = 0; k < y.length; k++) s += y[k]! * r[k]!;
  return s;
}

function pickCoords(n: number, count: number, seed: number): number[] {
  if (n <= count) return Array.from({ length: n }, (_, k) => k);
  const rng = mulberry32(seed);
  const set = new Set<number>();
  while (set.size < count) set.add(Math.floor(rng() * n));
  return [...set];
}

function checkFd(what: string, analytic: ArrayLike<number>, fd: number[], coords: number[]): void {
  const bad: string[] = [];
  coords.forEach((k, j) => {
    const a = analytic[k]!;
    const d = fd[j]!;
    if (Math.abs(a - d) > 2e-3 + 2e-2 * Math.abs(d)) bad.push(`#${k}: analytic ${a.toFixed(5)} vs fd ${d.toFixed(5)}`);
  });
  assert.ok(bad.length === 0, `${what}: gradient differs from finite differences at ${bad.length}/${coords.length}: ${bad.slice(0, 4).join('; ')}`);
}

after(async () => {
  await setBackend('wasm');
});

for (const backend of BACKENDS) {
  describe(`TF.js executor ops on ${backend}`, () => {
    for (const c of CASES) {
      test(c.name, async () => {
        await setBackend(backend);
        const ex = await TfExecutor.load(buildLoaded(c.spec, `${c.name}.onnx`), { backend, trainable: c.trainable });
        try {
          const n = size(c.shape);
          const xv = Float32Array.from(c.input ?? randn(n, 1000 + n));
          const x = tf.tensor(xv, c.shape);
          const run = (t: tf.Tensor) => ex.run(t).y!;
          const y0 = tf.tidy(() => run(x).dataSync().slice());

          // Forward vs ONNX Runtime.
          if (!c.noOrt) {
            const ref = await ortForward(c, xv);
            const outShape = tf.tidy(() => run(x).shape);
            assert.deepEqual(outShape, ref.dims, `output shape [${outShape}] vs ONNX Runtime [${ref.dims}]`);
            const scale = Math.max(1, ...Array.from(ref.data, Math.abs));
            const d = maxAbs(y0, ref.data);
            assert.ok(d <= 1e-4 * scale, `max abs diff to ONNX Runtime ${d} (scale ${scale})`);
          }

          // Input gradient vs central differences of sum(y * r).
          const r = randn(y0.length, 7);
          const rt = tf.tensor(r, tf.tidy(() => run(x).shape));
          const loss = (t: tf.Tensor) => tf.sum(tf.mul(run(t), rt));
          const gx = tf.tidy(() => tf.grad(loss)(x).dataSync().slice());
          const eps = c.eps ?? 1e-3;
          const coords = pickCoords(n, c.coords ?? 24, 3);
          const fdAt = (k: number) => {
            const xp = xv.slice();
            xp[k] += eps;
            const xm = xv.slice();
            xm[k] -= eps;
            const lp = tf.tidy(() => hostLoss(run(tf.tensor(xp, c.shape)).dataSync(), r));
            const lm = tf.tidy(() => hostLoss(run(tf.tensor(xm, c.shape)).dataSync(), r));
            return (lp - lm) / (2 * eps);
          };
          checkFd('input', gx, coords.map(fdAt), coords);

          // Weight gradients.
          if (c.trainable?.length) {
            const { grads, value } = tf.variableGrads(() => loss(x) as tf.Scalar);
            value.dispose();
            for (const name of c.trainable) {
              const v = ex.variables[name]!;
              assert.ok(v, `variable ${name} exists`);
              const gv = grads[v.name]!.dataSync().slice();
              const orig = v.dataSync().slice();
              const wc = pickCoords(orig.length, 12, 5);
              const fd = wc.map((k) => {
                const at = (delta: number) => {
                  const p = orig.slice();
                  p[k] += delta;
                  v.assign(tf.tensor(p, v.shape));
                  return tf.tidy(() => hostLoss(run(x).dataSync(), r));
                };
                const d = (at(eps) - at(-eps)) / (2 * eps);
                v.assign(tf.tensor(orig, v.shape));
                return d;
              });
              checkFd(`weight ${name}`, gv, fd, wc);
            }
            tf.dispose(grads);
          }
          x.dispose();
          rt.dispose();
        } finally {
          ex.dispose();
        }
      });
    }
  });
}

describe('TF.js executor: quantize/dequantize (QDQ models from graft\'s TFLite importer)', () => {
  const spec: GraphSpec = {
    inputs: [{ name: 'x', shape: [1, 2, 4, 4] }],
    outputs: ['y'],
    initializers: [
      fconst('s', [], [0.0078125]),
      { name: 'z', dims: [], values: [128], dataType: 2 },
      fconst('ws', [3], [0.01, 0.02, 0.03]),
      { name: 'wz', dims: [3], values: [100, 128, 90], dataType: 2 },
      { name: 'wq', dims: [3, 2, 1, 1], values: [10, 200, 50, 128, 255, 0], dataType: 2 },
    ],
    nodes: [
      node('QuantizeLinear', ['x', 's', 'z'], ['q']),
      node('DequantizeLinear', ['q', 's', 'z'], ['d']),
      node('DequantizeLinear', ['wq', 'ws', 'wz'], ['w'], { axis: i(0) }),
      node('Conv', ['d', 'w'], ['c']),
      node('QuantizeLinear', ['c', 's', 'z'], ['q2']),
      node('DequantizeLinear', ['q2', 's', 'z'], ['y']),
    ],
  };
  const x = Float32Array.from({ length: 32 }, (_, k) => Math.sin(k * 1.7) * 1.2);

  for (const backend of BACKENDS) {
    test(`${backend}: same values as ONNX Runtime (unoptimised); straight-through gradient`, async () => {
      await setBackend(backend);
      const model = buildLoaded(spec, 'qdq.onnx');
      const session = await ort.InferenceSession.create(model.bytes, { graphOptimizationLevel: 'disabled' });
      const ref = (await session.run({ x: new ort.Tensor('float32', x, [1, 2, 4, 4]) })).y!.data as Float32Array;
      await session.release();
      const ex = await TfExecutor.load(model, { backend, outputs: ['d', 'y'] });
      try {
        const out = ex.run(tf.tensor(x, [1, 2, 4, 4]));
        assert.ok(maxAbs(out.y!.dataSync(), ref) <= 1e-6, `QDQ output differs from ONNX Runtime by ${maxAbs(out.y!.dataSync(), ref)}`);
        // d = DQ(Q(x)): gradient 1 where x is inside the representable range [-1, 127/128], else 0.
        const g = tf.tidy(() => {
          const r = tf.valueAndGrad((t: tf.Tensor) => tf.sum(ex.run(t).d!))(tf.tensor(x, [1, 2, 4, 4]));
          r.value.dispose();
          return r.grad.dataSync().slice();
        });
        x.forEach((v, k) => {
          const inside = v >= -1 - 1 / 256 && v <= 127 / 128 + 1 / 256;
          assert.equal(g[k], inside ? 1 : 0, `gradient at ${k} (x=${v})`);
        });
        tf.dispose(out);
      } finally {
        ex.dispose();
      }
    });
  }
});

describe('TF.js executor load-time checks', () => {
  test('an unsupported op fails at load, naming the op and the node', async () => {
    const spec = g([1, 3, 4, 4], [node('Relu', ['x'], ['r']), { op: 'NonMaxSuppression', inputs: ['r'], outputs: ['y'], name: 'nms_node' }]);
    await assert.rejects(TfExecutor.load(buildLoaded(spec, 'bad.onnx'), { backend: 'cpu' }), (err: Error) => {
      assert.ok(err instanceof GraftError, 'a GraftError');
      assert.match(err.message, /NonMaxSuppression/);
      assert.match(err.message, /nms_node/);
      return true;
    });
  });

  test('an op from a custom domain fails at load', async () => {
    const spec = g([1, 3], [{ op: 'Relu', inputs: ['x'], outputs: ['y'], name: 'custom_relu', domain: 'com.example' }]);
    await assert.rejects(TfExecutor.load(buildLoaded(spec, 'custom.onnx'), { backend: 'cpu' }), /com\.example\.Relu.*custom_relu/);
  });

  test('a shape that depends on the data fails at load, naming the node', async () => {
    // Reshape whose target comes from the data itself (through Cast to int64).
    const spec = g([1, 2], [node('Cast', ['x'], ['xi'], { to: i(7) }), node('Reshape', ['x', 'xi'], ['y'])]);
    await assert.rejects(TfExecutor.load(buildLoaded(spec, 'dyn.onnx'), { backend: 'cpu' }), (err: Error) => {
      assert.ok(err instanceof GraftError, 'a GraftError');
      assert.match(err.message, /Cast/);
      return true;
    });
  });

  test('unknown trainable names and outputs are GraftErrors', async () => {
    const spec = g([1, 2, 3, 3], [node('Conv', ['x', 'W'], ['y'])], [w('W', [2, 2, 1, 1], 1)]);
    await assert.rejects(TfExecutor.load(buildLoaded(spec), { backend: 'cpu', trainable: ['nope'] }), /no initializer named 'nope'/);
    await assert.rejects(TfExecutor.load(buildLoaded(spec), { backend: 'cpu', outputs: ['nope'] }), /no tensor or node named 'nope'/);
  });

  test("trainable 'all' picks weights, not shape constants; a wrong input shape is refused", async () => {
    const spec: GraphSpec = {
      inputs: [{ name: 'x', shape: ['N', 2, 3, 3] }],
      outputs: ['y'],
      initializers: [w('W', [2, 2, 1, 1], 1), w('B', [2], 2), int64('shp', [0, -1]), fconst('half', [], [0.5])],
      nodes: [node('Conv', ['x', 'W', 'B'], ['c']), node('Mul', ['c', 'half'], ['m']), node('Reshape', ['m', 'shp'], ['y'])],
    };
    const ex = await TfExecutor.load(buildLoaded(spec), { backend: 'cpu', trainable: 'all' });
    try {
      assert.deepEqual(ex.trainable.sort(), ['B', 'W', 'half']);
      const y = ex.run(tf.zeros([4, 2, 3, 3]));
      assert.deepEqual(y.y!.shape, [4, 18]);
      tf.dispose(y);
      assert.throws(() => ex.run(tf.zeros([1, 3, 3, 3])), /does not fit/);
    } finally {
      ex.dispose();
    }
  });

  test('outputs can be cut at a node name; inner tensors are returned in ONNX layout', async () => {
    const spec = g([1, 2, 3, 3], [node('Conv', ['x', 'W'], ['c']), node('Relu', ['c'], ['y'])], [w('W', [2, 2, 1, 1], 1)]);
    spec.nodes[0]!.name = 'the_conv';
    const ex = await TfExecutor.load(buildLoaded(spec), { backend: 'cpu', outputs: ['the_conv', 'y'] });
    try {
      const out = ex.run(tf.ones([1, 2, 3, 3]));
      assert.deepEqual(Object.keys(out).sort(), ['the_conv', 'y']);
      assert.deepEqual(out.the_conv!.shape, [1, 2, 3, 3]);
      const c = out.the_conv!.dataSync();
      const yv = out.y!.dataSync();
      for (let k = 0; k < c.length; k++) assert.equal(yv[k], Math.max(0, c[k]!));
      tf.dispose(out);
    } finally {
      ex.dispose();
    }
  });
});
