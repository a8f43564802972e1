/**
 * TFLite importer: tiny models built here with the flatbuffers Builder (checked against a plain NHWC reference
 * written in the test), the shared MobileNets on the 15 ImageNet samples, transfer learning on Cats vs Dogs,
 * broken files, and `graft convert`.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { Backbone } from '../src/engine/backbone.js';
import { GraftError } from '../src/errors.js';
import { importTflite, importTfliteBytes, isTfliteModel } from '../src/models/importers/tflite.js';
import { BuiltinOperator, BuiltinOptions, Model, TensorType } from '../src/models/importers/tflite-schema/index.js';
import { resolveModel } from '../src/models/resolve.js';
import { convertModel } from '../src/tasks/convert.js';
import { trainRun } from '../src/tasks/train.js';
import { SHARED, SKIP_SHARED } from './helpers/shared.js';
import { writeTflite, type TModel, type TTensor } from './helpers/tflite-writer.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-tflite-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

const f32 = (v: ArrayLike<number>) => new Uint8Array(Float32Array.from(v).buffer);
const i32 = (v: number[]) => new Uint8Array(Int32Array.from(v).buffer);
/** Deterministic pseudo-random numbers in [-1, 1). */
const noise = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(seed * 97.13 + i * 12.9898) * 0.999);

// ---- a plain NHWC reference (batch 1) -------------------------------------------------------------------------------

interface Nhwc { h: number; w: number; c: number; d: Float64Array }
const at = (x: Nhwc, i: number, j: number, k: number) => (i < 0 || j < 0 || i >= x.h || j >= x.w ? 0 : x.d[(i * x.w + j) * x.c + k]!);
/** TF SAME padding: total max((out − 1)·s + k − in, 0), the smaller half before. */
const samePad = (n: number, k: number, s: number) => Math.floor(Math.max((Math.ceil(n / s) - 1) * s + k - n, 0) / 2);

function depthwiseRef(x: Nhwc, w: number[], kh: number, kw: number, mult: number, bias: number[], act: (v: number) => number): Nhwc {
  const pt = samePad(x.h, kh, 1);
  const pl = samePad(x.w, kw, 1);
  const c = x.c * mult;
  const d = new Float64Array(x.h * x.w * c);
  for (let i = 0; i < x.h; i++) for (let j = 0; j < x.w; j++) for (let o = 0; o < c; o++) {
    let s = bias[o]!;
    for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) s += at(x, i + a - pt, j + b - pl, Math.floor(o / mult)) * w[(a * kw + b) * c + o]!;
    d[(i * x.w + j) * c + o] = act(s);
  }
  return { h: x.h, w: x.w, c, d };
}

function conv1x1Ref(x: Nhwc, w: number[], cout: number, bias: number[], act: (v: number) => number): Nhwc {
  const d = new Float64Array(x.h * x.w * cout);
  for (let p = 0; p < x.h * x.w; p++) for (let o = 0; o < cout; o++) {
    let s = bias[o]!;
    for (let k = 0; k < x.c; k++) s += x.d[p * x.c + k]! * w[o * x.c + k]!;
    d[p * cout + o] = act(s);
  }
  return { h: x.h, w: x.w, c: cout, d };
}

function toNchw(x: Nhwc): Float32Array {
  const out = new Float32Array(x.d.length);
  for (let i = 0; i < x.h; i++) for (let j = 0; j < x.w; j++) for (let k = 0; k < x.c; k++) out[(k * x.h + i) * x.w + j] = x.d[(i * x.w + j) * x.c + k]!;
  return out;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'same length');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function run(onnx: Uint8Array, input: Float32Array, dims: number[]) {
  const s = await ort.InferenceSession.create(onnx);
  return s.run({ input: new ort.Tensor('float32', input, dims) });
}

const relu = (v: number) => Math.max(0, v);
const relu6 = (v: number) => Math.min(6, Math.max(0, v));

