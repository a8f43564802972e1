/**
 * TF.js graph model importer, checked against an independent execution: TF.js's own GraphModel (cpu backend) on the
 * same files, fed the same inputs.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, symlink, truncate, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { Backbone } from '../src/engine/backbone.js';
import { GraftError } from '../src/errors.js';
import { defaultSpec } from '../src/image/spec.js';
import { loadTensor } from '../src/image/preprocess.js';
import { importTfjsGraph, SUPPORTED_TFJS_GRAPH_OPS } from '../src/models/importers/tfjs-graph.js';
import { parseOnnx } from '../src/models/onnx-file.js';
import { resolveModel } from '../src/models/resolve.js';
import { convertModel } from '../src/tasks/convert.js';
import { SHARED, SKIP_SHARED } from './helpers/shared.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-tfjs-graph-'));
  await tf.setBackend('cpu');
});
after(async () => rm(dir, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------------------------
// Helpers

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'same length');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Seeded uniform numbers in [lo, hi). */
function random(n: number, seed: number, lo = 0, hi = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return lo + (hi - lo) * (((t ^ (t >>> 14)) >>> 0) / 4294967296);
  });
}

/** [N, H, W, C] ↔ [N, C, H, W]. */
function nhwcToNchw(x: ArrayLike<number>, n: number, h: number, w: number, c: number): Float32Array {
  const out = new Float32Array(n * h * w * c);
  for (let b = 0; b < n; b++) for (let y = 0; y < h; y++) for (let z = 0; z < w; z++) for (let k = 0; k < c; k++) out[((b * c + k) * h + y) * w + z] = x[((b * h + y) * w + z) * c + k]!;
  return out;
}
function nchwToNhwc(x: ArrayLike<number>, n: number, c: number, h: number, w: number): Float32Array {
  const out = new Float32Array(n * h * w * c);
  for (let b = 0; b < n; b++) for (let k = 0; k < c; k++) for (let y = 0; y < h; y++) for (let z = 0; z < w; z++) out[((b * h + y) * w + z) * c + k] = x[((b * c + k) * h + y) * w + z]!;
  return out;
}

