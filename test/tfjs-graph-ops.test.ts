/**
 * TF.js graph importer, one op handler at a time: each handler is called on one node through a fresh context, the
 * ONNX it writes is read back and run with onnxruntime-node, and compared with a plain NHWC reference.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GraftError } from '../src/errors.js';
import { GraphCtx, type T } from '../src/models/importers/tfjs-graph/context.js';
import type { AttrValue, GraphModelJson, GraphNode } from '../src/models/importers/tfjs-graph/model-json.js';
import { OP_HANDLERS } from '../src/models/importers/tfjs-graph/ops/index.js';
import { translate } from '../src/models/importers/tfjs-graph/translate.js';
import { convRef, maxDiff, nchwOf, noise, padRef, runOnnx, written, type Nhwc } from './helpers/importer-ops.js';

const s = (v: string): AttrValue => ({ s: Buffer.from(v).toString('base64') });
const ints = (v: number[]): AttrValue => ({ list: { i: v.map(String) } });
const konst = (name: string, shape: number[], data: ArrayLike<number>, dtype: 'float32' | 'int32' = 'float32'): T => ({ shape, konst: { shape, data: Float32Array.from(data), dtype }, cname: name });

/**
 * Run the handler of `node.op` with the NHWC image `x` as input 'x' (ONNX input NCHW) and `consts` as the other
 * inputs; returns the translated tensor, the ONNX written, and its output `y` computed on `x`.
 */
async function runOp(node: GraphNode, x: Nhwc, consts: Record<string, T> = {}) {
  const c = new GraphCtx('m/model.json', new Map([[node.name, node]]), new Map());
  c.values.set('x', { name: c.b.input('x', [1, x.c, x.h, x.w]), shape: [1, x.h, x.w, x.c] });
  for (const [k, v] of Object.entries(consts)) c.values.set(k, v);
  const y = OP_HANDLERS.get(node.op)!(node, c, 'y')!;
  c.b.output('y', y.shape.length === 4 ? [y.shape[0]!, y.shape[3]!, y.shape[1]!, y.shape[2]!] as number[] : (y.shape as number[]));
  const bytes = c.b.build({ producer: 'test', graphName: 'op' });
  const out = await runOnnx(bytes, { x: [nchwOf(x), [1, x.c, x.h, x.w]] });
  return { y, ...written(bytes), out: out.y! };
}

const image = (h: number, w: number, c: number, seed = 1): Nhwc => ({ h, w, c, d: noise(h * w * c, seed) });

