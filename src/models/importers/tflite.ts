import { open, readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import type { ByteBuffer } from 'flatbuffers';
import { GraftError } from '../../errors.js';
import { OnnxBuilder, type Attr } from './onnx-builder.js';
import { halfToFloat } from '../../util/numeric.js';
import {
  ActivationFunctionType,
  ActivationOptions,
  BuiltinOperator as Op,
  BuiltinOptions,
  builtinOperatorName,
  ConcatenationOptions,
  Conv2DOptions,
  DepthwiseConv2DOptions,
  FullyConnectedOptions,
  Model,
  Padding,
  Pool2DOptions,
  ReducerOptions,
  ReshapeOptions,
  SoftmaxOptions,
  SqueezeOptions,
  TENSOR_TYPE_NAMES,
  TensorType,
  type Operator,
} from './tflite-schema/index.js';

/**
 * TFLite flatbuffers (.tflite) → ONNX (opset 13), for ONNX Runtime. The file is read with the hand-written reader
 * in ./tflite-schema (on the `flatbuffers` runtime).
 *
 * - Float and quantised (uint8/int8, per-tensor or per-channel scale and zero point) models. Every weight is
 *   dequantised, (q − z)·s, to float32 (int32 biases with their own scale, or input scale × weight scale when the file
 *   has none), and the whole graph is float arithmetic.
 * - Quantised activations: a quantised TFLite kernel rounds its result to the output tensor's grid and saturates it
 *   to the type's range. TOCO-converted models rely on the saturation for their ReLUs (no fused activation left) and
 *   quantisation-aware-trained ones on the rounding, so by default (`quantisedActivations: 'emulate'`) each quantised
 *   activation goes through QuantizeLinear → DequantizeLinear, and quantised weights are stored as their integers
 *   behind a DequantizeLinear (the same float values), so that ONNX Runtime can fuse the ops into its integer kernels
 *   on the file's own weights rather than re-quantising float weights its own way. `quantisedActivations: 'float'`
 *   keeps only the saturation (a Clip) and float initializers.
 * - The graph is NCHW: the input is `input` [N, 3, H, W] and every 4-D tensor stays NCHW. TFLite is NHWC, so conv
 *   weights are transposed (OHWI → OIHW; depthwise 1HW(C·M) → (C·M)1HW with group = C) and the ops whose meaning
 *   depends on the layout (reshape, squeeze, fully connected on 4-D input, concat/mean/pad/softmax axes, broadcasting
 *   of constants) are translated. TFLite SAME padding is ONNX auto_pad SAME_UPPER. The batch dimension is left free.
 * - Outputs: `features` (the last global average pool or spatial mean, flattened to [N, C]), `logits` (the input of
 *   the final Softmax, flattened to [N, classes]) and the model's own outputs (`output`, `output_1`, …; 4-D ones NCHW).
 * - The input preprocessing is written as Windows ML image metadata (Rgb8, Image.NominalPixelRange), which graft
 *   reads. A quantised input (scale s, zero point z) means the network sees (q − z)·s for pixel values q in [0, 255];
 *   the nominal range nearest to that is reported and, when it is not exact, an affine node at the input maps the
 *   nominal-range value to exactly (q − z)·s (e.g. s = 1/128, z = 128: Normalized_1_1, x·255/256 − 1/256). Float
 *   inputs are taken to be in [-1, 1] (MobileNets and most TF-slim image models; TFLite metadata is not read).
 * - An operator outside SUPPORTED_TFLITE_OPS is a GraftError naming it and its index, before anything is built.
 */

const NCHW_OF_NHWC = [0, 2, 3, 1]; // NHWC axis a is NCHW axis NCHW_OF_NHWC[a]
const TO_NHWC = [0, 2, 3, 1];
const TO_NCHW = [0, 3, 1, 2];

/** The ops this importer translates. */
export const SUPPORTED_TFLITE_OPS = [
  'ADD', 'SUB', 'MUL', 'DIV', 'AVERAGE_POOL_2D', 'MAX_POOL_2D', 'CONCATENATION', 'CONV_2D', 'DEPTHWISE_CONV_2D',
  'FULLY_CONNECTED', 'RESHAPE', 'SQUEEZE', 'SOFTMAX', 'PAD', 'MEAN', 'HARD_SWISH', 'LOGISTIC', 'TANH', 'RELU', 'RELU6',
  'RELU_N1_TO_1', 'QUANTIZE', 'DEQUANTIZE',
] as const;
const SUPPORTED = new Set<number>(SUPPORTED_TFLITE_OPS.map((n) => Op[n]!));

interface Quant { scale: number[]; zeroPoint: number[]; dim: number }
interface TensorInfo { index: number; name: string; shape: number[]; type: number; data?: Uint8Array; q?: Quant; sparse: boolean }
interface OpInfo { index: number; code: number; name: string; inputs: number[]; outputs: number[]; raw: Operator }
interface Parsed { tensors: TensorInfo[]; ops: OpInfo[]; inputs: number[]; outputs: number[]; description: string }

/** A tensor of the ONNX graph being built: its name and TFLite shape (4-D ones are NCHW in the ONNX graph). */
interface V { name: string; shape: number[] }

function fail(file: string, msg: string): never {
  throw new GraftError(`${file}: ${msg}`);
}

/** Read the flatbuffer into plain objects; any inconsistency in the bytes is a GraftError naming the file. */
function parse(bytes: Uint8Array, file: string): Parsed {
  if (bytes.length < 8 || String.fromCharCode(...bytes.subarray(4, 8)) !== 'TFL3') fail(file, 'not a TFLite model (no "TFL3" file identifier at byte 4)');
  try {
    const model = Model.read(bytes);
    model.checkExtents();
    const subgraphs = model.subgraphs;
    if (!subgraphs.length) throw new Error('the model has no subgraph');
    const sg = subgraphs[0]!;
    const buffers = model.buffers;
    const codes = model.operatorCodes.map((c) => c.builtinCode);
    const tensors: TensorInfo[] = sg.tensors.map((t, index) => {
      const b = t.buffer;
      if (b >= buffers.length) throw new Error(`tensor ${index} (${t.name}) refers to buffer ${b} of ${buffers.length}`);
      const data = b > 0 ? buffers[b]!.data : undefined;
      const qp = t.quantization;
      const scale = qp?.scale ?? [];
      const q = scale.length ? { scale, zeroPoint: qp!.zeroPoint, dim: qp!.quantizedDimension } : undefined;
      return { index, name: t.name, shape: t.shape, type: t.type, data: data?.length ? data : undefined, q, sparse: t.hasSparsity };
    });
    const ops: OpInfo[] = sg.operators.map((raw, index) => {
      const ci = raw.opcodeIndex;
      if (ci >= codes.length) throw new Error(`operator ${index} refers to operator code ${ci} of ${codes.length}`);
      const code = codes[ci]!;
      const check = (list: number[]) => {
        for (const i of list) if (i < -1 || i >= tensors.length) throw new Error(`operator ${index} refers to tensor ${i} of ${tensors.length}`);
        return list;
      };
      return { index, code, name: builtinOperatorName(code), inputs: check(raw.inputs), outputs: check(raw.outputs), raw };
    });
    const io = (list: number[]) => {
      for (const i of list) if (i < 0 || i >= tensors.length) throw new Error(`subgraph input/output ${i} is not a tensor`);
      return list;
    };
    return { tensors, ops, inputs: io(sg.inputs), outputs: io(sg.outputs), description: model.description };
  } catch (err) {
    if (err instanceof GraftError) throw err;
    fail(file, `not a valid TFLite model (truncated or corrupt?): ${(err as Error).message}`);
  }
}

/** Transpose a row-major array of `shape` by `perm`. */
function transpose(data: Float32Array, shape: number[], perm: number[]): Float32Array {
  return transposeAny(data, shape, perm);
}

function transposeAny<A extends Float32Array | Float64Array>(data: A, shape: number[], perm: number[]): A {
  const out = new (data.constructor as new (n: number) => A)(data.length);
  if (perm.every((p, k) => p === k)) {
    out.set(data);
    return out;
  }
  const newShape = perm.map((p) => shape[p]!);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const srcStrides = perm.map((p) => strides[p]!);
  const idx = new Array(shape.length).fill(0);
  let src = 0;
  for (let o = 0; o < out.length; o++) {
    out[o] = data[src]!;
    for (let k = perm.length - 1; k >= 0; k--) {
      src += srcStrides[k]!;
      if (++idx[k] < newShape[k]!) break;
      src -= srcStrides[k]! * newShape[k]!;
      idx[k] = 0;
    }
  }
  return out;
}

/** Representable integer range of quantised tensor types. */
const QUANT_RANGE: Record<number, [number, number]> = { [TensorType.UINT8]: [0, 255], [TensorType.INT8]: [-128, 127], [TensorType.INT16]: [-32768, 32767] };

const ONNX_UINT8 = 2;
const ONNX_INT8 = 3;
const ONNX_INT32 = 6;

const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

export interface TfliteImportOptions {
  /**
   * Quantised models: `emulate` (default) rounds and saturates every quantised activation as the TFLite kernels do
   * (QuantizeLinear → DequantizeLinear, still float arithmetic); `float` only saturates (Clip), a little faster and
   * a little further from what the TFLite runtime computes.
   */
  quantisedActivations?: 'emulate' | 'float';
}

/** Import a .tflite file as ONNX bytes. */
export async function importTflite(path: string, opts: TfliteImportOptions = {}): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') fail(path, 'not found');
    fail(path, `cannot read (${(err as Error).message})`);
  }
  return importTfliteBytes(bytes, path, opts);
}

