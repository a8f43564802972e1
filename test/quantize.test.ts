/**
 * int8 static quantisation (graft quantize): small graphs built here, quantised and run on ONNX Runtime against their
 * float selves within error bounds derived from the scales; ORT fuses the QDQ graph into integer kernels;
 * calibration is deterministic; ops with no int8 path stay float with a message; the real MobileNet keeps its
 * features (cosine >= 0.99); the CLI command.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { buildOnnx, type GraphSpec } from './helpers/onnx-builder.js';
import { OrtModel } from '../src/engine/ort.js';
import { compareModels, loadCalibrationImages, quantizeOnnx, type CalibrationImages, type QuantizeOptions } from '../src/engine/quantize/index.js';
import { tensorValues } from '../src/engine/quantize/graph.js';
import { entropyThreshold, percentileThreshold } from '../src/engine/quantize/ranges.js';
import { defaultSpec, type PreprocessSpec } from '../src/image/spec.js';
import { parseOnnx } from '../src/models/onnx-file.js';
import { resolveModel } from '../src/models/resolve.js';
import { quantizeTask } from '../src/tasks/quantize.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

const root = join(import.meta.dirname, '..');
let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-quantize-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Deterministic numbers in [-1, 1). */
function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}
function values(n: number, seed: number, scale = 1): number[] {
  const r = rand(seed);
  return Array.from({ length: n }, () => scale * r());
}

/** Calibration "images" for a model with input [N, ...shape]: random tensors, as the quantiser takes them. */
function calibration(n: number, shape: number[], seed: number, scale = 1): CalibrationImages {
  const per = shape.reduce((a, b) => a * b, 1);
  return { data: Float32Array.from(values(n * per, seed, scale)), n, shape, paths: [], skipped: [] };
}

async function run(bytes: Uint8Array, x: Float32Array, shape: number[], output: string): Promise<Float32Array> {
  const m = await OrtModel.create(parseOnnx(bytes, 'm.onnx'), [output], { threads: 1, parallelism: 'intra-op' });
  try {
    return (await m.run(x, shape))[output]!.data;
  } finally {
    await m.dispose();
  }
}

/** The op types of the graph ONNX Runtime actually runs (its optimised model). */
async function optimisedOps(bytes: Uint8Array, name: string): Promise<string[]> {
  const path = join(dir, `${name}.opt.onnx`);
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all', optimizedModelFilePath: path, logSeverityLevel: 3 });
  await s.release();
  return parseOnnx(new Uint8Array(readFileSync(path)), path).info.nodes.map((n) => n.opType);
}

/** The values of an initializer of a model. */
function tensorOf(bytes: Uint8Array, name: string): Float64Array {
  const t = parseOnnx(bytes, 'm').proto.graph!.initializer!.find((i) => i.name === name);
  assert.ok(t, `no initializer ${name}`);
  return tensorValues(t);
}

const spec8: PreprocessSpec = defaultSpec({ size: [8, 8] });
const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const act = (lo: number, hi: number) => (Math.max(hi, 0) - Math.min(lo, 0)) / 255;

/**
 * Bound on |int8 - float| of y = sum_k w_k x_k + b over K terms, with x quantised at step sx (|x| <= xMax), weights at
 * step sw (|w| <= wMax), the int32 bias at step sx*sw, the output at step sy: each product errs by at most
 * |w| sx/2 + |x| sw/2 + sx sw/4, the bias by sx sw/2, the output rounding by sy/2. Clamps (Relu, Clip, the int8
 * range) only shrink differences.
 */
function bound(k: number, wMax: number, sw: number, xMax: number, sx: number, sy: number): number {
  return k * (wMax * sx / 2 + xMax * sw / 2 + sx * sw / 4) + sx * sw / 2 + sy / 2 + 1e-5;
}

// ---------------------------------------------------------------------------------------------------------------------
// A conv block as exporters write it: Pad (explicit) -> Conv without bias -> Mul/Add per channel (batch norm) ->
// Relu -> Clip(0, 6).