// Graph A: input [1,3,3,3] → DEPTHWISE 2x2 ×2 SAME RELU6 → CONV 1x1 → 2 VALID RELU → RESHAPE [1,18] → FC 4 → SOFTMAX.
function graphA(opts: { quantised?: boolean } = {}) {
  const dw = noise(2 * 2 * 6, 1);
  const dwb = noise(6, 2);
  const pw = noise(12, 3);
  const pwb = noise(2, 4);
  const fc = noise(4 * 18, 5);
  const fcb = noise(4, 6);
  const tensors: TTensor[] = [
    { name: 'input', shape: [1, 3, 3, 3] },
    { name: 'dw/weights', shape: [1, 2, 2, 6], data: f32(dw) },
    { name: 'dw/bias', shape: [6], data: f32(dwb) },
    { name: 'dw/out', shape: [1, 3, 3, 6] },
    { name: 'pw/weights', shape: [2, 1, 1, 6], data: f32(pw) },
    { name: 'pw/bias', shape: [2], data: f32(pwb) },
    { name: 'pw/out', shape: [1, 3, 3, 2] },
    { name: 'shape', shape: [2], type: TensorType.INT32, data: i32([1, 18]) },
    { name: 'flat', shape: [1, 18] },
    { name: 'fc/weights', shape: [4, 18], data: f32(fc) },
    { name: 'fc/bias', shape: [4], data: f32(fcb) },
    { name: 'logits', shape: [1, 4] },
    { name: 'probs', shape: [1, 4] },
  ];
  let pwDeq = pw;
  let pwbDeq = pwb;
  if (opts.quantised) {
    // uint8 input (scale 1/128, zero point 128), per-channel uint8 pointwise weights, int32 bias with per-channel scales.
    tensors[0] = { name: 'input', shape: [1, 3, 3, 3], type: TensorType.UINT8, q: { scale: [1 / 128], zeroPoint: [128] } };
    const scales = [0.004, 0.007];
    const zps = [120, 131];
    const q = pw.map((v, k) => Math.max(0, Math.min(255, Math.round(v / scales[Math.floor(k / 6)]!) + zps[Math.floor(k / 6)]!)));
    pwDeq = q.map((v, k) => (v - zps[Math.floor(k / 6)]!) * scales[Math.floor(k / 6)]!);
    tensors[4] = { name: 'pw/weights', shape: [2, 1, 1, 6], type: TensorType.UINT8, data: Uint8Array.from(q), q: { scale: scales, zeroPoint: zps, dim: 0 } };
    const bScales = scales.map((s) => s * 0.05);
    const bq = pwb.map((v, k) => Math.round(v / bScales[k]!));
    pwbDeq = bq.map((v, k) => v * bScales[k]!);
    tensors[5] = { name: 'pw/bias', shape: [2], type: TensorType.INT32, data: i32(bq), q: { scale: bScales, zeroPoint: [0, 0] } };
  }
  const model: TModel = {
    tensors,
    inputs: [0],
    outputs: [12],
    ops: [
      // DepthwiseConv2DOptions: padding SAME(0), stride_w 1, stride_h 1, depth_multiplier 2, RELU6(3)
      { code: BuiltinOperator.DEPTHWISE_CONV_2D!, inputs: [0, 1, 2], outputs: [3], options: { type: BuiltinOptions.DepthwiseConv2DOptions, fields: [[0, 'i8', 0], [1, 'i32', 1], [2, 'i32', 1], [3, 'i32', 2], [4, 'i8', 3]] } },
      // Conv2DOptions: padding VALID(1), strides 1, RELU(1)
      { code: BuiltinOperator.CONV_2D!, inputs: [3, 4, 5], outputs: [6], options: { type: BuiltinOptions.Conv2DOptions, fields: [[0, 'i8', 1], [1, 'i32', 1], [2, 'i32', 1], [3, 'i8', 1]] } },
      { code: BuiltinOperator.RESHAPE!, inputs: [6, 7], outputs: [8] },
      { code: BuiltinOperator.FULLY_CONNECTED!, inputs: [8, 9, 10], outputs: [11], options: { type: BuiltinOptions.FullyConnectedOptions, fields: [[0, 'i8', 0]] } },
      { code: BuiltinOperator.SOFTMAX!, inputs: [11], outputs: [12], options: { type: BuiltinOptions.SoftmaxOptions, fields: [[0, 'f32', 1]] } },
    ],
  };
  /** Reference logits for an NHWC input that the TFLite model sees. */
  const reference = (x: Nhwc) => {
    const a = depthwiseRef(x, dw, 2, 2, 2, dwb, relu6);
    const b = conv1x1Ref(a, pwDeq, 2, pwbDeq, relu);
    return Array.from({ length: 4 }, (_, o) => fcb[o]! + Array.from(b.d).reduce((s, v, k) => s + v * fc[o * 18 + k]!, 0));
  };
  return { bytes: writeTflite(model), model, reference };
}