/** Import TFLite flatbuffer bytes as ONNX bytes; `file` names the model in errors. */
export function importTfliteBytes(bytes: Uint8Array, file = 'model.tflite', opts: TfliteImportOptions = {}): Uint8Array {
  const emulate = (opts.quantisedActivations ?? 'emulate') === 'emulate';
  const m = parse(bytes, file);
  const T = m.tensors;

  // Refuse what cannot be translated before building anything, naming the first such operator.
  const unsupported = m.ops.filter((op) => !SUPPORTED.has(op.code));
  if (unsupported.length) {
    const first = unsupported[0]!;
    const others = new Set(unsupported.slice(1).map((o) => o.name).filter((n) => n !== first.name));
    fail(file, `operator ${first.index} is ${first.name}, which the TFLite importer does not support${others.size ? ` (also unsupported here: ${[...others].join(', ')})` : ''}; supported: ${SUPPORTED_TFLITE_OPS.join(', ')}`);
  }

  const b = new OnnxBuilder();
  const values = new Map<number, V>();
  const where = (op: OpInfo) => `operator ${op.index} (${op.name})`;

  // ---- constants -------------------------------------------------------------------------------------------
  const isConst = (i: number) => i >= 0 && T[i]!.data !== undefined && !values.has(i);

  /** The stored values of a constant tensor, not dequantised. */
  const rawValues = (i: number): Float64Array => {
    const t = T[i]!;
    const d = t.data ?? fail(file, `tensor ${i} (${t.name}) should be a constant but has no data`);
    const n = count(t.shape);
    const view = new DataView(d.buffer, d.byteOffset, d.byteLength);
    const width: Record<number, number> = { [TensorType.FLOAT32]: 4, [TensorType.FLOAT16]: 2, [TensorType.INT32]: 4, [TensorType.UINT8]: 1, [TensorType.INT8]: 1, [TensorType.INT16]: 2, [TensorType.INT64]: 8 };
    const w = width[t.type] ?? fail(file, `tensor ${i} (${t.name}): type ${TENSOR_TYPE_NAMES[t.type] ?? t.type} is not supported`);
    if (t.sparse) fail(file, `tensor ${i} (${t.name}): sparse tensors are not supported`);
    if (d.byteLength !== n * w) fail(file, `tensor ${i} (${t.name}): ${d.byteLength} bytes of data for shape [${t.shape}] of ${TENSOR_TYPE_NAMES[t.type]} (corrupt file?)`);
    const read: (k: number) => number =
      t.type === TensorType.FLOAT32 ? (k) => view.getFloat32(4 * k, true)
      : t.type === TensorType.FLOAT16 ? (k) => halfToFloat(view.getUint16(2 * k, true))
      : t.type === TensorType.INT32 ? (k) => view.getInt32(4 * k, true)
      : t.type === TensorType.UINT8 ? (k) => view.getUint8(k)
      : t.type === TensorType.INT8 ? (k) => view.getInt8(k)
      : t.type === TensorType.INT16 ? (k) => view.getInt16(2 * k, true)
      : (k) => Number(view.getBigInt64(8 * k, true));
    return Float64Array.from({ length: n }, (_, k) => read(k));
  };

  const isQuantisedInt = (t: TensorInfo) => t.type !== TensorType.FLOAT32 && t.type !== TensorType.FLOAT16;

  /** A constant tensor as float32, dequantised (per-tensor or per-channel). `fallbackScale` for int32 biases without their own. */
  const floatData = (i: number, fallbackScale?: number[]): Float32Array => {
    const t = T[i]!;
    const raw = rawValues(i);
    const n = raw.length;
    const scale = isQuantisedInt(t) ? t.q?.scale ?? fallbackScale : undefined;
    if (!scale) return Float32Array.from(raw);
    const out = new Float32Array(n);
    const zp = t.q?.zeroPoint ?? [];
    if (scale.length === 1) {
      const s = scale[0]!;
      const z = zp[0] ?? 0;
      for (let k = 0; k < n; k++) out[k] = (raw[k]! - z) * s;
      return out;
    }
    // Per-channel along quantized_dimension (the bias fallback scale runs along its only axis).
    const dim = t.q ? t.q.dim : 0;
    const len = t.shape[dim] ?? 0;
    if (len !== scale.length) fail(file, `tensor ${i} (${t.name}): ${scale.length} scales for dimension ${dim} of shape [${t.shape}]`);
    const inner = count(t.shape.slice(dim + 1));
    for (let k = 0; k < n; k++) {
      const c = Math.floor(k / inner) % len;
      out[k] = (raw[k]! - (zp.length > 1 ? zp[c]! : zp[0] ?? 0)) * scale[c]!;
    }
    return out;
  };

  /**
   * A weight or bias of a conv / fully connected op, transposed by `perm` to `dims`. Float models, and quantised ones
   * in `float` mode: a float32 initializer, dequantised here. Quantised ones in `emulate` mode: the stored integers
   * with a DequantizeLinear node (the same (q − z)·s, per tensor or per channel), so that ONNX Runtime can run the
   * op on the file's own integer weights instead of re-quantising float ones its own way.
   */
  const constInput = (i: number, perm: number[], dims: number[], fallbackScale?: number[]): string => {
    const t = T[i]!;
    const base = t.name.split(';')[0]! || `const${i}`;
    const scale = isQuantisedInt(t) ? t.q?.scale ?? fallbackScale : undefined;
    const integer = emulate && scale && (t.type === TensorType.UINT8 || t.type === TensorType.INT8 || t.type === TensorType.INT32);
    if (!integer) return b.floats(b.fresh(base), dims, transposeAny(floatData(i, fallbackScale), t.shape, perm));
    const values = transposeAny(rawValues(i), t.shape, perm);
    const zp = t.q?.zeroPoint ?? [];
    const axis = scale.length > 1 ? perm.indexOf(t.q ? t.q.dim : 0) : undefined;
    const zeros = t.type === TensorType.INT32 ? [] : scale.length > 1 ? scale.map((_, c) => zp[c] ?? zp[0] ?? 0) : [zp[0] ?? 0];
    const [code, bytes, zpBytes] =
      t.type === TensorType.UINT8 ? [ONNX_UINT8, Uint8Array.from(values), Uint8Array.from(zeros)]
      : t.type === TensorType.INT8 ? [ONNX_INT8, new Uint8Array(Int8Array.from(values).buffer), new Uint8Array(Int8Array.from(zeros).buffer)]
      : [ONNX_INT32, new Uint8Array(Int32Array.from(values).buffer), undefined];
    const q = b.raw(b.fresh(`${base}_quantised`), code, dims, bytes);
    const perChannel = scale.length > 1;
    const sc = b.floats(b.fresh(`${base}_scale`), perChannel ? [scale.length] : [], Float32Array.from(scale));
    const ins = [q, sc];
    if (zpBytes) ins.push(b.raw(b.fresh(`${base}_zero_point`), code, perChannel ? [scale.length] : [], zpBytes));
    return b.node('DequantizeLinear', ins, b.fresh(base), perChannel ? { axis: axis! } : {});
  };

  /** A constant integer tensor (shapes, axes, paddings) as numbers. */
  const intData = (i: number, op: OpInfo): number[] => {
    if (!isConst(i)) fail(file, `${where(op)}: input ${T[i]?.name ?? i} must be a constant`);
    const t = T[i]!;
    if (t.type !== TensorType.INT32 && t.type !== TensorType.INT64) fail(file, `${where(op)}: input ${t.name} must be int32 or int64`);
    return Array.from(floatData(i));
  };

  /** A constant used as an operand of an element-wise op whose other operand has rank `rank` (4 = NCHW). */
  const constOperand = (i: number, rank: number): V => {
    const t = T[i]!;
    let data = floatData(i);
    let shape = t.shape;
    if (rank === 4 && count(shape) > 1) {
      // NHWC broadcasting: pad to rank 4 on the left, then go NCHW.
      const padded = [...new Array(4 - shape.length).fill(1), ...shape];
      data = transpose(data, padded, TO_NCHW);
      shape = padded;
      return { name: b.floats(b.fresh(t.name || `const${i}`), TO_NCHW.map((p) => padded[p]!), data), shape };
    }
    return { name: b.floats(b.fresh(t.name || `const${i}`), shape, data), shape };
  };

  /** The ONNX value of tensor `i` (an activation computed so far, or a constant). */
  const get = (i: number, op: OpInfo, rankHint?: number): V => {
    const v = values.get(i);
    if (v) return v;
    if (i >= 0 && T[i]!.data) return constOperand(i, rankHint ?? T[i]!.shape.length);
    fail(file, `${where(op)}: input tensor ${i} (${T[i]?.name ?? '?'}) is not computed before it is used`);
  };

  /** The scale of an int32 bias without its own: input scale × weight scale (per channel when the weights are). */
  const biasScale = (op: OpInfo, wt: TensorInfo): number[] | undefined => {
    const inQ = T[op.inputs[0]!]!.q;
    return inQ && wt.q ? wt.q.scale.map((s) => s * inQ.scale[0]!) : undefined;
  };

  const scalar = (v: number) => b.floats(b.fresh('c'), [], new Float32Array([v]));
  const clip = (x: string, lo: number, hi: number, name: string) => b.node('Clip', [x, scalar(lo), scalar(hi)], b.fresh(name));

  const clamp = (x: V, lo: number, hi: number): V => {
    if (lo === -Infinity && hi === Infinity) return x;
    if (lo === 0 && hi === Infinity) return { ...x, name: b.node('Relu', [x.name], b.fresh(`${x.name}_relu`)) };
    return { ...x, name: clip(x.name, lo, hi, `${x.name}_clip`) };
  };

  /** Round to a (per-tensor) uint8/int8 grid and saturate: QuantizeLinear → DequantizeLinear. */
  const roundToGrid = (x: V, t: TensorInfo): V => {
    const zp = b.raw(b.fresh('zero_point'), t.type === TensorType.UINT8 ? ONNX_UINT8 : ONNX_INT8, [], new Uint8Array(new Int8Array([t.q!.zeroPoint[0] ?? 0]).buffer));
    const sc = scalar(t.q!.scale[0]!);
    const q = b.node('QuantizeLinear', [x.name, sc, zp], b.fresh(`${x.name}_q`));
    return { ...x, name: b.node('DequantizeLinear', [q, sc, zp], b.fresh(`${x.name}_dq`)) };
  };

  /**
   * The fused activation, then what a quantised kernel does to its result: it rounds it to the output's
   * (scale, zero point) grid and saturates it to the type's range. TOCO-converted models rely on the saturation for
   * their ReLUs, and quantisation-aware-trained models expect the rounding, so by default both are emulated in float
   * with QuantizeLinear → DequantizeLinear; with `quantisedActivations: 'float'` only the saturation (a Clip) is.
   */
  const finish = (x: V, fused: number, op: OpInfo, out: TensorInfo, requantise: boolean): V => {
    let lo = -Infinity;
    let hi = Infinity;
    if (fused === ActivationFunctionType.RELU) lo = 0;
    else if (fused === ActivationFunctionType.RELU6) [lo, hi] = [0, 6];
    else if (fused === ActivationFunctionType.RELU_N1_TO_1) [lo, hi] = [-1, 1];
    else if (fused === ActivationFunctionType.TANH) x = { ...x, name: b.node('Tanh', [x.name], b.fresh(`${x.name}_tanh`)) };
    else if (fused !== ActivationFunctionType.NONE) fail(file, `${where(op)}: fused activation ${fused} is not supported`);
    const range = QUANT_RANGE[out.type];
    if (!requantise || !range || !out.q || out.q.scale.length !== 1) return clamp(x, lo, hi);
    const s = out.q.scale[0]!;
    const z = out.q.zeroPoint[0] ?? 0;
    const [qlo, qhi] = [(range[0] - z) * s, (range[1] - z) * s];
    if (emulate && out.type !== TensorType.INT16) {
      // The fused activation only matters where it is narrower than the representable range.
      if (qlo < lo || qhi > hi) x = clamp(x, qlo < lo ? lo : -Infinity, qhi > hi ? hi : Infinity);
      return roundToGrid(x, out);
    }
    return clamp(x, Math.max(lo, qlo), Math.min(hi, qhi));
  };

  const toNhwc = (x: V) => (x.shape.length === 4 ? b.node('Transpose', [x.name], b.fresh('nhwc'), { perm: TO_NHWC }) : x.name);

  // ---- the input ---------------------------------------------------------------------------------------------
  const graphInputs = m.inputs.filter((i) => !T[i]!.data);
  if (graphInputs.length !== 1) fail(file, `the model has ${graphInputs.length} inputs; only single-image models are supported`);
  const inT = T[graphInputs[0]!]!;
  if (inT.shape.length !== 4 || inT.shape[3] !== 3) fail(file, `input ${inT.name} has shape [${inT.shape}]; an image input [batch, height, width, 3] is required`);
  const [, H, W] = inT.shape as [number, number, number, number];
  b.input('input', ['batch', 3, H, W]);
  const metadata: Record<string, string> = { 'Image.BitmapPixelFormat': 'Rgb8', 'Image.ColorSpaceGamma': 'SRGB', 'tflite.source': basename(file) };
  if (m.description) metadata['tflite.description'] = m.description;
  let inputName = 'input';
  if (inT.type === TensorType.FLOAT32) {
    metadata['Image.NominalPixelRange'] = 'Normalized_1_1';
  } else if (inT.type === TensorType.UINT8 || inT.type === TensorType.INT8) {
    if (!inT.q || inT.q.scale.length !== 1) fail(file, `input ${inT.name} is ${TENSOR_TYPE_NAMES[inT.type]} without a (per-tensor) scale`);
    const s = inT.q.scale[0]!;
    // The runtime is fed q = pixel (uint8) or pixel − 128 (int8); the network sees (q − z)·s.
    const z = (inT.q.zeroPoint[0] ?? 0) + (inT.type === TensorType.INT8 ? -128 : 0);
    const lo = (0 - z) * s;
    const hi = (255 - z) * s;
    // Nominal ranges as x = pixel·k + m.
    const ranges = [
      { key: 'Normalized_1_1', k: 2 / 255, m: -1 },
      { key: 'Normalized_0_1', k: 1 / 255, m: 0 },
      { key: 'NominalRange_0_255', k: 1, m: 0 },
    ];
    const best = ranges.map((r) => ({ ...r, err: Math.abs(r.m - lo) + Math.abs(255 * r.k + r.m - hi) })).sort((a, c) => a.err - c.err)[0]!;
    metadata['Image.NominalPixelRange'] = best.key;
    metadata['tflite.input_quantization'] = `scale=${s} zero_point=${inT.q.zeroPoint[0] ?? 0} (${TENSOR_TYPE_NAMES[inT.type]}); pixels [0, 255] -> [${lo}, ${hi}]`;
    // real = (pixel − z)·s with pixel = (x − m)/k  →  real = x·(s/k) + (−m/k − z)·s
    const mul = s / best.k;
    const add = (-best.m / best.k - z) * s;
    if (Math.abs(mul - 1) > 1e-6 || Math.abs(add) > 1e-6) {
      const scaled = b.node('Mul', ['input', scalar(mul)], b.fresh('input_scale'));
      inputName = b.node('Add', [scaled, scalar(add)], b.fresh('input_dequantised'));
    }
    // The runtime is fed whole numbers: round to the input's grid too.
    if (emulate) inputName = roundToGrid({ name: inputName, shape: inT.shape }, inT).name;
  } else {
    fail(file, `input ${inT.name} has type ${TENSOR_TYPE_NAMES[inT.type] ?? inT.type}; float32, uint8 or int8 is required`);
  }
  values.set(inT.index, { name: inputName, shape: inT.shape });

  // ---- operators ---------------------------------------------------------------------------------------------
  let features: V | undefined;
  let logits: V | undefined;

  for (const op of m.ops) {
    const outT = T[op.outputs[0]!];
    if (!outT) fail(file, `${where(op)}: no output tensor`);
    const outShape = outT.shape;
    const oname = b.fresh(outT.name.split(';')[0]!.replace(/[^A-Za-z0-9_/.-]+/g, '_') || `t${outT.index}`);
    const opts = <X>(expected: number, make: new (bb: ByteBuffer, pos: number, what: string) => X): X | undefined => {
      try {
        return op.raw.options(expected, make);
      } catch (err) {
        fail(file, `${where(op)}: ${(err as Error).message}`);
      }
    };
    const x0 = () => get(op.inputs[0]!, op);
    let y: V;
    let fused: number = ActivationFunctionType.NONE;
    let isFeatures = false;

    switch (op.code) {
      case Op.CONV_2D!:
      case Op.DEPTHWISE_CONV_2D!: {
        const depthwise = op.code === Op.DEPTHWISE_CONV_2D;
        const o = depthwise ? opts(BuiltinOptions.DepthwiseConv2DOptions, DepthwiseConv2DOptions) : opts(BuiltinOptions.Conv2DOptions, Conv2DOptions);
        const x = x0();
        if (x.shape.length !== 4) fail(file, `${where(op)}: input must be 4-D, got [${x.shape}]`);
        const [wi, bi] = [op.inputs[1]!, op.inputs[2] ?? -1];
        if (!isConst(wi)) fail(file, `${where(op)}: non-constant weights are not supported`);
        const wt = T[wi]!;
        const [o0, kh, kw, i3] = wt.shape as [number, number, number, number];
        const cin = x.shape[3]!;
        let outC: number;
        let group: number;
        let wShape: number[];
        let perm: number[];
        if (depthwise) {
          // [1, kh, kw, C·M] → [C·M, 1, kh, kw]; output channel c·M + m reads input channel c.
          perm = [3, 0, 1, 2];
          outC = i3;
          group = cin;
          wShape = [outC, 1, kh, kw];
          if (o0 !== 1 || outC % cin !== 0) fail(file, `${where(op)}: depthwise weights [${wt.shape}] do not fit ${cin} input channels`);
        } else {
          // [O, kh, kw, I] → [O, I, kh, kw]; I < C means a grouped convolution.
          perm = [0, 3, 1, 2];
          outC = o0;
          group = cin / i3;
          wShape = [o0, i3, kh, kw];
          if (!Number.isInteger(group) || outC % group !== 0) fail(file, `${where(op)}: weights [${wt.shape}] do not fit ${cin} input channels`);
        }
        const ins = [x.name, constInput(wi, perm, wShape)];
        if (bi >= 0) ins.push(constInput(bi, [0], [outC], biasScale(op, wt)));
        const attrs: Record<string, Attr> = {
          kernel_shape: [kh, kw],
          strides: [o?.strideH || 1, o?.strideW || 1],
          dilations: [o?.dilationHFactor || 1, o?.dilationWFactor || 1],
          group,
        };
        if ((o?.padding ?? Padding.SAME) === Padding.SAME) attrs.auto_pad = 'SAME_UPPER';
        else attrs.pads = [0, 0, 0, 0];
        y = { name: b.node('Conv', ins, oname, attrs), shape: outShape };
        fused = o?.fusedActivationFunction ?? 0;
        break;
      }
      case Op.AVERAGE_POOL_2D!:
      case Op.MAX_POOL_2D!: {
        const o = opts(BuiltinOptions.Pool2DOptions, Pool2DOptions) ?? fail(file, `${where(op)}: no pool options`);
        const x = x0();
        if (x.shape.length !== 4) fail(file, `${where(op)}: input must be 4-D, got [${x.shape}]`);
        const attrs: Record<string, Attr> = { kernel_shape: [o.filterHeight, o.filterWidth], strides: [o.strideH || 1, o.strideW || 1] };
        if (o.padding === Padding.SAME) attrs.auto_pad = 'SAME_UPPER';
        const avg = op.code === Op.AVERAGE_POOL_2D;
        const global = avg && outShape[1] === 1 && outShape[2] === 1 && o.filterHeight === x.shape[1] && o.filterWidth === x.shape[2];
        y = { name: b.node(global ? 'GlobalAveragePool' : avg ? 'AveragePool' : 'MaxPool', [x.name], oname, global ? {} : attrs), shape: outShape };
        fused = o.fusedActivationFunction;
        isFeatures = global;
        break;
      }
      case Op.FULLY_CONNECTED!: {
        const o = opts(BuiltinOptions.FullyConnectedOptions, FullyConnectedOptions);
        if (o?.weightsFormat) fail(file, `${where(op)}: shuffled weights are not supported`);
        const x = x0();
        const [wi, bi] = [op.inputs[1]!, op.inputs[2] ?? -1];
        if (!isConst(wi)) fail(file, `${where(op)}: non-constant weights are not supported`);
        const wt = T[wi]!;
        const [units, depth] = wt.shape as [number, number];
        // TFLite flattens the input (in NHWC order) to [-1, depth].
        const flat = x.shape.length === 2 ? x.name : b.node('Reshape', [toNhwc(x), b.ints(b.fresh('shape'), [-1, depth])], b.fresh(`${oname}_flat`));
        const bias = bi >= 0 ? constInput(bi, [0], [units], biasScale(op, wt)) : b.floats(b.fresh('bias'), [units], new Float32Array(units));
        const ins = [flat, constInput(wi, [0, 1], [units, depth]), bias];
        y = { name: b.node('Gemm', ins, oname, { transB: 1 }), shape: [outShape[0] ?? 1, units] };
        if (o?.keepNumDims && outShape.length !== 2) fail(file, `${where(op)}: keep_num_dims with a ${outShape.length}-D output is not supported`);
        fused = o?.fusedActivationFunction ?? 0;
        break;
      }
      case Op.RESHAPE!: {
        const x = x0();
        const target = op.inputs[1] !== undefined && op.inputs[1] >= 0 ? intData(op.inputs[1], op) : opts(BuiltinOptions.ReshapeOptions, ReshapeOptions)?.newShape ?? outShape;
        const shape = target.map((d, k) => (k === 0 && d === x.shape[0] && d === 1 ? 0 : d)); // keep the batch free
        const reshaped = b.node('Reshape', [toNhwc(x), b.ints(b.fresh('shape'), shape)], outShape.length === 4 ? b.fresh(`${oname}_nhwc`) : oname);
        y = { name: outShape.length === 4 ? b.node('Transpose', [reshaped], oname, { perm: TO_NCHW }) : reshaped, shape: outShape };
        break;
      }
      case Op.SQUEEZE!: {
        const x = x0();
        const r = x.shape.length;
        let dims = (opts(BuiltinOptions.SqueezeOptions, SqueezeOptions)?.squeezeDims ?? []).map((a) => (a < 0 ? a + r : a));
        // Without dims TFLite drops every 1; the batch is left alone so it stays free.
        if (!dims.length) dims = x.shape.map((d, k) => (d === 1 && k > 0 ? k : -1)).filter((k) => k >= 0);
        if (r === 4 && dims.length === 2 && dims.includes(1) && dims.includes(2)) {
          y = { name: b.node('Squeeze', [x.name, b.ints(b.fresh('axes'), [2, 3])], oname), shape: outShape };
        } else {
          y = { name: b.node('Squeeze', [toNhwc(x), b.ints(b.fresh('axes'), dims)], oname), shape: outShape };
          if (outShape.length === 4) y = { name: b.node('Transpose', [y.name], b.fresh(`${oname}_nchw`), { perm: TO_NCHW }), shape: outShape };
        }
        break;
      }
      case Op.SOFTMAX!: {
        const o = opts(BuiltinOptions.SoftmaxOptions, SoftmaxOptions);
        const x = x0();
        const beta = o?.beta ?? 1;
        const r = x.shape.length;
        const flat = r === 4 && x.shape[1] === 1 && x.shape[2] === 1 ? b.node('Flatten', [x.name], b.fresh(`${oname}_flat`), { axis: 1 }) : x.name;
        const flatShape = flat === x.name ? x.shape : [x.shape[0]!, x.shape[3]!];
        if (flatShape.length === 2) logits = { name: flat, shape: flatShape };
        const scaled = beta === 1 || beta === 0 ? flat : b.node('Mul', [flat, scalar(beta)], b.fresh(`${oname}_beta`));
        const axis = flatShape.length === 4 ? 1 : flatShape.length - 1;
        y = { name: b.node('Softmax', [scaled], oname, { axis }), shape: flatShape };
        break;
      }
      case Op.ADD!:
      case Op.SUB!:
      case Op.MUL!:
      case Op.DIV!: {
        const kind = { [Op.ADD!]: ['Add', BuiltinOptions.AddOptions], [Op.SUB!]: ['Sub', BuiltinOptions.SubOptions], [Op.MUL!]: ['Mul', BuiltinOptions.MulOptions], [Op.DIV!]: ['Div', BuiltinOptions.DivOptions] }[op.code]!;
        const o = opts(kind[1] as number, ActivationOptions);
        const rank = outShape.length;
        const operand = (i: number): string => {
          const v = get(i, op, rank);
          if (rank !== 4 || v.shape.length === 4 || count(v.shape) === 1) return v.name;
          // A lower-rank activation against a 4-D one: NHWC broadcasting → unsqueeze on the left, then NCHW.
          const lead = Array.from({ length: 4 - v.shape.length }, (_, k) => k);
          const u = b.node('Unsqueeze', [v.name, b.ints(b.fresh('axes'), lead)], b.fresh('bcast'));
          return b.node('Transpose', [u], b.fresh('bcast_nchw'), { perm: TO_NCHW });
        };
        const [a, c] = [operand(op.inputs[0]!), operand(op.inputs[1]!)];
        y = { name: b.node(kind[0] as string, [a, c], oname), shape: outShape };
        fused = o?.fusedActivationFunction ?? 0;
        break;
      }
      case Op.CONCATENATION!: {
        const o = opts(BuiltinOptions.ConcatenationOptions, ConcatenationOptions);
        const rank = outShape.length;
        let axis = o?.axis ?? 0;
        if (axis < 0) axis += rank;
        const ins = op.inputs.map((i) => get(i, op, rank).name);
        y = { name: b.node('Concat', ins, oname, { axis: rank === 4 ? NCHW_OF_NHWC[axis]! : axis }), shape: outShape };
        fused = o?.fusedActivationFunction ?? 0;
        break;
      }
      case Op.PAD!: {
        const x = x0();
        const p = intData(op.inputs[1]!, op);
        const r = x.shape.length;
        if (p.length !== 2 * r) fail(file, `${where(op)}: paddings of ${p.length} values for a ${r}-D input`);
        const order = r === 4 ? TO_NCHW : Array.from({ length: r }, (_, k) => k);
        const pads = [...order.map((a) => p[2 * a]!), ...order.map((a) => p[2 * a + 1]!)];
        y = { name: b.node('Pad', [x.name, b.ints(b.fresh('pads'), pads)], oname), shape: outShape };
        break;
      }
      case Op.MEAN!: {
        const o = opts(BuiltinOptions.ReducerOptions, ReducerOptions);
        const x = x0();
        const r = x.shape.length;
        const axes = [...new Set(intData(op.inputs[1]!, op).map((a) => (a < 0 ? a + r : a)))].sort();
        const keep = o?.keepDims ?? false;
        const spatial = r === 4 && axes.length === 2 && axes[0] === 1 && axes[1] === 2;
        if (r === 4 && (keep || spatial)) {
          // NCHW reduce; over H and W without keep_dims, [N, C] is in the same order either way.
          y = { name: b.node('ReduceMean', [x.name], oname, { axes: axes.map((a) => NCHW_OF_NHWC[a]!), keepdims: keep ? 1 : 0 }), shape: outShape };
        } else {
          y = { name: b.node('ReduceMean', [toNhwc(x)], oname, { axes, keepdims: keep ? 1 : 0 }), shape: outShape };
          if (outShape.length === 4) y = { name: b.node('Transpose', [y.name], b.fresh(`${oname}_nchw`), { perm: TO_NCHW }), shape: outShape };
        }
        isFeatures = spatial;
        break;
      }
      case Op.HARD_SWISH!: {
        const x = x0();
        const hs = b.node('HardSigmoid', [x.name], b.fresh(`${oname}_hsig`), { alpha: { f: 1 / 6 }, beta: { f: 0.5 } });
        y = { name: b.node('Mul', [x.name, hs], oname), shape: outShape };
        break;
      }
      case Op.LOGISTIC!:
        y = { name: b.node('Sigmoid', [x0().name], oname), shape: outShape };
        break;
      case Op.TANH!:
        y = { name: b.node('Tanh', [x0().name], oname), shape: outShape };
        break;
      case Op.RELU!:
        y = { name: b.node('Relu', [x0().name], oname), shape: outShape };
        break;
      case Op.RELU6!:
        y = { name: clip(x0().name, 0, 6, oname), shape: outShape };
        break;
      case Op.RELU_N1_TO_1!:
        y = { name: clip(x0().name, -1, 1, oname), shape: outShape };
        break;
      case Op.QUANTIZE!:
      case Op.DEQUANTIZE!:
        // The graph runs in float: (de)quantising is the identity on the real value.
        y = { ...x0(), shape: outShape };
        break;
      default:
        fail(file, `${where(op)} is not supported by the TFLite importer`);
    }
    if (op.outputs.length !== 1) fail(file, `${where(op)}: ${op.outputs.length} outputs, expected 1`);
    // Data movement keeps the grid it was given; the final softmax is left exact.
    const requantise = ![Op.RESHAPE, Op.SQUEEZE, Op.SOFTMAX, Op.DEQUANTIZE].includes(op.code);
    y = finish(y, fused, op, outT, requantise);
    if (isFeatures) features = y;
    values.set(outT.index, y);
  }

  // ---- outputs -----------------------------------------------------------------------------------------------
  const dimsOf = (v: V): (number | string)[] => (v.shape.length === 4 ? ['batch', v.shape[3]!, v.shape[1]!, v.shape[2]!] : ['batch', ...v.shape.slice(1)]);
  const named = (v: V, as: string, flatten: boolean) => {
    if (flatten && v.shape.length !== 2) {
      b.node('Flatten', [v.name], as, { axis: 1 });
      b.output(as, ['batch', count(v.shape.slice(1))]);
    } else {
      b.node('Identity', [v.name], as);
      b.output(as, dimsOf(v));
    }
  };
  if (features) named(features, 'features', true);
  if (logits) named(logits, 'logits', true);
  m.outputs.forEach((i, k) => {
    const v = values.get(i) ?? fail(file, `output tensor ${i} (${T[i]!.name}) is not computed by any operator`);
    named(v, k === 0 ? 'output' : `output_${k}`, false);
  });
  return b.build({ producer: 'graft tflite importer', graphName: basename(file).replace(/\.tflite$/i, '') || 'model', metadata });
}

/** Whether `path` is a TFLite flatbuffer (file identifier "TFL3" at bytes 4..8). */
export async function isTfliteModel(path: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'r');
    const buf = Buffer.alloc(8);
    const { bytesRead } = await fh.read(buf, 0, 8, 0);
    return bytesRead === 8 && buf.subarray(4, 8).toString('latin1') === 'TFL3';
  } catch {
    return false;
  } finally {
    await fh?.close();
  }
}