const CIN = 3, COUT = 4, HW = 8;
const convW = values(COUT * CIN * 9, 1, 0.6);
const bnMul = [1.5, 0.5, 2, 1];
const bnAdd = [0.3, -0.2, 0.5, 1];
const convBlock: GraphSpec = {
  inputs: [{ name: 'x', shape: ['N', CIN, HW, HW] }],
  outputs: ['y'],
  initializers: [
    { name: 'pads', dims: [8], values: [0, 0, 1, 1, 0, 0, 1, 1], dataType: 7 },
    { name: 'w', dims: [COUT, CIN, 3, 3], values: convW },
    { name: 'm', dims: [1, COUT, 1, 1], values: bnMul },
    { name: 'a', dims: [1, COUT, 1, 1], values: bnAdd },
    { name: 'lo', dims: [], values: [0] },
    { name: 'hi', dims: [], values: [6] },
  ],
  nodes: [
    { op: 'Pad', inputs: ['x', 'pads'], outputs: ['xp'] },
    { op: 'Conv', inputs: ['xp', 'w'], outputs: ['c'], attrs: { kernel_shape: { ints: [3, 3] } } },
    { op: 'Mul', inputs: ['c', 'm'], outputs: ['cm'] },
    { op: 'Add', inputs: ['cm', 'a'], outputs: ['ca'] },
    { op: 'Relu', inputs: ['ca'], outputs: ['r'] },
    { op: 'Clip', inputs: ['r', 'lo', 'hi'], outputs: ['y'] },
  ],
};