/** Load a graph model folder into TF.js from disk (no network, no tfjs-node): the reference execution. */
async function tfjsGraphModel(folder: string): Promise<tf.GraphModel> {
  const j = JSON.parse(await readFile(join(folder, 'model.json'), 'utf8'));
  const groups = j.weightsManifest as { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  const bufs: Buffer[] = [];
  for (const g of groups) for (const p of g.paths) bufs.push(await readFile(join(folder, p)));
  const all = Buffer.concat(bufs);
  const handler: tf.io.IOHandler = {
    load: async () => ({
      modelTopology: j.modelTopology,
      weightSpecs: groups.flatMap((g) => g.weights),
      weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      format: j.format,
      generatedBy: j.generatedBy,
      convertedBy: j.convertedBy,
      signature: j.signature,
      userDefinedMetadata: j.userDefinedMetadata,
    }),
  };
  return tf.loadGraphModel(handler);
}

/** Run the reference on an NHWC batch; returns each named node's output (TF order) and shape. */
function runTfjs(model: tf.GraphModel, input: string, x: Float32Array, shape: number[], outputs: string[]): { data: Float32Array; shape: number[] }[] {
  return tf.tidy(() => {
    const res = model.execute({ [input]: tf.tensor(x, shape) }, outputs);
    return (Array.isArray(res) ? res : [res]).map((t) => ({ data: t.dataSync() as Float32Array, shape: t.shape }));
  });
}

// A small writer of TF.js graph models (GraphDef JSON + one weight shard), for op coverage.
const A = {
  i: (v: number) => ({ i: String(v) }),
  f: (v: number) => ({ f: v }),
  b: (v: boolean) => ({ b: v }),
  s: (v: string) => ({ s: Buffer.from(v).toString('base64') }),
  ints: (v: number[]) => ({ list: { i: v.map(String) } }),
  strs: (v: string[]) => ({ list: { s: v.map((x) => Buffer.from(x).toString('base64')) } }),
  T: { type: 'DT_FLOAT' },
};
type Quant = { dtype: 'uint8' | 'uint16'; scale: number; min: number } | { dtype: 'float16' };
function toHalf(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0]!;
  const sign = (x >>> 16) & 0x8000;
  const e = ((x >>> 23) & 0xff) - 127 + 15;
  const m = (x >>> 13) & 0x3ff;
  if (e <= 0) return sign; // the test values are never tiny
  return sign | (e << 10) | m;
}
class Graph {
  nodes: { name: string; op: string; input?: string[]; attr?: Record<string, unknown> }[] = [];
  weights: Record<string, unknown>[] = [];
  chunks: Buffer[] = [];
  placeholder(name: string, shape: number[]): string {
    this.nodes.push({ name, op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: { dim: shape.map((d) => ({ size: String(d) })) } } } });
    return name;
  }
  const(name: string, shape: number[], values: ArrayLike<number>, dtype: 'float32' | 'int32' = 'float32', quant?: Quant): string {
    const n = shape.reduce((a, b) => a * b, 1);
    assert.equal(values.length, n, `${name}: values for shape`);
    const tfType = dtype === 'int32' ? 'DT_INT32' : 'DT_FLOAT';
    this.nodes.push({ name, op: 'Const', attr: { dtype: { type: tfType }, value: { tensor: { dtype: tfType, tensorShape: { dim: shape.map((d) => ({ size: String(d) })) } } } } });
    let buf: Buffer;
    if (quant?.dtype === 'float16') {
      buf = Buffer.alloc(2 * n);
      for (let i = 0; i < n; i++) buf.writeUInt16LE(toHalf(values[i]!), 2 * i);
    } else if (quant) {
      buf = Buffer.alloc((quant.dtype === 'uint8' ? 1 : 2) * n);
      for (let i = 0; i < n; i++) {
        const q = Math.round((values[i]! - quant.min) / quant.scale);
        if (quant.dtype === 'uint8') buf[i] = q;
        else buf.writeUInt16LE(q, 2 * i);
      }
    } else if (dtype === 'int32') buf = Buffer.from(new Int32Array(Array.from(values)).buffer);
    else buf = Buffer.from(Float32Array.from(values).buffer);
    this.chunks.push(buf);
    this.weights.push({ name, shape, dtype, ...(quant ? { quantization: quant } : {}) });
    return name;
  }
  op(name: string, op: string, input: string[], attr: Record<string, unknown> = {}): string {
    this.nodes.push({ name, op, input, attr: { T: A.T, ...attr } });
    return name;
  }
  async write(folder: string): Promise<string> {
    await mkdir(folder, { recursive: true });
    await writeFile(join(folder, 'group1-shard1of1.bin'), Buffer.concat(this.chunks));
    const json = {
      format: 'graph-model',
      generatedBy: 'graft test',
      convertedBy: 'hand-written',
      modelTopology: { node: this.nodes, library: {}, versions: {} },
      weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: this.weights }],
    };
    await writeFile(join(folder, 'model.json'), JSON.stringify(json));
    return folder;
  }
}

/**
 * Import `folder`, run it on ONNX Runtime and TF.js with the same seeded input, and compare every pair
 * [onnx output, tf node]; returns the largest difference.
 */
async function compare(folder: string, inputShape: number[], pairs: [string, string][], seed = 1): Promise<number> {
  const [n, h, w, c] = inputShape as [number, number, number, number];
  const x = random(n * h * w * c, seed, -1, 1);
  const session = await ort.InferenceSession.create(await importTfjsGraph(join(folder, 'model.json')));
  const model = await tfjsGraphModel(folder);
  try {
    const got = await session.run({ input: new ort.Tensor('float32', nhwcToNchw(x, n, h, w, c), [n, c, h, w]) });
    const want = runTfjs(model, 'x', x, inputShape, pairs.map((p) => p[1]));
    let worst = 0;
    pairs.forEach(([onnxName, tfName], i) => {
      const g = got[onnxName];
      assert.ok(g, `ONNX output ${onnxName} (outputs: ${session.outputNames.join(', ')})`);
      const ref = want[i]!;
      let data = g.data as Float32Array;
      if (ref.shape.length === 4 && g.dims.length === 2) {
        // A pooled [N, 1, 1, C] map is given flattened.
        assert.deepEqual([ref.shape[1], ref.shape[2]], [1, 1], `${onnxName}: TF ${tfName} [${ref.shape}] is a pooled map`);
        assert.deepEqual(g.dims, [ref.shape[0], ref.shape[3]], `${onnxName}: flattened shape of TF ${tfName}`);
      } else if (ref.shape.length === 4) {
        assert.deepEqual(g.dims, [ref.shape[0], ref.shape[3], ref.shape[1], ref.shape[2]], `${onnxName}: NCHW shape of TF ${tfName} [${ref.shape}]`);
        data = nchwToNhwc(data, ...(g.dims as [number, number, number, number]));
      } else assert.deepEqual(g.dims, ref.shape, `${onnxName}: shape of TF ${tfName}`);
      const d = maxAbsDiff(data, ref.data);
      assert.ok(d < 1e-5, `${onnxName} vs ${tfName}: max abs diff ${d}`);
      worst = Math.max(worst, d);
    });
    return worst;
  } finally {
    model.dispose();
    await session.release();
  }
}