describe('TF.js graph op handlers, one node each', () => {
  test('Conv2D: VALID, stride 2, HWIO filter → one Conv with OIHW weights, equal to the NHWC reference', async () => {
    const x = image(7, 6, 3);
    const w = noise(3 * 3 * 3 * 4, 2);
    const node: GraphNode = { name: 'conv', op: 'Conv2D', input: ['x', 'w'], attr: { padding: s('VALID'), strides: ints([1, 2, 2, 1]), T: { type: 'DT_FLOAT' } } };
    const { y, nodes, inits, out } = await runOp(node, x, { w: konst('w', [3, 3, 3, 4], w) });
    assert.deepEqual(nodes.map((n) => n.op), ['Conv']);
    assert.deepEqual(nodes[0]!.attrs, { kernel_shape: [3, 3], strides: [2, 2], dilations: [1, 1], group: 1, pads: [0, 0, 0, 0] });
    assert.deepEqual(inits.get('w'), [4, 3, 3, 3], 'weights OIHW');
    assert.deepEqual(y.shape, [1, 3, 2, 4], 'TF shape NHWC');
    const ref = convRef(x, w, 3, 3, 4, { stride: 2 });
    assert.ok(maxDiff(out.data, nchwOf(ref)) < 1e-5, `max diff ${maxDiff(out.data, nchwOf(ref))}`);
  });

  test('FusedDepthwiseConv2dNative: SAME, multiplier 2, fused BiasAdd + Relu6 → grouped Conv + Clip', async () => {
    const x = image(5, 5, 3, 3);
    const w = noise(3 * 3 * 3 * 2, 4);
    const bias = noise(6, 5).map((v) => v * 3);
    const node: GraphNode = {
      name: 'dw',
      op: 'FusedDepthwiseConv2dNative',
      input: ['x', 'w', 'b'],
      attr: { padding: s('SAME'), strides: ints([1, 1, 1, 1]), fused_ops: { list: { s: ['BiasAdd', 'Relu6'].map((v) => Buffer.from(v).toString('base64')) } }, num_args: { i: '1' } },
    };
    const { nodes, inits, out } = await runOp(node, x, { w: konst('w', [3, 3, 3, 2], w), b: konst('b', [6], bias) });
    assert.deepEqual(nodes.map((n) => n.op), ['Conv', 'Clip']);
    assert.equal(nodes[0]!.attrs.group, 3);
    assert.equal(nodes[0]!.attrs.auto_pad, 'SAME_UPPER');
    assert.deepEqual(inits.get('w'), [6, 1, 3, 3], 'depthwise weights (C·M)·1·HW');
    const ref = convRef(x, w, 3, 3, 2, { same: true, depthwise: true, bias });
    ref.d = ref.d.map((v) => Math.min(6, Math.max(0, v)));
    assert.ok(maxDiff(out.data, nchwOf(ref)) < 1e-5);
  });

  test('Pad: TF paddings [[0,0],[1,2],[0,1],[0,0]] become NCHW pads [0,0,1,0, 0,0,2,1]', async () => {
    const x = image(3, 4, 2, 6);
    const node: GraphNode = { name: 'pad', op: 'Pad', input: ['x', 'p'] };
    const { y, nodes, int64s, out } = await runOp(node, x, { p: konst('p', [4, 2], [0, 0, 1, 2, 0, 1, 0, 0], 'int32') });
    assert.deepEqual(nodes.map((n) => n.op), ['Pad']);
    assert.deepEqual(int64s.get(nodes[0]!.inputs[1]!), [0, 0, 1, 0, 0, 0, 2, 1]);
    assert.deepEqual(y.shape, [1, 6, 5, 2]);
    assert.ok(maxDiff(out.data, nchwOf(padRef(x, 1, 2, 0, 1))) < 1e-7);
  });

  test('Reshape of a 4-D tensor to [-1, H·W·C] flattens in TF (NHWC) order; Mean over H, W marks the feature vector', async () => {
    const x = image(2, 3, 4, 7);
    const reshape: GraphNode = { name: 'flat', op: 'Reshape', input: ['x', 'shape'] };
    const r = await runOp(reshape, x, { shape: konst('shape', [2], [-1, 24], 'int32') });
    assert.deepEqual(r.nodes.map((n) => n.op), ['Transpose', 'Reshape']);
    assert.deepEqual([...r.out.data], [...x.d], 'row-major NHWC order');
    const mean: GraphNode = { name: 'mean', op: 'Mean', input: ['x', 'axes'], attr: { keep_dims: { b: false } } };
    const m = await runOp(mean, x, { axes: konst('axes', [2], [1, 2], 'int32') });
    assert.deepEqual(m.nodes.map((n) => [n.op, n.attrs.axes]), [['ReduceMean', [2, 3]]]);
    assert.equal(m.y.pooled, true);
    const want = Array.from({ length: 4 }, (_, k) => Array.from({ length: 6 }, (_, p) => x.d[p * 4 + k]!).reduce((a, v) => a + v, 0) / 6);
    assert.ok(maxDiff(m.out.data, want) < 1e-6);
  });

  test('Add of a per-channel constant broadcasts NCHW ([1, C, 1, 1]); Mul of two constants is folded, writing nothing', async () => {
    const x = image(2, 2, 3, 8);
    const add: GraphNode = { name: 'add', op: 'AddV2', input: ['x', 'v'] };
    const { nodes, inits, out } = await runOp(add, x, { v: konst('v', [3], [10, 20, 30]) });
    assert.deepEqual(nodes.map((n) => n.op), ['Add']);
    assert.deepEqual(inits.get('v'), [1, 3, 1, 1]);
    assert.ok(maxDiff(out.data, nchwOf({ ...x, d: x.d.map((v, i) => v + [10, 20, 30][i % 3]!) })) < 1e-5);

    const c = new GraphCtx('m/model.json', new Map(), new Map());
    c.values.set('a', konst('a', [2], [2, 3]));
    c.values.set('b', konst('b', [], [4]));
    const y = OP_HANDLERS.get('Mul')!({ name: 'mul', op: 'Mul', input: ['a', 'b'] }, c, 'mul')!;
    assert.deepEqual([...y.konst!.data], [8, 12]);
    assert.equal(y.name, undefined);
    assert.equal(written(c.b.build({ producer: 't', graphName: 't' })).nodes.length, 0);
  });

  test('the table holds a handler for every op the importer has supported', () => {
    const ops = ['Placeholder', 'PlaceholderWithDefault', 'Const', 'Identity', 'StopGradient', 'Snapshot', 'NoOp', 'Conv2D', '_FusedConv2D', 'DepthwiseConv2dNative', 'FusedDepthwiseConv2dNative', 'BiasAdd', 'FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3', 'Add', 'AddV2', 'AddN', 'Sub', 'Mul', 'RealDiv', 'Div', 'Maximum', 'Minimum', 'Relu', 'Relu6', 'Elu', 'LeakyRelu', 'Prelu', 'Sigmoid', 'Tanh', 'Softmax', 'Neg', 'Sqrt', 'Rsqrt', 'Square', 'Exp', 'AvgPool', 'MaxPool', 'Mean', 'Max', 'Squeeze', 'Reshape', 'Pad', 'PadV2', 'ConcatV2', 'MatMul', '_FusedMatMul'];
    assert.deepEqual([...OP_HANDLERS.keys()].sort(), ops.sort());
  });

  test('an op without a handler is refused before anything is built, naming the node and the op', () => {
    const json: GraphModelJson = {
      modelTopology: { node: [{ name: 'x', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: { dim: [{ size: -1 }, { size: 4 }, { size: 4 }, { size: 3 }] } } } }, { name: 'odd/erf', op: 'Erf', input: ['x'] }] },
      weightsManifest: [],
    };
    assert.equal(OP_HANDLERS.has('Erf'), false);
    assert.throws(() => translate(json, new Map(), 'm/model.json'), (err: unknown) => err instanceof GraftError && /^m\/model\.json: node 'odd\/erf' \(op Erf\) is not supported by the TF\.js graph importer$/.test(err.message));
  });
});