describe('quantised vs float on small graphs', () => {
  const exact: QuantizeOptions = { method: 'minmax', biasCorrection: false };

  test('Conv + batch norm + Relu + Clip(0,6): one QLinearConv, within the bound from the scales', async () => {
    const bytes = buildOnnx(convBlock);
    const cal = calibration(16, [CIN, HW, HW], 7, 2);
    const res = await quantizeOnnx(parseOnnx(bytes, 'block.onnx'), cal, exact);
    assert.equal(res.quantized, true);
    assert.equal(res.nodes.length, 1);
    assert.equal(res.folded, 2, 'Mul and Add folded into the conv');
    assert.equal(res.foldedPads, 1);
    assert.equal(res.removedActivations, 2, 'Relu and Clip absorbed by the uint8 range');
    const ops = parseOnnx(res.bytes, 'q').info.nodes.map((n) => n.opType);
    for (const gone of ['Pad', 'Mul', 'Add', 'Relu', 'Clip']) assert.ok(!ops.includes(gone), `${gone} left in ${ops.join(',')}`);
    // ORT runs QLinearConv in NHWC: the Transposes around it are its own layout change.
    assert.deepEqual((await optimisedOps(res.bytes, 'block')).filter((o) => o !== 'Transpose'), ['QuantizeLinear', 'QLinearConv', 'DequantizeLinear'], 'ORT fuses the QDQ conv');

    const x = cal.data;
    const shape = [16, CIN, HW, HW];
    const yf = await run(bytes, x, shape, 'y');
    const yq = await run(res.bytes, x, shape, 'y');
    const sx = act(Math.min(...x), Math.max(...x));
    const sy = Math.min(6, Math.max(...yf)) / 255;
    const perOut = CIN * 9;
    let worst = 0;
    for (let c = 0; c < COUT; c++) {
      const wc = convW.slice(c * perOut, (c + 1) * perOut).map((v) => v * bnMul[c]!);
      const b = bound(perOut, maxAbs(wc), maxAbs(wc) / 127, maxAbs(x), sx, sy);
      for (let i = 0; i < 16; i++) {
        for (let j = 0; j < HW * HW; j++) {
          const at = (i * COUT + c) * HW * HW + j;
          const err = Math.abs(yq[at]! - yf[at]!);
          worst = Math.max(worst, err / b);
          assert.ok(err <= b, `channel ${c}: |${yq[at]} - ${yf[at]}| = ${err} > bound ${b}`);
        }
      }
    }
    assert.ok(Math.min(...yq) >= 0 && Math.max(...yq) <= 6 + 1e-6, 'Relu and Clip still hold');
    assert.ok(worst > 0.01, `bound is not vacuous (worst error ${worst} of it)`);
  });

  test('depthwise Conv: per-channel weight scales keep a channel 1000x smaller than another, within the bound', async () => {
    const C = 4;
    const mags = [0.01, 0.1, 1, 10];
    const w = values(C * 9, 3).map((v, i) => v * mags[Math.floor(i / 9)]!);
    const b = [0.01, -0.05, 0.2, 1];
    const spec: GraphSpec = {
      inputs: [{ name: 'x', shape: ['N', C, HW, HW] }],
      outputs: ['y'],
      initializers: [{ name: 'w', dims: [C, 1, 3, 3], values: w }, { name: 'b', dims: [C], values: b }],
      nodes: [
        { op: 'Conv', inputs: ['x', 'w', 'b'], outputs: ['c'], attrs: { group: { i: C }, kernel_shape: { ints: [3, 3] }, pads: { ints: [1, 1, 1, 1] } } },
        { op: 'Relu', inputs: ['c'], outputs: ['r'] },
        { op: 'Identity', inputs: ['r'], outputs: ['y'] },
      ],
    };
    const bytes = buildOnnx(spec);
    const cal = calibration(8, [C, HW, HW], 11);
    const x = cal.data;
    const shape = [8, C, HW, HW];
    const yf = await run(bytes, x, shape, 'y');
    const perChannel = await quantizeOnnx(parseOnnx(bytes, 'dw.onnx'), cal, exact);
    assert.deepEqual(perChannel.nodes, [{ node: 'Conv_0', op: 'Conv', depthwise: true }]);
    assert.ok((await optimisedOps(perChannel.bytes, 'dw')).includes('QLinearConv'));
    const perTensor = await quantizeOnnx(parseOnnx(bytes, 'dw.onnx'), cal, { ...exact, perChannel: false });
    const yc = await run(perChannel.bytes, x, shape, 'y');
    const yt = await run(perTensor.bytes, x, shape, 'y');
    const sx = act(Math.min(...x), Math.max(...x));
    const sy = Math.max(...yf) / 255;
    const channelErr = (yq: Float32Array, c: number) => {
      let e = 0;
      for (let i = 0; i < 8; i++) for (let j = 0; j < HW * HW; j++) e = Math.max(e, Math.abs(yq[(i * C + c) * HW * HW + j]! - yf[(i * C + c) * HW * HW + j]!));
      return e;
    };
    for (let c = 0; c < C; c++) {
      const wc = w.slice(c * 9, (c + 1) * 9);
      // The output step sy is shared by all channels (one activation scale), the weight step is the channel's own.
      const bd = bound(9, maxAbs(wc), maxAbs(wc) / 127, maxAbs(x), sx, sy);
      assert.ok(channelErr(yc, c) <= bd, `channel ${c}: ${channelErr(yc, c)} > ${bd}`);
    }
    // One weight scale per channel, following the channel magnitudes (max |w_c| / 127).
    const scales = tensorOf(perChannel.bytes, 'Conv_0_weight_scale');
    assert.equal(scales.length, C);
    for (let c = 0; c < C; c++) assert.ok(Math.abs(scales[c]! - maxAbs(w.slice(c * 9, (c + 1) * 9)) / 127) < 1e-6 * mags[c]!, `scale ${c}`);
    assert.equal(tensorOf(perTensor.bytes, 'Conv_0_weight_scale').length, 1);
    // With one scale for all, the 0.01 channel's weights all round to 0 (they are < half a step of the 10 channel's
    // scale); per channel they use the whole int8 range.
    const small = (bytes: Uint8Array) => Array.from(tensorOf(bytes, 'Conv_0_weight_quantized').slice(0, 9));
    assert.deepEqual(small(perTensor.bytes), new Array(9).fill(0));
    assert.equal(maxAbs(small(perChannel.bytes)), 127);
  });

  test('Gemm (per-channel) and MatMul (per-column) within the bound; ORT runs them as integer ops', async () => {
    const K = 16, N = 8;
    const B = values(K * N, 5, 0.5);
    const C = values(N, 6, 0.2);
    const mk = (op: 'Gemm' | 'MatMul'): GraphSpec => ({
      inputs: [{ name: 'x', shape: ['N', K] }],
      outputs: ['y'],
      initializers: [{ name: 'B', dims: [K, N], values: B }, ...(op === 'Gemm' ? [{ name: 'C', dims: [N], values: C }] : [])],
      nodes: [
        { op, inputs: op === 'Gemm' ? ['x', 'B', 'C'] : ['x', 'B'], outputs: ['g'] },
        { op: 'Relu', inputs: ['g'], outputs: ['r'] },
        { op: 'Identity', inputs: ['r'], outputs: ['y'] },
      ],
    });
    for (const op of ['Gemm', 'MatMul'] as const) {
      const bytes = buildOnnx(mk(op));
      const cal = calibration(32, [K], 9);
      const res = await quantizeOnnx(parseOnnx(bytes, `${op}.onnx`), cal, exact);
      assert.equal(res.nodes.length, 1, op);
      const fused = await optimisedOps(res.bytes, op);
      assert.ok(fused.includes(op === 'Gemm' ? 'QGemm' : 'QLinearMatMul') || fused.includes('MatMulIntegerToFloat'), `${op}: ${fused.join(',')}`);
      const x = cal.data;
      const yf = await run(bytes, x, [32, K], 'y');
      const yq = await run(res.bytes, x, [32, K], 'y');
      const sx = act(Math.min(...x), Math.max(...x));
      const sy = Math.max(...yf) / 255;
      for (let j = 0; j < N; j++) {
        const col = Array.from({ length: K }, (_, k) => B[k * N + j]!);
        const bd = bound(K, maxAbs(col), maxAbs(col) / 127, maxAbs(x), sx, sy);
        for (let i = 0; i < 32; i++) assert.ok(Math.abs(yq[i * N + j]! - yf[i * N + j]!) <= bd, `${op} [${i},${j}]: ${yq[i * N + j]} vs ${yf[i * N + j]} (bound ${bd})`);
      }
    }
  });
});

