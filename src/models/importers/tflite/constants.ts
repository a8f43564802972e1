/** Constant tensors of a TFLite model: their stored values, dequantised floats, and ONNX initializers for weights. */
import { OnnxBuilder } from '../onnx-builder.js';
import { fail } from '../fail.js';
import { count, transposeData } from '../layout.js';
import { halfToFloat } from '../../../util/numeric.js';
import { TENSOR_TYPE_NAMES, TensorType } from '../tflite-schema/index.js';
import type { OpInfo, TensorInfo } from './parse.js';

/** A tensor of the ONNX graph being built: its name and TFLite shape (4-D ones are NCHW in the ONNX graph). */
export interface V { name: string; shape: number[] }

export const ONNX_UINT8 = 2;
export const ONNX_INT8 = 3;
const ONNX_INT32 = 6;

const WIDTH: Record<number, number> = { [TensorType.FLOAT32]: 4, [TensorType.FLOAT16]: 2, [TensorType.INT32]: 4, [TensorType.UINT8]: 1, [TensorType.INT8]: 1, [TensorType.INT16]: 2, [TensorType.INT64]: 8 };

export const isQuantisedInt = (t: TensorInfo): boolean => t.type !== TensorType.FLOAT32 && t.type !== TensorType.FLOAT16;

export class TfliteTensors {
  readonly b = new OnnxBuilder();
  /** ONNX values of the tensors computed so far (and of the input), by tensor index. */
  readonly values = new Map<number, V>();

  constructor(
    readonly file: string,
    readonly T: TensorInfo[],
    /** Quantised models: weights as integers behind DequantizeLinear, activations rounded to their grid. */
    readonly emulate: boolean,
  ) {}

  where(op: OpInfo): string {
    return `operator ${op.index} (${op.name})`;
  }
  fail(op: OpInfo, msg: string): never {
    fail(this.file, `${this.where(op)}: ${msg}`);
  }

  isConst(i: number): boolean {
    return i >= 0 && this.T[i]!.data !== undefined && !this.values.has(i);
  }

  /** The stored values of a constant tensor, not dequantised. */
  rawValues(i: number): Float64Array {
    const t = this.T[i]!;
    const d = t.data ?? fail(this.file, `tensor ${i} (${t.name}) should be a constant but has no data`);
    const n = count(t.shape);
    const view = new DataView(d.buffer, d.byteOffset, d.byteLength);
    const w = WIDTH[t.type] ?? fail(this.file, `tensor ${i} (${t.name}): type ${TENSOR_TYPE_NAMES[t.type] ?? t.type} is not supported`);
    if (t.sparse) fail(this.file, `tensor ${i} (${t.name}): sparse tensors are not supported`);
    if (d.byteLength !== n * w) fail(this.file, `tensor ${i} (${t.name}): ${d.byteLength} bytes of data for shape [${t.shape}] of ${TENSOR_TYPE_NAMES[t.type]} (corrupt file?)`);
    const read: (k: number) => number =
      t.type === TensorType.FLOAT32 ? (k) => view.getFloat32(4 * k, true)
      : t.type === TensorType.FLOAT16 ? (k) => halfToFloat(view.getUint16(2 * k, true))
      : t.type === TensorType.INT32 ? (k) => view.getInt32(4 * k, true)
      : t.type === TensorType.UINT8 ? (k) => view.getUint8(k)
      : t.type === TensorType.INT8 ? (k) => view.getInt8(k)
      : t.type === TensorType.INT16 ? (k) => view.getInt16(2 * k, true)
      : (k) => Number(view.getBigInt64(8 * k, true));
    return Float64Array.from({ length: n }, (_, k) => read(k));
  }

  /** A constant tensor as float32, dequantised (per-tensor or per-channel). `fallbackScale` for int32 biases without their own. */
  floatData(i: number, fallbackScale?: number[]): Float32Array {
    const t = this.T[i]!;
    const raw = this.rawValues(i);
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
    if (len !== scale.length) fail(this.file, `tensor ${i} (${t.name}): ${scale.length} scales for dimension ${dim} of shape [${t.shape}]`);
    const inner = count(t.shape.slice(dim + 1));
    for (let k = 0; k < n; k++) {
      const c = Math.floor(k / inner) % len;
      out[k] = (raw[k]! - (zp.length > 1 ? zp[c]! : zp[0] ?? 0)) * scale[c]!;
    }
    return out;
  }

  /**
   * A weight or bias of a conv / fully connected op, transposed by `perm` to `dims`. Float models, and quantised ones
   * in `float` mode: a float32 initializer, dequantised here. Quantised ones in `emulate` mode: the stored integers
   * with a DequantizeLinear node (the same (q − z)·s, per tensor or per channel), so that ONNX Runtime can run the
   * op on the file's own integer weights instead of re-quantising float ones its own way.
   */
  constInput(i: number, perm: readonly number[], dims: number[], fallbackScale?: number[]): string {
    const b = this.b;
    const t = this.T[i]!;
    const base = t.name.split(';')[0]! || `const${i}`;
    const scale = isQuantisedInt(t) ? t.q?.scale ?? fallbackScale : undefined;
    const integer = this.emulate && scale && (t.type === TensorType.UINT8 || t.type === TensorType.INT8 || t.type === TensorType.INT32);
    if (!integer) return b.floats(b.fresh(base), dims, transposeData(this.floatData(i, fallbackScale), t.shape, perm));
    const values = transposeData(this.rawValues(i), t.shape, perm);
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
  }

  /** A constant integer tensor (shapes, axes, paddings) as numbers. */
  intData(i: number, op: OpInfo): number[] {
    if (!this.isConst(i)) this.fail(op, `input ${this.T[i]?.name ?? i} must be a constant`);
    const t = this.T[i]!;
    if (t.type !== TensorType.INT32 && t.type !== TensorType.INT64) this.fail(op, `input ${t.name} must be int32 or int64`);
    return Array.from(this.floatData(i));
  }
}
