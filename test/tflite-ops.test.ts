/**
 * TFLite importer, one operator handler at a time: a one-operator model is written with the test's own flatbuffers
 * writer and parsed, its handler is called through a fresh context, and the ONNX written is read back and run with
 * onnxruntime-node against a plain NHWC reference.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GraftError } from '../src/errors.js';
import { importTfliteBytes } from '../src/models/importers/tflite.js';
import { TfliteCtx } from '../src/models/importers/tflite/context.js';
import { OP_HANDLERS } from '../src/models/importers/tflite/ops/index.js';
import { parse } from '../src/models/importers/tflite/parse.js';
import type { OpResult } from '../src/models/importers/tflite/registry.js';
import { ActivationFunctionType, BuiltinOperator, BuiltinOptions, TensorType } from '../src/models/importers/tflite-schema/index.js';
import { convRef, maxDiff, nchwOf, noise, padRef, runOnnx, written, type Nhwc } from './helpers/importer-ops.js';
import { writeTflite, type TModel, type TTensor } from './helpers/tflite-writer.js';

const f32 = (v: ArrayLike<number>) => new Uint8Array(Float32Array.from(v).buffer);
const i32 = (v: number[]) => new Uint8Array(Int32Array.from(v).buffer);
const image = (h: number, w: number, c: number, seed = 1): Nhwc => ({ h, w, c, d: noise(h * w * c, seed) });

/**
 * One operator (tensor 0 the NHWC image input, the last tensor its output): parse the model, call the handler of its
 * operator, and run what it wrote (the raw handler result, before the fused activation) on `x`.
 */
async function runOp(tensors: TTensor[], op: TModel['ops'][number], x: Nhwc) {
  const out = tensors.length - 1;
  const m = parse(writeTflite({ tensors, ops: [op], inputs: [0], outputs: [out] }), 'op.tflite');
  const c = new TfliteCtx('op.tflite', m.tensors, true);
  c.values.set(0, { name: c.b.input('input', [1, x.c, x.h, x.w]), shape: m.tensors[0]!.shape });
  const parsed = m.ops[0]!;
  const t = m.tensors[out]!;
  const r: OpResult = OP_HANDLERS.get(parsed.name)!(parsed, c, { t, shape: t.shape, name: 'y' });
  const s = r.y.shape;
  c.b.output(r.y.name, s.length === 4 ? [s[0]!, s[3]!, s[1]!, s[2]!] : s);
  const bytes = c.b.build({ producer: 'test', graphName: 'op' });
  const run = await runOnnx(bytes, { input: [nchwOf(x), [1, x.c, x.h, x.w]] });
  return { r, ...written(bytes), out: run[r.y.name]! };
}

