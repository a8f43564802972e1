/**
 * TF.js layers importer, one layer handler at a time: each handler is called on one Keras layer config through a
 * fresh context, and the ONNX it writes is read back and run with onnxruntime-node against a plain NHWC reference.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GraftError } from '../src/errors.js';
import { LayersCtx, type T } from '../src/models/importers/tfjs-layers/context.js';
import { LAYER_HANDLERS } from '../src/models/importers/tfjs-layers/layers/index.js';
import type { KerasLayer } from '../src/models/importers/tfjs-layers/model-json.js';
import { translate } from '../src/models/importers/tfjs-layers/translate.js';
import type { TfjsConst } from '../src/models/importers/tfjs-weights.js';
import { convRef, maxDiff, nchwOf, noise, padRef, runOnnx, written, type Nhwc } from './helpers/importer-ops.js';

const image = (h: number, w: number, c: number, seed = 1): Nhwc => ({ h, w, c, d: noise(h * w * c, seed) });
const weight = (shape: number[], data: ArrayLike<number>): TfjsConst => ({ shape, data: Float32Array.from(data), dtype: 'float32' });

/** Run the handler of `cls` on the NHWC image `x` (ONNX input `input`, NCHW), with `weights` by manifest name. */
async function runLayer(cls: string, config: Record<string, unknown>, x: Nhwc, weights: Record<string, TfjsConst> = {}) {
  const ctx = new LayersCtx('m/model.json', new Map(Object.entries(weights)));
  const xin: T = { name: ctx.b.input('input', [1, x.c, x.h, x.w]), rank: 4, channels: x.c };
  const y = LAYER_HANDLERS.get(cls)!({ cls, name: String(config.name), c: config, inputs: [xin], x: xin }, ctx);
  ctx.b.output(y.name, [1, '?', '?', '?'].slice(0, y.rank));
  const bytes = ctx.b.build({ producer: 'test', graphName: 'layer' });
  const out = await runOnnx(bytes, { input: [nchwOf(x), [1, x.c, x.h, x.w]] });
  return { y, ctx, ...written(bytes), out: out[y.name]! };
}