describe('calibration', () => {
  test('same images and method give byte-identical models (minmax, percentile, entropy)', async () => {
    const bytes = buildOnnx(convBlock);
    const per = [CIN, HW, HW];
    for (const method of ['minmax', 'percentile', 'entropy'] as const) {
      const a = await quantizeOnnx(parseOnnx(bytes, 'b.onnx'), calibration(12, per, 21, 2), { method });
      const b = await quantizeOnnx(parseOnnx(bytes, 'b.onnx'), calibration(12, per, 21, 2), { method });
      assert.ok(Buffer.from(a.bytes).equals(Buffer.from(b.bytes)), `${method}: two runs differ`);
      const c = await quantizeOnnx(parseOnnx(bytes, 'b.onnx'), calibration(12, per, 22, 2), { method });
      assert.ok(!Buffer.from(a.bytes).equals(Buffer.from(c.bytes)), `${method}: other images, same model`);
    }
  });

  test('percentile and entropy thresholds on known histograms', () => {
    // Uniform mass on [0, 1) plus one far outlier bin: the 99th percentile sits near 1, minmax would take 8.
    const hist = new Float64Array(2048);
    for (let i = 0; i < 256; i++) hist[i] = 100;
    hist[2047] = 1;
    const edge = 8;
    const p = percentileThreshold(hist, edge, 99);
    assert.ok(p > 0.95 && p <= 1.0, `percentile ${p}`);
    assert.equal(percentileThreshold(hist, edge, 100), edge);
    // A sparse outlier costs KL nothing (Q reproduces an isolated bin exactly): entropy keeps it, as TensorRT does.
    assert.equal(entropyThreshold(hist, edge, 128), edge);
    // A long dense tail (|x| of a Laplace-like activation): entropy clips inside it, well above the bulk.
    const tail = Float64Array.from({ length: 2048 }, (_, i) => Math.round(1e6 * Math.exp(-i / 100)) + 1);
    const e = entropyThreshold(tail, edge, 128);
    assert.ok(e > percentileThreshold(tail, edge, 90) && e < 0.75 * edge, `entropy threshold ${e}`);
  });

  test('calibration images: spread over the sorted folder, unreadable ones replaced', async () => {
    const d = join(dir, 'calib');
    await mkdir(join(d, 'a'), { recursive: true });
    await mkdir(join(d, 'b'), { recursive: true });
    for (let i = 0; i < 4; i++) {
      for (const cls of ['a', 'b']) {
        await sharp({ create: { width: 12, height: 10, channels: 3, background: { r: 40 * i, g: cls === 'a' ? 10 : 200, b: 90 } } }).png().toFile(join(d, cls, `${i}.png`));
      }
    }
    await writeFile(join(d, 'a', '0.png'), 'not a png');
    const imgs = await loadCalibrationImages(d, spec8, 4);
    assert.equal(imgs.n, 4);
    assert.equal(imgs.skipped.length, 1);
    assert.ok(imgs.paths.some((p) => p.includes(join('calib', 'a'))) && imgs.paths.some((p) => p.includes(join('calib', 'b'))), imgs.paths.join(' '));
  });
});