describe('TFLite operator handlers, one operator each', () => {
  test('CONV_2D: VALID, stride 2, OHWI weights → one Conv (OIHW), fused RELU handed back, equal to the reference', async () => {
    const x = image(6, 5, 3);
    const hwio = noise(3 * 3 * 3 * 4, 2);
    // HWIO → OHWI, TFLite's layout.
    const ohwi = new Float32Array(hwio.length);
    for (let a = 0; a < 3; a++) for (let b = 0; b < 3; b++) for (let i = 0; i < 3; i++) for (let o = 0; o < 4; o++) ohwi[((o * 3 + a) * 3 + b) * 3 + i] = hwio[((a * 3 + b) * 3 + i) * 4 + o]!;
    const bias = noise(4, 3);
    const tensors: TTensor[] = [
      { name: 'input', shape: [1, 6, 5, 3] },
      { name: 'w', shape: [4, 3, 3, 3], data: f32(ohwi) },
      { name: 'b', shape: [4], data: f32(bias) },
      { name: 'y', shape: [1, 2, 2, 4] },
    ];
    // Conv2DOptions: padding VALID(1), stride_w 2, stride_h 2, RELU(1)
    const op = { code: BuiltinOperator.CONV_2D!, inputs: [0, 1, 2], outputs: [3], options: { type: BuiltinOptions.Conv2DOptions, fields: [[0, 'i8', 1], [1, 'i32', 2], [2, 'i32', 2], [3, 'i8', 1]] as [number, 'i8' | 'i32', number][] } };
    const { r, nodes, inits, out } = await runOp(tensors, op, x);
    assert.equal(r.fused, ActivationFunctionType.RELU, 'the fused activation is left to the caller');
    assert.deepEqual(nodes.map((n) => n.op), ['Conv']);
    assert.deepEqual(nodes[0]!.attrs, { kernel_shape: [3, 3], strides: [2, 2], dilations: [1, 1], group: 1, pads: [0, 0, 0, 0] });
    assert.deepEqual(inits.get(nodes[0]!.inputs[1]!), [4, 3, 3, 3]);
    assert.ok(maxDiff(out.data, nchwOf(convRef(x, hwio, 3, 3, 4, { stride: 2, bias }))) < 1e-5);
  });

  test('DEPTHWISE_CONV_2D: SAME, multiplier 2 → Conv with group = C and (C·M)·1·HW weights', async () => {
    const x = image(4, 4, 3, 4);
    const w = noise(2 * 2 * 6, 5); // [1, kh, kw, C·M] is HW·C·M flattened
    const tensors: TTensor[] = [
      { name: 'input', shape: [1, 4, 4, 3] },
      { name: 'w', shape: [1, 2, 2, 6], data: f32(w) },
      { name: 'y', shape: [1, 4, 4, 6] },
    ];
    const op = { code: BuiltinOperator.DEPTHWISE_CONV_2D!, inputs: [0, 1], outputs: [2], options: { type: BuiltinOptions.DepthwiseConv2DOptions, fields: [[0, 'i8', 0], [1, 'i32', 1], [2, 'i32', 1], [3, 'i32', 2], [4, 'i8', 0]] as [number, 'i8' | 'i32', number][] } };
    const { nodes, inits, out } = await runOp(tensors, op, x);
    assert.deepEqual(nodes.map((n) => [n.op, n.attrs.group, n.attrs.auto_pad]), [['Conv', 3, 'SAME_UPPER']]);
    assert.deepEqual(inits.get(nodes[0]!.inputs[1]!), [6, 1, 2, 2]);
    assert.ok(maxDiff(out.data, nchwOf(convRef(x, w, 2, 2, 2, { same: true, depthwise: true }))) < 1e-5);
  });

  test('PAD: NHWC paddings become NCHW pads; the result is the zero-padded image', async () => {
    const x = image(3, 2, 2, 6);
    const tensors: TTensor[] = [
      { name: 'input', shape: [1, 3, 2, 2] },
      { name: 'p', shape: [4, 2], type: TensorType.INT32, data: i32([0, 0, 2, 1, 1, 0, 0, 0]) },
      { name: 'y', shape: [1, 6, 3, 2] },
    ];
    const { nodes, int64s, out } = await runOp(tensors, { code: BuiltinOperator.PAD!, inputs: [0, 1], outputs: [2] }, x);
    assert.deepEqual(int64s.get(nodes[0]!.inputs[1]!), [0, 0, 2, 1, 0, 0, 1, 0]);
    assert.ok(maxDiff(out.data, nchwOf(padRef(x, 2, 1, 1, 0))) < 1e-7);
  });

  test('RESHAPE to [1, H·W·C] flattens in NHWC order, keeps the batch free, and keeps the grid it was given', async () => {
    const x = image(2, 2, 3, 7);
    const tensors: TTensor[] = [
      { name: 'input', shape: [1, 2, 2, 3] },
      { name: 'shape', shape: [2], type: TensorType.INT32, data: i32([1, 12]) },
      { name: 'y', shape: [1, 12] },
    ];
    const { r, nodes, int64s, out } = await runOp(tensors, { code: BuiltinOperator.RESHAPE!, inputs: [0, 1], outputs: [2] }, x);
    assert.equal(r.requantise, false);
    assert.deepEqual(nodes.map((n) => n.op), ['Transpose', 'Reshape']);
    assert.deepEqual(int64s.get(nodes[1]!.inputs[1]!), [0, 12], 'batch 1 written as 0 (copy the input batch)');
    assert.deepEqual([...out.data], [...x.d]);
  });

  test('ADD of a per-channel constant: NHWC broadcasting laid out [1, C, 1, 1]', async () => {
    const x = image(2, 3, 3, 8);
    const tensors: TTensor[] = [
      { name: 'input', shape: [1, 2, 3, 3] },
      { name: 'v', shape: [3], data: f32([1, -2, 3]) },
      { name: 'y', shape: [1, 2, 3, 3] },
    ];
    const op = { code: BuiltinOperator.ADD!, inputs: [0, 1], outputs: [2], options: { type: BuiltinOptions.AddOptions, fields: [[0, 'i8', 0]] as [number, 'i8', number][] } };
    const { nodes, inits, out } = await runOp(tensors, op, x);
    assert.deepEqual(nodes.map((n) => n.op), ['Add']);
    assert.deepEqual(inits.get(nodes[0]!.inputs[1]!), [1, 3, 1, 1]);
    assert.ok(maxDiff(out.data, nchwOf({ ...x, d: x.d.map((v, i) => v + [1, -2, 3][i % 3]!) })) < 1e-6);
  });

  test('the table holds a handler for every operator the importer has supported', () => {
    const ops = ['ADD', 'SUB', 'MUL', 'DIV', 'AVERAGE_POOL_2D', 'MAX_POOL_2D', 'CONCATENATION', 'CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED', 'RESHAPE', 'SQUEEZE', 'SOFTMAX', 'PAD', 'MEAN', 'HARD_SWISH', 'LOGISTIC', 'TANH', 'RELU', 'RELU6', 'RELU_N1_TO_1', 'QUANTIZE', 'DEQUANTIZE'];
    assert.deepEqual([...OP_HANDLERS.keys()].sort(), ops.sort());
    for (const op of ops) assert.ok(BuiltinOperator[op] !== undefined, `${op} is a builtin operator name`);
  });

  test('an operator without a handler is refused before anything is built, naming it and its index', () => {
    assert.equal(OP_HANDLERS.has('GELU'), false);
    const tensors: TTensor[] = [{ name: 'input', shape: [1, 2, 2, 3] }, { name: 'r', shape: [1, 2, 2, 3] }, { name: 'y', shape: [1, 2, 2, 3] }];
    const bytes = writeTflite({ tensors, ops: [{ code: BuiltinOperator.RELU!, inputs: [0], outputs: [1] }, { code: BuiltinOperator.GELU!, inputs: [1], outputs: [2] }], inputs: [0], outputs: [2] });
    assert.throws(() => importTfliteBytes(bytes, 'g.tflite'), (err: unknown) => err instanceof GraftError && /^g\.tflite: operator 1 is GELU, which the TFLite importer does not support; supported: .*\bCONV_2D\b/.test(err.message));
  });
});