describe('TF.js layers handlers, one layer each', () => {
  test('Conv2D: valid, stride 2, relu → Conv (OIHW weights, zero pads) + Relu, equal to the reference', async () => {
    const x = image(6, 7, 3);
    const k = noise(3 * 3 * 3 * 4, 2);
    const bias = noise(4, 3);
    const { nodes, inits, out } = await runLayer('Conv2D', { name: 'c1', strides: [2, 2], padding: 'valid', activation: 'relu' }, x, { 'c1/kernel': weight([3, 3, 3, 4], k), 'c1/bias': weight([4], bias) });
    assert.deepEqual(nodes.map((n) => n.op), ['Conv', 'Relu']);
    assert.deepEqual(nodes[0]!.attrs, { kernel_shape: [3, 3], strides: [2, 2], dilations: [1, 1], group: 1, pads: [0, 0, 0, 0] });
    assert.deepEqual(inits.get('c1/kernel'), [4, 3, 3, 3]);
    const ref = convRef(x, k, 3, 3, 4, { stride: 2, bias });
    assert.ok(maxDiff(out.data, nchwOf({ ...ref, d: ref.d.map((v) => Math.max(0, v)) })) < 1e-5);
  });

  test('DepthwiseConv2D: same, multiplier 2 → Conv with group = C, auto_pad SAME_UPPER', async () => {
    const x = image(5, 4, 3, 4);
    const k = noise(3 * 3 * 3 * 2, 5);
    const { nodes, inits, out } = await runLayer('DepthwiseConv2D', { name: 'dw', padding: 'same', use_bias: false }, x, { 'dw/depthwise_kernel': weight([3, 3, 3, 2], k) });
    assert.deepEqual(nodes.map((n) => [n.op, n.attrs.group, n.attrs.auto_pad]), [['Conv', 3, 'SAME_UPPER']]);
    assert.deepEqual(inits.get('dw/kernel'), [6, 1, 3, 3]);
    assert.ok(maxDiff(out.data, nchwOf(convRef(x, k, 3, 3, 2, { same: true, depthwise: true }))) < 1e-5);
  });

  test('ZeroPadding2D ((1, 2), (0, 3)) pads top/bottom and left/right of the NCHW tensor', async () => {
    const x = image(2, 3, 2, 6);
    const { nodes, int64s, out } = await runLayer('ZeroPadding2D', { name: 'zp', padding: [[1, 2], [0, 3]] }, x);
    assert.deepEqual(int64s.get(nodes[0]!.inputs[1]!), [0, 0, 1, 0, 0, 0, 2, 3]);
    assert.ok(maxDiff(out.data, nchwOf(padRef(x, 1, 2, 0, 3))) < 1e-7);
  });

  test('Flatten goes back to NHWC first, so the order is Keras\'s', async () => {
    const x = image(2, 2, 3, 7);
    const { y, nodes, out } = await runLayer('Flatten', { name: 'f' }, x);
    assert.equal(y.rank, 2);
    assert.deepEqual(nodes.map((n) => n.op), ['Transpose', 'Flatten']);
    assert.deepEqual([...out.data], [...x.d]);
  });

  test('Rescaling (x·scale + offset) and Add of two inputs', async () => {
    const x = image(2, 2, 3, 8);
    const r = await runLayer('Rescaling', { name: 'r', scale: 2, offset: -1 }, x);
    assert.deepEqual(r.nodes.map((n) => n.op), ['Mul', 'Add']);
    assert.ok(maxDiff(r.out.data, nchwOf({ ...x, d: x.d.map((v) => 2 * v - 1) })) < 1e-6);

    const ctx = new LayersCtx('m/model.json', new Map());
    const a: T = { name: ctx.b.input('a', [1, 2]), rank: 2, channels: 2 };
    const b: T = { name: ctx.b.input('b', [1, 2]), rank: 2, channels: 2 };
    const y = LAYER_HANDLERS.get('Add')!({ cls: 'Add', name: 'sum', c: { name: 'sum' }, inputs: [a, b], x: a }, ctx);
    ctx.b.output(y.name, [1, 2]);
    const out = await runOnnx(ctx.b.build({ producer: 't', graphName: 't' }), { a: [Float32Array.of(1, 2), [1, 2]], b: [Float32Array.of(10, 20), [1, 2]] });
    assert.deepEqual([...out[y.name]!.data], [11, 22]);
  });

  test('the table holds a handler for every layer class the importer has supported', () => {
    const layers = ['Conv2D', 'DepthwiseConv2D', 'Dense', 'BatchNormalization', 'Activation', 'ReLU', 'ZeroPadding2D', 'MaxPooling2D', 'AveragePooling2D', 'GlobalAveragePooling2D', 'GlobalMaxPooling2D', 'Flatten', 'Reshape', 'Dropout', 'SpatialDropout2D', 'Add', 'Multiply', 'Concatenate', 'Rescaling', 'Normalization'];
    assert.deepEqual([...LAYER_HANDLERS.keys()].sort(), layers.sort());
  });

  test('a layer class without a handler is refused before anything is built, naming the layer and its class', () => {
    const layers: KerasLayer[] = [
      { class_name: 'InputLayer', config: { name: 'in', batch_input_shape: [null, 8, 8, 3] }, inbound_nodes: [] },
      { class_name: 'Conv3D', config: { name: 'odd' }, inbound_nodes: [[['in', 0, 0, {}]]] },
    ];
    assert.equal(LAYER_HANDLERS.has('Conv3D'), false);
    assert.throws(() => translate(layers, false, new Map(), 'm/model.json'), (err: unknown) => err instanceof GraftError && err.message === 'm/model.json: layer odd: Keras layer type Conv3D is not supported by the TF.js importer');
  });
});