describe('TFLite importer on tiny models built in the test', () => {
  test('the reader sees what the writer wrote (field ids of Model, SubGraph, Tensor, Operator, options)', () => {
    const m = Model.read(graphA({ quantised: true }).bytes);
    const sg = m.subgraphs[0]!;
    assert.equal(m.version, 3);
    assert.equal(m.description, 'built by graft tests');
    assert.deepEqual(sg.inputs, [0]);
    assert.deepEqual(sg.outputs, [12]);
    assert.deepEqual(sg.tensors[4]!.shape, [2, 1, 1, 6]);
    assert.equal(sg.tensors[4]!.type, TensorType.UINT8);
    assert.deepEqual(sg.tensors[4]!.quantization?.zeroPoint, [120, 131]);
    assert.equal(sg.tensors[4]!.quantization?.quantizedDimension, 0);
    assert.equal(sg.tensors[7]!.name, 'shape');
    assert.deepEqual(sg.operators.map((o) => m.operatorCodes[o.opcodeIndex]!.builtinCode), [4, 3, 22, 9, 25]);
    assert.deepEqual(sg.operators[0]!.inputs, [0, 1, 2]);
    assert.equal(sg.operators[0]!.builtinOptionsType, BuiltinOptions.DepthwiseConv2DOptions);
  });

  test('float: depthwise (SAME, multiplier 2, fused RELU6), conv (VALID, RELU), reshape, FC and softmax match an NHWC reference', async () => {
    const { bytes, reference } = graphA();
    const onnx = importTfliteBytes(bytes, 'a.tflite');
    const xs = noise(27, 9).map((v) => v * 3);
    const x: Nhwc = { h: 3, w: 3, c: 3, d: Float64Array.from(xs) };
    // Batch of two: the same image twice, the batch dimension is free.
    const one = toNchw(x);
    const input = new Float32Array(2 * 27);
    input.set(one, 0);
    input.set(one, 27);
    const out = await run(onnx, input, [2, 3, 3, 3]);
    const want = reference(x);
    const logits = out.logits!.data as Float32Array;
    assert.deepEqual(out.logits!.dims, [2, 4]);
    const d = maxDiff(logits.subarray(0, 4), want);
    assert.ok(d < 1e-4, `logits max abs diff ${d}`);
    assert.ok(maxDiff(logits.subarray(4, 8), want) < 1e-4, 'second batch row');
    const probs = out.output!.data as Float32Array;
    assert.ok(Math.abs(probs[0]! + probs[1]! + probs[2]! + probs[3]! - 1) < 1e-5, 'softmax output sums to 1');
  });

  test('quantised: uint8 input and per-channel uint8 weights with int32 biases, dequantised; input range written to the metadata', async () => {
    const { bytes, reference } = graphA({ quantised: true });
    // Pixels p in [0, 255] as graft feeds them for Normalized_1_1: x = p / 127.5 − 1; the network sees (p − 128) / 128.
    const pixels = noise(27, 11).map((v) => Math.round((v + 1) * 127.5));
    const x = toNchw({ h: 3, w: 3, c: 3, d: Float64Array.from(pixels, (p) => p / 127.5 - 1) });
    const want = reference({ h: 3, w: 3, c: 3, d: Float64Array.from(pixels, (p) => (p - 128) / 128) });
    for (const mode of ['float', 'emulate'] as const) {
      const onnx = importTfliteBytes(bytes, 'q.tflite', { quantisedActivations: mode });
      const got = (await run(onnx, x, [1, 3, 3, 3])).logits!.data as Float32Array;
      const d = maxDiff(got, want);
      assert.ok(d < 1e-4, `${mode}: logits max abs diff ${d}`);
      const file = join(dir, `q-${mode}.onnx`);
      await writeFile(file, onnx);
      const ref = await resolveModel(file);
      assert.deepEqual(ref.spec.mean, [0.5, 0.5, 0.5]);
      assert.deepEqual(ref.spec.std, [0.5, 0.5, 0.5]);
      assert.deepEqual(ref.spec.size, [3, 3]);
      assert.equal(ref.spec.layout, 'NCHW');
      assert.equal(ref.logitsTensor, 'logits');
      assert.deepEqual(ref.warnings, []);
    }
  });

  test('pad, broadcast add of a constant, concatenation on channels, max pool, mean over H and W (features)', async () => {
    const c = [0.5, -1, 2];
    const model: TModel = {
      tensors: [
        { name: 'input', shape: [1, 3, 3, 3] },
        { name: 'paddings', shape: [4, 2], type: TensorType.INT32, data: i32([0, 0, 1, 0, 0, 1, 0, 0]) },
        { name: 'padded', shape: [1, 4, 4, 3] },
        { name: 'c', shape: [3], data: f32(c) },
        { name: 'added', shape: [1, 4, 4, 3] },
        { name: 'cat', shape: [1, 4, 4, 6] },
        { name: 'pooled', shape: [1, 2, 2, 6] },
        { name: 'shape', shape: [2], type: TensorType.INT32, data: i32([1, 24]) },
        { name: 'out', shape: [1, 24] },
        { name: 'axes', shape: [2], type: TensorType.INT32, data: i32([1, 2]) },
        { name: 'mean', shape: [1, 6] },
      ],
      inputs: [0],
      outputs: [8, 10],
      ops: [
        { code: BuiltinOperator.PAD!, inputs: [0, 1], outputs: [2] },
        { code: BuiltinOperator.ADD!, inputs: [2, 3], outputs: [4], options: { type: BuiltinOptions.AddOptions, fields: [[0, 'i8', 0]] } },
        { code: BuiltinOperator.CONCATENATION!, inputs: [4, 2], outputs: [5], options: { type: BuiltinOptions.ConcatenationOptions, fields: [[0, 'i32', -1], [1, 'i8', 0]] } },
        // Pool2DOptions: VALID, strides 2, filter 2x2
        { code: BuiltinOperator.MAX_POOL_2D!, inputs: [5], outputs: [6], options: { type: BuiltinOptions.Pool2DOptions, fields: [[0, 'i8', 1], [1, 'i32', 2], [2, 'i32', 2], [3, 'i32', 2], [4, 'i32', 2], [5, 'i8', 0]] } },
        { code: BuiltinOperator.RESHAPE!, inputs: [6, 7], outputs: [8] },
        { code: BuiltinOperator.MEAN!, inputs: [5, 9], outputs: [10], options: { type: BuiltinOptions.ReducerOptions, fields: [[0, 'i8', 0]] } },
      ],
    };
    const onnx = importTfliteBytes(writeTflite(model), 'b.tflite');
    const x: Nhwc = { h: 3, w: 3, c: 3, d: Float64Array.from(noise(27, 13)) };
    // Reference: pad one row on top and one column on the right, add c per channel, concat [added, padded].
    const padded: Nhwc = { h: 4, w: 4, c: 3, d: new Float64Array(48) };
    for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) for (let k = 0; k < 3; k++) padded.d[(i * 4 + j) * 3 + k] = at(x, i - 1, j, k);
    const cat: Nhwc = { h: 4, w: 4, c: 6, d: new Float64Array(96) };
    for (let p = 0; p < 16; p++) for (let k = 0; k < 3; k++) {
      cat.d[p * 6 + k] = padded.d[p * 3 + k]! + c[k]!;
      cat.d[p * 6 + 3 + k] = padded.d[p * 3 + k]!;
    }
    const pooled: number[] = [];
    for (let i = 0; i < 2; i++) for (let j = 0; j < 2; j++) for (let k = 0; k < 6; k++) pooled.push(Math.max(at(cat, 2 * i, 2 * j, k), at(cat, 2 * i + 1, 2 * j, k), at(cat, 2 * i, 2 * j + 1, k), at(cat, 2 * i + 1, 2 * j + 1, k)));
    const mean = Array.from({ length: 6 }, (_, k) => Array.from({ length: 16 }, (_, p) => cat.d[p * 6 + k]!).reduce((a, b) => a + b) / 16);
    const out = await run(onnx, toNchw(x), [1, 3, 3, 3]);
    assert.ok(maxDiff(out.output!.data as Float32Array, pooled) < 1e-5, 'pooled output, flattened in NHWC order');
    assert.ok(maxDiff(out.output_1!.data as Float32Array, mean) < 1e-5, 'mean over H, W');
    assert.ok(maxDiff(out.features!.data as Float32Array, mean) < 1e-5, 'features = the spatial mean');
  });

  test('an unsupported operator is refused at import, naming the operator and its index; codes above 127 read from the int32 field', () => {
    for (const [code, name] of [[BuiltinOperator.TRANSPOSE_CONV!, 'TRANSPOSE_CONV'], [BuiltinOperator.GELU!, 'GELU']] as const) {
      const { model } = graphA();
      model.ops[2] = { code, inputs: [6, 7], outputs: [8] };
      assert.throws(() => importTfliteBytes(writeTflite(model), 'u.tflite'), (err: unknown) => {
        assert.ok(err instanceof GraftError, 'a GraftError');
        assert.match((err as Error).message, new RegExp(`u\\.tflite: operator 2 is ${name}, which the TFLite importer does not support`));
        return true;
      });
    }
  });

  test('garbage, truncated and missing files are clear errors', async () => {
    const { bytes } = graphA();
    const garbage = Uint8Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24);
    assert.throws(() => importTfliteBytes(garbage, 'g.tflite'), /g\.tflite: not a TFLite model \(no "TFL3" file identifier/);
    const fakeId = garbage.slice();
    fakeId.set([0x54, 0x46, 0x4c, 0x33], 4);
    assert.throws(() => importTfliteBytes(fakeId, 'f.tflite'), /f\.tflite: not a valid TFLite model \(truncated or corrupt\?\)/);
    assert.throws(() => importTfliteBytes(new Uint8Array(0), 'e.tflite'), /not a TFLite model/);
    for (const frac of [0.3, 0.6, 0.9]) {
      assert.throws(() => importTfliteBytes(bytes.subarray(0, Math.floor(bytes.length * frac)), 't.tflite'), GraftError, `cut at ${frac}`);
    }
    const path = join(dir, 'json.tflite');
    await writeFile(path, '{"not": "tflite"}');
    await assert.rejects(importTflite(path), /json\.tflite: not a TFLite model/);
    await assert.rejects(importTflite(join(dir, 'nope.tflite')), /nope\.tflite: not found/);
    assert.equal(await isTfliteModel(path), false);
    await writeFile(join(dir, 'a.tflite'), bytes);
    assert.equal(await isTfliteModel(join(dir, 'a.tflite')), true);
  });
});