describe('what cannot be quantised stays float, with a message', () => {
  test('an op with no int8 path stays float and is listed; the conv around it is quantised', async () => {
    const spec: GraphSpec = {
      inputs: [{ name: 'x', shape: ['N', 2, 4, 4] }],
      outputs: ['y'],
      initializers: [{ name: 'w', dims: [3, 2, 1, 1], values: values(6, 2) }, { name: 'w2', dims: [3, 3, 1, 1], values: values(9, 3) }],
      nodes: [
        { op: 'Conv', inputs: ['x', 'w'], outputs: ['c'], name: 'conv1' },
        { op: 'Softplus', inputs: ['c'], outputs: ['s'], name: 'softplus' },
        { op: 'Conv', inputs: ['s', 'w2'], outputs: ['c2'], name: 'conv2' },
        { op: 'Sin', inputs: ['c2'], outputs: ['y'], name: 'sin' },
      ],
    };
    const bytes = buildOnnx(spec);
    const cal = calibration(4, [2, 4, 4], 4);
    const res = await quantizeOnnx(parseOnnx(bytes, 'mixed.onnx'), cal, { method: 'minmax' });
    assert.equal(res.quantized, true);
    assert.deepEqual(res.nodes.map((n) => n.node), ['conv1', 'conv2']);
    assert.deepEqual(res.float.map((f) => `${f.op} ${f.node}`).sort(), ['Sin sin', 'Softplus softplus']);
    assert.match(res.float[0]!.reason, /no int8 path/);
    const yf = await run(bytes, cal.data, [4, 2, 4, 4], 'y');
    const yq = await run(res.bytes, cal.data, [4, 2, 4, 4], 'y');
    assert.ok(maxAbs(yf.map((v, i) => v - yq[i]!)) < 0.1, 'still computes the same function');
  });

  test('nothing quantisable: the float model comes back unchanged, with the reason', async () => {
    const spec: GraphSpec = {
      inputs: [{ name: 'x', shape: ['N', 2, 4, 4] }, { name: 'w', shape: [3, 2, 1, 1] }],
      outputs: ['y'],
      nodes: [
        { op: 'Conv', inputs: ['x', 'w'], outputs: ['c'], name: 'conv_dynamic' },
        { op: 'Softplus', inputs: ['c'], outputs: ['y'] },
      ],
    };
    const model = parseOnnx(buildOnnx(spec), 'dyn.onnx');
    const res = await quantizeOnnx(model, calibration(2, [2, 4, 4], 1), {});
    assert.equal(res.quantized, false);
    assert.equal(res.bytes, model.bytes);
    assert.match(res.fallback!, /nothing to quantise: Conv conv_dynamic \(its weights are not a constant initializer\)/);
  });

  test('--skip-first / --skip-last / keepFloat leave those layers float', async () => {
    const first = await quantizeOnnx(parseOnnx(buildOnnx(convBlock), 'b.onnx'), calibration(4, [CIN, HW, HW], 3), { method: 'minmax', skipFirst: true });
    assert.equal(first.quantized, false);
    assert.match(first.fallback!, /first layer, kept float/);
    const chain: GraphSpec = {
      inputs: [{ name: 'x', shape: ['N', 2, 4, 4] }],
      outputs: ['y'],
      initializers: ['w1', 'w2', 'w3'].map((name, i) => ({ name, dims: [2, 2, 1, 1], values: values(4, 30 + i) })),
      nodes: [
        { op: 'Conv', inputs: ['x', 'w1'], outputs: ['a'], name: 'c1' },
        { op: 'Relu', inputs: ['a'], outputs: ['ar'] },
        { op: 'Conv', inputs: ['ar', 'w2'], outputs: ['b'], name: 'c2' },
        { op: 'Relu', inputs: ['b'], outputs: ['br'] },
        { op: 'Conv', inputs: ['br', 'w3'], outputs: ['y'], name: 'c3' },
      ],
    };
    const names = async (o: QuantizeOptions) => (await quantizeOnnx(parseOnnx(buildOnnx(chain), 'chain.onnx'), calibration(4, [2, 4, 4], 5), { method: 'minmax', ...o })).nodes.map((n) => n.node);
    assert.deepEqual(await names({}), ['c1', 'c2', 'c3']);
    assert.deepEqual(await names({ skipFirst: true, skipLast: true }), ['c2']);
    assert.deepEqual(await names({ keepFloat: ['c2'] }), ['c1', 'c3']);
  });
});