async function expectRefused(p: Promise<unknown>, pattern: RegExp, what: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof GraftError, `${what}: a GraftError, got ${String(err)}`);
    assert.match((err as Error).message, pattern, what);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Op coverage on small hand-written graphs (no shared data needed)

describe('TF.js graph importer: ops against TF.js execution', () => {
  test('conv net: explicit/SAME/VALID padding, fused conv and depthwise, batch norm, pools, pad, concat, mean, fused matmul, softmax', async () => {
    const g = new Graph();
    const x = g.placeholder('x', [-1, 9, 9, 3]);
    const r = (n: number, s: number, lo = -0.5, hi = 0.5) => random(n, s, lo, hi);
    const nhwc = { data_format: A.s('NHWC') };
    const c1 = g.op('c1', 'Conv2D', [x, g.const('w1', [3, 3, 3, 4], r(108, 2))], { ...nhwc, strides: A.ints([1, 2, 2, 1]), dilations: A.ints([1, 1, 1, 1]), padding: A.s('EXPLICIT'), explicit_paddings: A.ints([0, 0, 1, 2, 2, 1, 0, 0]) });
    const ba = g.op('ba', 'BiasAdd', [c1, g.const('b1', [4], r(4, 3))], nhwc);
    const r1 = g.op('r1', 'Relu', [ba]);
    const d1 = g.op('d1', 'FusedDepthwiseConv2dNative', [r1, g.const('dw', [3, 3, 4, 2], r(72, 4)), g.const('bdw', [8], r(8, 5))], {
      ...nhwc, strides: A.ints([1, 1, 1, 1]), dilations: A.ints([1, 2, 2, 1]), padding: A.s('SAME'), fused_ops: A.strs(['BiasAdd', 'Relu6']), num_args: A.i(1),
    });
    const bn = g.op('bn', 'FusedBatchNormV3', [d1, g.const('sc', [8], r(8, 6, 0.5, 1.5)), g.const('of', [8], r(8, 7)), g.const('mu', [8], r(8, 8)), g.const('va', [8], r(8, 9, 0.5, 2))], { ...nhwc, epsilon: A.f(0.001), is_training: A.b(false) });
    const mp = g.op('mp', 'MaxPool', [bn], { ...nhwc, ksize: A.ints([1, 3, 3, 1]), strides: A.ints([1, 2, 2, 1]), padding: A.s('SAME') });
    const pd = g.op('pd', 'Pad', [mp, g.const('pads', [4, 2], [0, 0, 1, 0, 0, 1, 0, 0], 'int32')], { Tpaddings: { type: 'DT_INT32' } });
    const ap = g.op('ap', 'AvgPool', [pd], { ...nhwc, ksize: A.ints([1, 2, 2, 1]), strides: A.ints([1, 1, 1, 1]), padding: A.s('SAME') });
    const mu = g.op('mulc', 'Mul', [ap, g.const('cvec', [8], r(8, 10))]);
    const ad = g.op('addc', 'AddV2', [mu, g.const('c4', [1, 1, 1, 8], r(8, 11))]);
    const el = g.op('el', 'Elu', [ad]);
    const cc = g.op('cc', 'ConcatV2', [el, ad, g.const('axis', [], [-1], 'int32')], { N: A.i(2), Tidx: { type: 'DT_INT32' } });
    const lr = g.op('lr', 'LeakyRelu', [cc], { alpha: A.f(0.1) });
    const fc = g.op('fc', '_FusedConv2D', [lr, g.const('w2', [1, 1, 16, 6], r(96, 12)), g.const('b2', [6], r(6, 13))], {
      ...nhwc, strides: A.ints([1, 1, 1, 1]), dilations: A.ints([1, 1, 1, 1]), padding: A.s('VALID'), fused_ops: A.strs(['BiasAdd', 'Relu']), num_args: A.i(1),
    });
    const mean = g.op('mean', 'Mean', [fc, g.const('axes', [2], [1, 2], 'int32')], { keep_dims: A.b(false), Tidx: { type: 'DT_INT32' } });
    const mm = g.op('mm', '_FusedMatMul', [mean, g.const('wm', [6, 5], r(30, 14)), g.const('bm', [5], r(5, 15))], { transpose_a: A.b(false), transpose_b: A.b(false), fused_ops: A.strs(['BiasAdd']), num_args: A.i(1) });
    g.op('sm', 'Softmax', [mm]);
    const folder = await g.write(join(dir, 'convnet'));
    const d = await compare(folder, [2, 9, 9, 3], [['features', 'mean'], ['logits', 'mm'], ['output', 'sm']]);
    assert.ok(d < 1e-5, `max abs diff ${d}`);
    const info = parseOnnx(await importTfjsGraph(folder), folder).info;
    assert.deepEqual(info.outputs.map((o) => o.name), ['features', 'logits', 'output']);
    assert.deepEqual(info.inputs[0]!.shape, ['batch', 3, 9, 9]);
  });

  test('layout-sensitive ops: reductions keeping TF dim order, reshapes to and from 4-D, squeeze, broadcasting, several outputs', async () => {
    const g = new Graph();
    const x = g.placeholder('x', [-1, 4, 6, 3]);
    const s1 = g.op('s1', 'Sigmoid', [x]);
    const a = g.op('a', 'Sub', [x, s1]);
    g.op('m1', 'Mean', [a, g.const('ax1', [1], [1], 'int32')], { keep_dims: A.b(false) }); // [N, 6, 3]
    const m2 = g.op('m2', 'Max', [a, g.const('ax3', [1], [-1], 'int32')], { keep_dims: A.b(true) }); // [N, 4, 6, 1]
    g.op('sq', 'Squeeze', [m2], { squeeze_dims: A.ints([3]) }); // [N, 4, 6]
    const rs = g.op('rs', 'Reshape', [a, g.const('shp', [2], [-1, 72], 'int32')]);
    g.op('mm', 'MatMul', [rs, g.const('wm', [2, 72], random(144, 21, -0.2, 0.2))], { transpose_a: A.b(false), transpose_b: A.b(true) }); // NHWC flatten order
    g.op('rs4', 'Reshape', [a, g.const('shp4', [4], [-1, 6, 4, 3], 'int32')]); // 4-D to 4-D
    const sqr = g.op('sqr', 'Square', [x]);
    const ad = g.op('ad', 'Add', [sqr, g.const('one', [], [1])]);
    g.op('rsq', 'Rsqrt', [ad]);
    g.op('pv', 'PadV2', [x, g.const('pads', [4, 2], [0, 0, 0, 1, 2, 0, 0, 0], 'int32'), g.const('pval', [], [0.5])]);
    g.op('pr', 'Prelu', [x, g.const('alpha', [3], [0.1, 0.2, 0.3])]);
    const t = g.op('th', 'Tanh', [x]);
    g.op('mx', 'Maximum', [t, g.const('rowc', [6, 1], random(6, 22))]); // a rank-2 constant broadcast against NHWC
    const folder = await g.write(join(dir, 'layout'));
    const names = ['m1', 'sq', 'mm', 'rs4', 'rsq', 'pv', 'pr', 'mx'];
    const d = await compare(folder, [3, 4, 6, 3], names.map((n, i) => [i === 0 ? 'output' : `output_${i}`, n]));
    assert.ok(d < 1e-5, `max abs diff ${d}`);
  });

  test('quantised weights (uint8 and uint16 with scale/min, float16) are dequantised like TF.js does', async () => {
    const g = new Graph();
    const x = g.placeholder('x', [-1, 5, 5, 3]);
    const w = Float32Array.from(random(3 * 3 * 3 * 4, 31), (v) => Math.round(v * 255) / 255 * 0.5 - 0.25);
    const c = g.op('c', 'Conv2D', [x, g.const('w', [3, 3, 3, 4], w, 'float32', { dtype: 'uint8', scale: 0.5 / 255, min: -0.25 })], { data_format: A.s('NHWC'), strides: A.ints([1, 1, 1, 1]), padding: A.s('SAME'), dilations: A.ints([1, 1, 1, 1]) });
    const b = g.op('b', 'BiasAdd', [c, g.const('bias', [4], [0.125, -0.25, 0.5, 1], 'float32', { dtype: 'float16' })], { data_format: A.s('NHWC') });
    const s = g.op('s', 'Mul', [b, g.const('scale', [4], [0.5, 1, 1.5, 2].map((v) => v), 'float32', { dtype: 'uint16', scale: 0.5, min: 0 })]);
    g.op('pool', 'Mean', [s, g.const('axes', [2], [1, 2], 'int32')], { keep_dims: A.b(true) });
    const folder = await g.write(join(dir, 'quant'));
    const d = await compare(folder, [1, 5, 5, 3], [['features', 'pool']]);
    assert.ok(d < 1e-5, `max abs diff ${d}`);
  });

  test('an unsupported op is refused at import time, naming the op and the node', async () => {
    const g = new Graph();
    const x = g.placeholder('x', [-1, 4, 4, 3]);
    g.op('my/odd_node', 'Cumsum', [x, g.const('axis', [], [1], 'int32')]);
    const folder = await g.write(join(dir, 'unsupported'));
    await expectRefused(importTfjsGraph(join(folder, 'model.json')), /node 'my\/odd_node' \(op Cumsum\) is not supported/, 'unsupported op');
    assert.ok(!SUPPORTED_TFJS_GRAPH_OPS.includes('Cumsum' as never), 'Cumsum is not in the supported list');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The shared TF Hub MobileNet v2 0.5/96 feature vector

describe('TF.js graph importer: shared MobileNet v2 0.5/96 feature vector', { skip: SKIP_SHARED }, () => {
  const folder = () => join(SHARED!, 'models', 'tfjs_graph', 'mobilenet_v2_0.50_96_feature_vector');
  const photo = () => join(SHARED!, 'data', 'imagenet', 'samples', 'n02123045_tabby.JPEG');
  const spec = (layout: 'NCHW' | 'NHWC') => defaultSpec({ size: [96, 96], mean: [0, 0, 0], std: [1, 1, 1], layout });

  test('features equal TF.js execution of the graph model within 1e-4 (seeded random image and a photo)', async () => {
    const session = await ort.InferenceSession.create(await importTfjsGraph(join(folder(), 'model.json')));
    const model = await tfjsGraphModel(folder());
    try {
      assert.deepEqual(session.inputNames, ['input']);
      assert.deepEqual(session.outputNames, ['features']);
      const rnd = random(96 * 96 * 3, 7);
      const inputs: [string, Float32Array][] = [
        ['seeded random image', rnd],
        ['tabby photo', await loadTensor(photo(), spec('NHWC'))],
      ];
      // A batch of both at once too (the batch dimension is free).
      const both = new Float32Array(2 * rnd.length);
      both.set(inputs[0]![1], 0);
      both.set(inputs[1]![1], rnd.length);
      for (const [what, x, n] of [...inputs.map(([w, v]) => [w, v, 1] as const), ['batch of 2', both, 2] as const]) {
        const got = await session.run({ input: new ort.Tensor('float32', nhwcToNchw(x, n, 96, 96, 3), [n, 3, 96, 96]) });
        const [want] = runTfjs(model, 'images', x, [n, 96, 96, 3], ['module_apply_default/hub_output/feature_vector/SpatialSqueeze']);
        assert.deepEqual(got.features!.dims, [n, 1280], `${what}: features shape`);
        assert.deepEqual(want!.shape, [n, 1280], `${what}: TF.js shape`);
        const d = maxAbsDiff(got.features!.data as Float32Array, want!.data);
        console.log(`# ${what}: max abs diff ${d.toExponential(2)} (TF.js cpu vs ONNX Runtime)`);
        assert.ok(d < 1e-4, `${what}: max abs diff ${d}`);
        assert.ok(Math.max(...(got.features!.data as Float32Array)) > 0.1, `${what}: features are not all ~0`);
      }
    } finally {
      model.dispose();
      await session.release();
    }
  });

  test('resolveModel / Backbone.load on the folder: no flags needed (preprocessing from the ONNX metadata)', async () => {
    const saved = process.env.GRAFT_HOME;
    process.env.GRAFT_HOME = join(dir, 'home-resolve');
    try {
      const ref = await resolveModel(folder());
      assert.deepEqual(ref.spec.size, [96, 96]);
      assert.deepEqual(ref.spec.mean, [0, 0, 0]);
      assert.deepEqual(ref.spec.std, [1, 1, 1]);
      assert.equal(ref.spec.layout, 'NCHW');
      assert.equal(ref.spec.channelOrder, 'RGB');
      assert.deepEqual(ref.warnings, []);
      assert.match(ref.specSource, /model metadata/);
      assert.equal(ref.featureTensor, 'features');
      assert.equal(ref.logitsTensor, undefined);

      const bb = await Backbone.load(folder());
      const model = await tfjsGraphModel(folder());
      try {
        const res = await bb.features([photo()]);
        assert.equal(res.features.length, 1280);
        const x = await loadTensor(photo(), { ...bb.spec, layout: 'NHWC' });
        const [want] = runTfjs(model, 'images', x, [1, 96, 96, 3], ['module_apply_default/hub_output/feature_vector/SpatialSqueeze']);
        const d = maxAbsDiff(res.features, want!.data);
        console.log(`# Backbone.features vs TF.js on the photo: max abs diff ${d.toExponential(2)}`);
        assert.ok(d < 1e-4, `Backbone features vs TF.js: max abs diff ${d}`);
      } finally {
        model.dispose();
        await bb.dispose();
      }
    } finally {
      if (saved === undefined) delete process.env.GRAFT_HOME;
      else process.env.GRAFT_HOME = saved;
    }
  });

  test('the catalog entry mobilenet_v2_0.50_96_feature_vector pulls from a mirror and runs through the importer', async () => {
    const mirror = join(dir, 'mirror');
    await mkdir(mirror, { recursive: true });
    await symlink(folder(), join(mirror, 'mobilenet_v2_0.50_96_feature_vector'));
    const saved = { home: process.env.GRAFT_HOME, mirror: process.env.GRAFT_MIRROR };
    process.env.GRAFT_HOME = join(dir, 'home-catalog');
    process.env.GRAFT_MIRROR = mirror;
    try {
      const bb = await Backbone.load('mobilenet_v2_0.50_96_feature_vector');
      try {
        assert.deepEqual(bb.spec.size, [96, 96]);
        assert.deepEqual(bb.spec.std, [1, 1, 1]);
        const res = await bb.features([photo()]);
        assert.equal(res.features.length, 1280);
      } finally {
        await bb.dispose();
      }
    } finally {
      for (const [k, v] of [['GRAFT_HOME', saved.home], ['GRAFT_MIRROR', saved.mirror]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  test('convertModel and `graft convert <folder> --out x.onnx` write an ONNX file with the features output', async () => {
    const out = join(dir, 'mnv2.onnx');
    const res = await convertModel(folder(), out);
    assert.equal(res.format, 'tfjs-graph');
    assert.deepEqual(res.outputs, ['features']);
    const info = parseOnnx(await readFile(out), out).info;
    assert.equal(info.metadata['Image.NominalPixelRange'], 'Normalized_0_1');
    assert.equal(info.metadata['Image.BitmapPixelFormat'], 'Rgb8');
    assert.deepEqual(info.inputs[0]!.shape, ['batch', 3, 96, 96]);

    const cliOut = join(dir, 'cli.onnx');
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'src', 'cli', 'entry.ts'), 'convert', folder(), '--out', cliOut, '--json'], {
      encoding: 'utf8',
      env: { ...process.env, GRAFT_HOME: join(dir, 'home-cli') },
      timeout: 120_000,
    });
    assert.equal(r.status, 0, `graft convert exit code (stderr: ${r.stderr})`);
    const j = JSON.parse(r.stdout);
    assert.equal(j.format, 'tfjs-graph');
    assert.deepEqual(j.outputs, ['features']);
    assert.ok((await readFile(cliOut)).length > 2e6, 'ONNX file written');
  });

  describe('untrusted files: refused with a clear error, nothing outside the folder read', () => {
    /** A copy of the model folder, with model.json passed through `edit`. */
    const copy = async (name: string, edit: (j: Record<string, any>) => void = () => {}): Promise<string> => {
      const d = join(dir, 'bad', name, 'model');
      await mkdir(d, { recursive: true });
      for (const f of await readdir(folder())) await copyFile(join(folder(), f), join(d, f));
      const j = JSON.parse(await readFile(join(d, 'model.json'), 'utf8'));
      edit(j);
      await writeFile(join(d, 'model.json'), JSON.stringify(j));
      return d;
    };
    /** Refused by the importer and by convert with `pattern`; by resolveModel with `resolvePattern`. */
    const both = async (d: string, pattern: RegExp, what: string, resolvePattern = pattern) => {
      await expectRefused(importTfjsGraph(join(d, 'model.json')), pattern, `${what} (importer)`);
      await expectRefused(convertModel(d, join(d, '..', 'out.onnx')), pattern, `${what} (convert)`);
      const saved = process.env.GRAFT_HOME;
      process.env.GRAFT_HOME = join(dir, 'home-bad');
      try {
        await expectRefused(resolveModel(d), resolvePattern, `${what} (resolveModel)`);
      } finally {
        if (saved === undefined) delete process.env.GRAFT_HOME;
        else process.env.GRAFT_HOME = saved;
      }
    };

    test('a shard path leaving the folder (../, absolute, %2e%2e), even when the file outside exists with the right size', async () => {
      for (const [name, p] of [['dotdot', '../group1-shard1of1.bin'], ['abs', '/etc/passwd'], ['escaped', '%2e%2e/group1-shard1of1.bin'], ['nested', 'a/../../group1-shard1of1.bin']]) {
        const d = await copy(name, (j) => (j.weightsManifest[0].paths = [p]));
        await copyFile(join(folder(), 'group1-shard1of1.bin'), join(d, '..', 'group1-shard1of1.bin'));
        // resolveModel's format sniffing (store-checks.ts) sets aside a model.json it cannot accept, so the folder is
        // then refused as "not an ONNX model file": still refused, nothing read.
        await both(d, /refused file path .*leaves the model's folder/, `shard path ${p}`, /refused file path .*leaves the model's folder|is a folder, not an ONNX model file/);
      }
    });

    test('a shard that is a link leading out of the folder', async () => {
      const d = await copy('link');
      await rm(join(d, 'group1-shard1of1.bin'));
      await copyFile(join(folder(), 'group1-shard1of1.bin'), join(d, '..', 'outside.bin'));
      await symlink(join(d, '..', 'outside.bin'), join(d, 'group1-shard1of1.bin'));
      await both(d, /link leading out of the model's folder/, 'symlinked shard');
    });

    test('a missing, truncated or too long shard', async () => {
      const missing = await copy('missing');
      await rm(join(missing, 'group1-shard1of1.bin'));
      await both(missing, /weight shard 'group1-shard1of1.bin' is missing/, 'missing shard');
      const short = await copy('truncated');
      await truncate(join(short, 'group1-shard1of1.bin'), 1000);
      await both(short, /hold 1000 bytes, the manifest needs 2713640 \(truncated/, 'truncated shard');
      const long = await copy('long');
      await appendFile(join(long, 'group1-shard1of1.bin'), Buffer.alloc(4));
      await both(long, /hold 2713644 bytes, the manifest needs 2713640 \(too long/, 'too long shard');
    });

    test('garbage in place of model.json, and a graph naming nodes that do not exist', async () => {
      const garbage = await copy('garbage');
      await writeFile(join(garbage, 'model.json'), Buffer.from([0x7b, 0x00, 0xff, 0x13, 0x37]));
      await expectRefused(importTfjsGraph(join(garbage, 'model.json')), /model\.json: not a TF\.js model\.json \(not valid JSON/, 'garbage model.json (importer)');
      await expectRefused(convertModel(garbage, join(dir, 'x.onnx')), /model\.json: not a TF\.js model\.json \(not valid JSON/, 'garbage model.json (convert)');
      const dangling = await copy('dangling', (j) => (j.modelTopology.node.at(-1).input = ['no/such/node']));
      await expectRefused(importTfjsGraph(join(dangling, 'model.json')), /input 'no\/such\/node' is not a node of the graph/, 'dangling input');
      const noNodes = await copy('nonodes', (j) => (j.modelTopology.node = 'nope'));
      await expectRefused(importTfjsGraph(join(noNodes, 'model.json')), /not a TF\.js graph model/, 'no node list');
    });
  });
});
