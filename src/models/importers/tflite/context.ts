/** The state the TFLite translation shares between operator handlers, and the building blocks they use. */
import type { ByteBuffer } from 'flatbuffers';
import { count, TO_NCHW, TO_NHWC, transposeData } from '../layout.js';
import { ActivationFunctionType, TensorType } from '../tflite-schema/index.js';
import { ONNX_INT8, ONNX_UINT8, TfliteTensors } from './constants.js';
import type { OpInfo, TensorInfo } from './parse.js';
import type { V } from './constants.js';

export type { V } from './constants.js';

/** Representable integer range of quantised tensor types. */
const QUANT_RANGE: Record<number, [number, number]> = { [TensorType.UINT8]: [0, 255], [TensorType.INT8]: [-128, 127], [TensorType.INT16]: [-32768, 32767] };

export class TfliteCtx extends TfliteTensors {
  /** The last global average pool or spatial mean (the feature vector). */
  features: V | undefined;
  /** The input of the last softmax, flattened. */
  logits: V | undefined;

  /** Operator `op`'s builtin options table, checked to be of the `expected` union member. */
  options<X>(op: OpInfo, expected: number, make: new (bb: ByteBuffer, pos: number, what: string) => X): X | undefined {
    try {
      return op.raw.options(expected, make);
    } catch (err) {
      this.fail(op, (err as Error).message);
    }
  }

  /** A constant used as an operand of an element-wise op whose other operand has rank `rank` (4 = NCHW). */
  constOperand(i: number, rank: number): V {
    const t = this.T[i]!;
    let data = this.floatData(i);
    let shape = t.shape;
    if (rank === 4 && count(shape) > 1) {
      // NHWC broadcasting: pad to rank 4 on the left, then go NCHW.
      const padded = [...new Array<number>(4 - shape.length).fill(1), ...shape];
      data = transposeData(data, padded, TO_NCHW);
      shape = padded;
      return { name: this.b.floats(this.b.fresh(t.name || `const${i}`), TO_NCHW.map((p) => padded[p]!), data), shape };
    }
    return { name: this.b.floats(this.b.fresh(t.name || `const${i}`), shape, data), shape };
  }

  /** The ONNX value of tensor `i` (an activation computed so far, or a constant). */
  get(i: number, op: OpInfo, rankHint?: number): V {
    const v = this.values.get(i);
    if (v) return v;
    if (i >= 0 && this.T[i]!.data) return this.constOperand(i, rankHint ?? this.T[i]!.shape.length);
    this.fail(op, `input tensor ${i} (${this.T[i]?.name ?? '?'}) is not computed before it is used`);
  }

  /** The scale of an int32 bias without its own: input scale × weight scale (per channel when the weights are). */
  biasScale(op: OpInfo, wt: TensorInfo): number[] | undefined {
    const inQ = this.T[op.inputs[0]!]!.q;
    return inQ && wt.q ? wt.q.scale.map((s) => s * inQ.scale[0]!) : undefined;
  }

  scalar(v: number): string {
    return this.b.floats(this.b.fresh('c'), [], new Float32Array([v]));
  }
  clip(x: string, lo: number, hi: number, name: string): string {
    return this.b.node('Clip', [x, this.scalar(lo), this.scalar(hi)], this.b.fresh(name));
  }
  clamp(x: V, lo: number, hi: number): V {
    if (lo === -Infinity && hi === Infinity) return x;
    if (lo === 0 && hi === Infinity) return { ...x, name: this.b.node('Relu', [x.name], this.b.fresh(`${x.name}_relu`)) };
    return { ...x, name: this.clip(x.name, lo, hi, `${x.name}_clip`) };
  }

  /** Round to a (per-tensor) uint8/int8 grid and saturate: QuantizeLinear → DequantizeLinear. */
  roundToGrid(x: V, t: TensorInfo): V {
    const b = this.b;
    const zp = b.raw(b.fresh('zero_point'), t.type === TensorType.UINT8 ? ONNX_UINT8 : ONNX_INT8, [], new Uint8Array(new Int8Array([t.q!.zeroPoint[0] ?? 0]).buffer));
    const sc = this.scalar(t.q!.scale[0]!);
    const q = b.node('QuantizeLinear', [x.name, sc, zp], b.fresh(`${x.name}_q`));
    return { ...x, name: b.node('DequantizeLinear', [q, sc, zp], b.fresh(`${x.name}_dq`)) };
  }

  /**
   * The fused activation, then what a quantised kernel does to its result: it rounds it to the output's
   * (scale, zero point) grid and saturates it to the type's range. TOCO-converted models rely on the saturation for
   * their ReLUs, and quantisation-aware-trained models expect the rounding, so by default both are emulated in float
   * with QuantizeLinear → DequantizeLinear; with `quantisedActivations: 'float'` only the saturation (a Clip) is.
   */
  finish(x: V, fused: number, op: OpInfo, out: TensorInfo, requantise: boolean): V {
    let lo = -Infinity;
    let hi = Infinity;
    if (fused === ActivationFunctionType.RELU) lo = 0;
    else if (fused === ActivationFunctionType.RELU6) [lo, hi] = [0, 6];
    else if (fused === ActivationFunctionType.RELU_N1_TO_1) [lo, hi] = [-1, 1];
    else if (fused === ActivationFunctionType.TANH) x = { ...x, name: this.b.node('Tanh', [x.name], this.b.fresh(`${x.name}_tanh`)) };
    else if (fused !== ActivationFunctionType.NONE) this.fail(op, `fused activation ${fused} is not supported`);
    const range = QUANT_RANGE[out.type];
    if (!requantise || !range || !out.q || out.q.scale.length !== 1) return this.clamp(x, lo, hi);
    const s = out.q.scale[0]!;
    const z = out.q.zeroPoint[0] ?? 0;
    const [qlo, qhi] = [(range[0] - z) * s, (range[1] - z) * s];
    if (this.emulate && out.type !== TensorType.INT16) {
      // The fused activation only matters where it is narrower than the representable range.
      if (qlo < lo || qhi > hi) x = this.clamp(x, qlo < lo ? lo : -Infinity, qhi > hi ? hi : Infinity);
      return this.roundToGrid(x, out);
    }
    return this.clamp(x, Math.max(lo, qlo), Math.min(hi, qhi));
  }

  toNhwc(x: V): string {
    return x.shape.length === 4 ? this.b.node('Transpose', [x.name], this.b.fresh('nhwc'), { perm: TO_NHWC }) : x.name;
  }
}