describe('shared MobileNet v1 0.75', { skip: SKIP_SHARED }, () => {
  test('int8 features keep cosine >= 0.99 with float (calibration and held-out images); all 27 convs fused', async () => {
    const out = join(dir, 'mobilenet.int8.onnx');
    const train = join(SHARED!, 'data', 'cats_vs_dogs', 'train');
    const res = await quantizeTask(MOBILENET, { calibrate: train, out, images: 24, method: 'minmax' });
    assert.equal(res.quantized, true);
    assert.equal(res.nodes.byOp.Conv, 27);
    assert.equal(res.nodes.depthwise, 13);
    const features = res.agreement.find((a) => a.tensor === 'features')!;
    assert.ok(features.meanCosine >= 0.99, `calibration images: mean cosine ${features.meanCosine}`);
    const ref = await resolveModel(MOBILENET);
    const val = await loadCalibrationImages(join(SHARED!, 'data', 'cats_vs_dogs', 'validation'), ref.spec, 24);
    const [held] = await compareModels(ref.onnx, parseOnnx(new Uint8Array(await readFile(out)), out), [{ name: 'features' }], val);
    assert.ok(held!.meanCosine >= 0.99, `validation images: mean cosine ${held!.meanCosine}`);
    // The pooled features are a model output read by the (int8) classifier: they stay float, not dequantised bytes.
    const qInfo = parseOnnx(new Uint8Array(await readFile(out)), out).info;
    assert.equal(qInfo.nodes.find((n) => n.outputs.includes('features'))!.opType, 'Flatten');
    const fused = await optimisedOps(new Uint8Array(await readFile(out)), 'mobilenet');
    assert.equal(fused.filter((o) => o === 'QLinearConv').length, 27, fused.join(','));
    assert.ok(!fused.includes('Conv'));
  });
});

describe('graft quantize (CLI)', () => {
  function cli(...args: string[]) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), ...args], {
      encoding: 'utf8',
      env: { ...process.env, GRAFT_HOME: join(dir, 'home') },
      timeout: 120_000,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  test('quantises a model on a folder of images; --json; usage and missing folder errors', async () => {
    const model = join(dir, 'block.onnx');
    await writeFile(model, buildOnnx(convBlock));
    const imgs = join(dir, 'imgs');
    await mkdir(imgs, { recursive: true });
    for (let i = 0; i < 6; i++) await sharp({ create: { width: 16, height: 12, channels: 3, background: { r: 30 * i, g: 100, b: 255 - 30 * i } } }).png().toFile(join(imgs, `${i}.png`));
    const out = join(dir, 'block.int8.onnx');
    const r = cli('quantize', model, '--calibrate', imgs, '--out', out, '--json', '--method', 'minmax');
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    assert.equal(res.quantized, true);
    assert.equal(res.calibration.images, 6);
    assert.equal(res.nodes.quantized, 1);
    assert.ok(res.agreement[0].meanCosine > 0.99, JSON.stringify(res.agreement));
    parseOnnx(new Uint8Array(await readFile(out)), out);

    const text = cli('quantize', model, '--calibrate', imgs, '--out', out);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /1 nodes int8 \(1 Conv; 0 depthwise\)/);
    assert.match(text.stdout, /cosine similarity to float/);

    assert.equal(cli('quantize', '--help').code, 0);
    assert.equal(cli('quantize', model, '--out', out).code, 2, 'missing --calibrate');
    assert.equal(cli('quantize', model, '--calibrate', imgs, '--out', out, '--method', 'kl').code, 2);
    const missing = cli('quantize', model, '--calibrate', join(dir, 'nope'), '--out', out);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope: calibration folder not found/);
  });
});