// ---- the shared models ----------------------------------------------------------------------------------------------

const TFLITE = SHARED ? join(SHARED, 'models', 'tflite') : '';

describe('TFLite importer on the shared MobileNets', { skip: SKIP_SHARED }, () => {
  const samples = async () => {
    const d = join(SHARED!, 'data', 'imagenet', 'samples');
    return (await readdir(d)).filter((f) => f.endsWith('.JPEG')).sort().map((f) => join(d, f));
  };

  for (const [file, atLeast, features] of [
    ['mobilenet_v1_0.25_224.tflite', 7, 256],
    ['mobilenet_v2_1.0_224_quant.tflite', 13, 1280],
    ['mobilenet_v3_small_224_1.0_uint8.tflite', 12, 1024],
  ] as const) {
    test(`${file}: imports, preprocessing from the metadata, >= ${atLeast} of the 15 ImageNet samples top-1 correct`, async () => {
      const t0 = performance.now();
      const onnx = await importTflite(join(TFLITE, file));
      const seconds = (performance.now() - t0) / 1000;
      const out = join(dir, file.replace('.tflite', '.onnx'));
      await writeFile(out, onnx);
      const backbone = await Backbone.load(out);
      try {
        assert.deepEqual(backbone.ref.warnings, [], 'no preprocessing guessed');
        assert.deepEqual(backbone.spec.mean, [0.5, 0.5, 0.5], '[-1, 1] input');
        assert.deepEqual(backbone.spec.size, [224, 224]);
        assert.equal(backbone.ref.featureTensor, 'features');
        assert.equal(backbone.ref.logitsTensor, 'logits');
        assert.equal(backbone.ref.labels?.[0], 'background');
        const paths = await samples();
        assert.equal(paths.length, 15);
        const wnids: string[] = JSON.parse(await readFile(join(import.meta.dirname, '..', 'assets', 'imagenet-classes.json'), 'utf8')).wnids;
        const res = await backbone.logits(paths);
        assert.equal(res.dim, 1001);
        let correct = 0;
        paths.forEach((p, i) => {
          const row = res.features.subarray(i * 1001, (i + 1) * 1001);
          const top = row.indexOf(Math.max(...row));
          // TFLite index = ImageNet-1k index + 1 (background at 0).
          if (top === wnids.indexOf(p.split('/').at(-1)!.split('_')[0]!) + 1) correct++;
        });
        console.log(`# ${file}: ${correct}/15 top-1 correct, imported in ${seconds.toFixed(2)} s`);
        assert.ok(correct >= atLeast, `${file}: ${correct}/15 top-1 correct, want >= ${atLeast}`);
        const feats = await backbone.features(paths.slice(0, 2));
        assert.equal(feats.dim, features);
      } finally {
        await backbone.dispose();
      }
    });
  }

  test('Cats vs Dogs, frozen MobileNet V2 (quantised) features + linear head: validation accuracy >= 0.97', async () => {
    const model = join(dir, 'mnv2q.onnx');
    await writeFile(model, await importTflite(join(TFLITE, 'mobilenet_v2_1.0_224_quant.tflite')));
    const res = await trainRun({
      data: join(SHARED!, 'data', 'cats_vs_dogs', 'train'),
      val: join(SHARED!, 'data', 'cats_vs_dogs', 'validation'),
      model,
      out: join(dir, 'cats-dogs-v2q'),
      cache: false,
    });
    console.log(`# cats vs dogs, MobileNet V2 quant features: validation accuracy ${res.validation.accuracy}`);
    assert.equal(res.counts.val, 1000);
    assert.ok(res.validation.accuracy >= 0.97, `validation accuracy ${res.validation.accuracy}`);
  });

  test('graft convert <file.tflite> writes an ONNX file graft resolves', async () => {
    const out = join(dir, 'converted.onnx');
    const res = await convertModel(join(TFLITE, 'mobilenet_v1_0.25_224.tflite'), out);
    assert.equal(res.format, 'tflite');
    assert.deepEqual(res.outputs, ['features', 'logits', 'output']);
    const ref = await resolveModel(out);
    assert.equal(ref.featureTensor, 'features');
    assert.equal(ref.logitsTensor, 'logits');
    assert.equal(ref.labels?.length, 1001);
  });
});
