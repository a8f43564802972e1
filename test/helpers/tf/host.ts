/**
 * Host-side tensors: values known when a plan is built (initializers, Constant nodes, shapes, and everything
 * computed only from those). Shape arithmetic from PyTorch exports (Shape -> Gather -> Unsqueeze -> Concat ->
 * Reshape, pads computed with Sub/Div/Cast/ConstantOfShape/Slice...) is evaluated here, so the runtime graph is pure
 * float32 tensor ops.
 *
 * Floats are stored as Float32Array (each operation rounded to float32, as ONNX Runtime computes it), every other
 * element type as Float64Array (int64 values are exact up to 2^53, which covers shapes and indices).
 */
import onnxProto from 'onnx-proto';
import { halfToFloat, roundHalfEven } from '../../../src/util/numeric.js';

const { onnx } = onnxProto;
type TensorProto = InstanceType<typeof onnx.TensorProto>;
type AttributeProto = InstanceType<typeof onnx.AttributeProto>;

/** ONNX TensorProto.DataType values used here. */
export const DT = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;

const DT_NAMES: Record<number, string> = Object.fromEntries(Object.entries(DT).map(([k, v]) => [v, k.toLowerCase()]));
export function dtypeName(dt: number): string {
  return DT_NAMES[dt] ?? `type ${dt}`;
}

export function isFloatType(dt: number): boolean {
  return dt === DT.FLOAT || dt === DT.FLOAT16 || dt === DT.DOUBLE || dt === DT.BFLOAT16;
}

export type HostData = Float32Array | Float64Array;

export interface HostVal {
  kind: 'host';
  /** ONNX element type. */
  dtype: number;
  shape: number[];
  data: HostData;
  /**
   * Identity for caching device copies across plans: set when the value does not depend on the input's shape
   * (initializers, Constant nodes, and what is computed from those alone).
   */
  key?: string;
}

export function size(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function storageFor(dt: number, n: number): HostData {
  return dt === DT.FLOAT || dt === DT.FLOAT16 || dt === DT.BFLOAT16 ? new Float32Array(n) : new Float64Array(n);
}

export function hostVal(dtype: number, shape: number[], values: ArrayLike<number>, key?: string): HostVal {
  const data = storageFor(dtype, values.length);
  if (dtype === DT.BOOL) for (let i = 0; i < values.length; i++) data[i] = values[i] ? 1 : 0;
  else if (!isFloatType(dtype)) for (let i = 0; i < values.length; i++) data[i] = Math.trunc(values[i]!);
  else data.set(values);
  const v: HostVal = { kind: 'host', dtype, shape: [...shape], data };
  if (key !== undefined) v.key = key;
  return v;
}

/** Numbers of an int-typed (or any) host value as a plain array. */
export function ints(v: HostVal): number[] {
  return Array.from(v.data);
}

function toNum(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v && typeof (v as { toNumber?: () => number }).toNumber === 'function') return (v as { toNumber(): number }).toNumber();
  return Number(v ?? 0);
}

function bf16ToFloat(h: number): number {
  const b = new DataView(new ArrayBuffer(4));
  b.setUint32(0, (h & 0xffff) << 16, true);
  return b.getFloat32(0, true);
}

/** A TensorProto (initializer or attribute) as a host value. Throws on strings and external data. */
export function readTensorProto(t: TensorProto, key?: string): HostVal {
  const dt = t.dataType ?? 0;
  const shape = (t.dims ?? []).map(toNum);
  const n = size(shape);
  if (dt === DT.STRING) throw new Error(`tensor '${t.name}' holds strings`);
  if (t.dataLocation === 1) throw new Error(`tensor '${t.name}' keeps its data in an external file, which is not supported`);
  const out = storageFor(dt, n);
  const raw = t.rawData;
  if (raw && raw.length > 0) {
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const width: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2 };
    const w = width[dt];
    if (!w) throw new Error(`tensor '${t.name}' has unsupported element type ${dtypeName(dt)}`);
    if (raw.byteLength < n * w) throw new Error(`tensor '${t.name}': ${raw.byteLength} bytes of data for ${n} elements`);
    for (let i = 0; i < n; i++) {
      const o = i * w;
      switch (dt) {
        case DT.FLOAT: out[i] = dv.getFloat32(o, true); break;
        case DT.DOUBLE: out[i] = dv.getFloat64(o, true); break;
        case DT.FLOAT16: out[i] = halfToFloat(dv.getUint16(o, true)); break;
        case DT.BFLOAT16: out[i] = bf16ToFloat(dv.getUint16(o, true)); break;
        case DT.INT64: out[i] = Number(dv.getBigInt64(o, true)); break;
        case DT.UINT64: out[i] = Number(dv.getBigUint64(o, true)); break;
        case DT.INT32: out[i] = dv.getInt32(o, true); break;
        case DT.UINT32: out[i] = dv.getUint32(o, true); break;
        case DT.INT16: out[i] = dv.getInt16(o, true); break;
        case DT.UINT16: out[i] = dv.getUint16(o, true); break;
        case DT.INT8: out[i] = dv.getInt8(o); break;
        case DT.UINT8: out[i] = dv.getUint8(o); break;
        case DT.BOOL: out[i] = dv.getUint8(o) ? 1 : 0; break;
      }
    }
  } else {
    let src: ArrayLike<unknown> = [];
    if (dt === DT.FLOAT) src = t.floatData ?? [];
    else if (dt === DT.DOUBLE) src = t.doubleData ?? [];
    else if (dt === DT.INT64) src = t.int64Data ?? [];
    else if (dt === DT.UINT64 || dt === DT.UINT32) src = t.uint64Data ?? [];
    else src = t.int32Data ?? [];
    if (src.length !== n) throw new Error(`tensor '${t.name}': ${src.length} values for shape [${shape.join(',')}]`);
    for (let i = 0; i < n; i++) {
      const x = toNum(src[i]);
      out[i] = dt === DT.FLOAT16 ? halfToFloat(x) : dt === DT.BFLOAT16 ? bf16ToFloat(x) : x;
    }
  }
  const v: HostVal = { kind: 'host', dtype: dt === DT.FLOAT16 || dt === DT.BFLOAT16 ? DT.FLOAT : dt, shape, data: out };
  if (key !== undefined) v.key = key;
  return v;
}

export type AttrValue = number | string | number[] | string[] | HostVal;
export type Attrs = Record<string, AttrValue>;

/** A node's attributes by name (INT/FLOAT as numbers, INTS/FLOATS as arrays, TENSOR as a host value). */
export function readAttributes(list: AttributeProto[] | null | undefined): Attrs {
  const out: Attrs = {};
  for (const a of list ?? []) {
    const name = a.name ?? '';
    switch (a.type) {
      case 1: out[name] = a.f ?? 0; break;
      case 2: out[name] = toNum(a.i); break;
      case 3: out[name] = new TextDecoder().decode(a.s ?? new Uint8Array()); break;
      case 4: if (a.t) out[name] = readTensorProto(a.t as TensorProto); break;
      case 6: out[name] = (a.floats ?? []).map(Number); break;
      case 7: out[name] = (a.ints ?? []).map(toNum); break;
      case 8: out[name] = (a.strings ?? []).map((s) => new TextDecoder().decode(s)); break;
      default: break;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Shapes, broadcasting, layouts

export function broadcastShapes(...shapes: number[][]): number[] {
  const r = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(r).fill(1);
  for (const s of shapes) {
    const off = r - s.length;
    for (let i = 0; i < s.length; i++) {
      const d = s[i]!;
      const o = out[i + off]!;
      if (d === o || d === 1) continue;
      if (o === 1) out[i + off] = d;
      else throw new Error(`shapes [${shapes.map((x) => x.join(',')).join('] and [')}] do not broadcast`);
    }
  }
  return out;
}

/** Element strides of `shape` seen as broadcast to `outShape` (0 along broadcast axes). */
function bstrides(shape: number[], outShape: number[]): number[] {
  const r = outShape.length;
  const off = r - shape.length;
  const st = new Array<number>(r).fill(0);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i + off] = shape[i] === 1 ? 0 : acc;
    acc *= shape[i]!;
  }
  return st;
}

/** out[i] = f(values of each source at i), sources broadcast to outShape. */
function broadcastMap(outShape: number[], srcs: { shape: number[]; data: HostData }[], out: HostData, f: (v: number[]) => number): void {
  const r = outShape.length;
  const n = size(outShape);
  const strides = srcs.map((s) => bstrides(s.shape, outShape));
  const offs = new Array<number>(srcs.length).fill(0);
  const idx = new Array<number>(r).fill(0);
  const vals = new Array<number>(srcs.length);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < srcs.length; k++) vals[k] = srcs[k]!.data[offs[k]!]!;
    out[i] = f(vals);
    for (let ax = r - 1; ax >= 0; ax--) {
      idx[ax]!++;
      for (let k = 0; k < srcs.length; k++) offs[k]! += strides[k]![ax]!;
      if (idx[ax]! < outShape[ax]!) break;
      for (let k = 0; k < srcs.length; k++) offs[k]! -= strides[k]![ax]! * outShape[ax]!;
      idx[ax] = 0;
    }
  }
}

/** physical = transpose(x, perm): out axis i is x's axis perm[i]. */
export function transposeData(shape: number[], data: HostData, perm: number[]): { shape: number[]; data: HostData } {
  const outShape = perm.map((p) => shape[p]!);
  const out = data instanceof Float32Array ? new Float32Array(data.length) : new Float64Array(data.length);
  const inStrides = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) inStrides[i] = inStrides[i + 1]! * shape[i + 1]!;
  const st = perm.map((p) => inStrides[p]!);
  broadcastMapStrided(outShape, st, data, out);
  return { shape: outShape, data: out };
}

function broadcastMapStrided(outShape: number[], st: number[], src: HostData, out: HostData, base = 0): void {
  const r = outShape.length;
  const n = size(outShape);
  const idx = new Array<number>(r).fill(0);
  let off = base;
  for (let i = 0; i < n; i++) {
    out[i] = src[off]!;
    for (let ax = r - 1; ax >= 0; ax--) {
      idx[ax]!++;
      off += st[ax]!;
      if (idx[ax]! < outShape[ax]!) break;
      off -= st[ax]! * outShape[ax]!;
      idx[ax] = 0;
    }
  }
}

/** The host value reshaped to `rank` (leading 1s) and laid out as transpose(., perm). */
export function hostToLayout(h: HostVal, rank: number, perm: number[]): { shape: number[]; data: HostData } {
  const shape = [...new Array<number>(rank - h.shape.length).fill(1), ...h.shape];
  if (perm.every((p, i) => p === i)) return { shape, data: h.data };
  return transposeData(shape, h.data, perm);
}

// ---------------------------------------------------------------------------------------------------------------
// Host evaluation of ONNX ops

function normAxis(a: number, r: number, what = 'axis'): number {
  const x = a < 0 ? a + r : a;
  if (x < 0 || x >= Math.max(r, 1)) throw new Error(`${what} ${a} out of range for rank ${r}`);
  return x;
}

function castValue(x: number, to: number): number {
  switch (to) {
    case DT.FLOAT:
    case DT.FLOAT16:
    case DT.BFLOAT16:
      return Math.fround(x);
    case DT.DOUBLE:
      return x;
    case DT.BOOL:
      return x ? 1 : 0;
    case DT.UINT8:
      return Math.trunc(x) & 0xff;
    case DT.INT8:
      return (Math.trunc(x) << 24) >> 24;
    case DT.INT16:
      return (Math.trunc(x) << 16) >> 16;
    case DT.UINT16:
      return Math.trunc(x) & 0xffff;
    case DT.INT32:
      return Math.trunc(x) | 0;
    default:
      return Number.isFinite(x) ? Math.trunc(x) : x;
  }
}

function erf(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse; use a series / continued fraction good to ~1e-15.
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let sum = x;
    let term = x;
    const x2 = x * x;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (ax + f);
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f);
  return x > 0 ? 1 - erfc : erfc - 1;
}

const UNARY: Record<string, (x: number) => number> = {
  Neg: (x) => -x,
  Abs: Math.abs,
  Floor: Math.floor,
  Ceil: Math.ceil,
  Round: roundHalfEven,
  Sqrt: Math.sqrt,
  Reciprocal: (x) => 1 / x,
  Exp: Math.exp,
  Log: Math.log,
  Relu: (x) => (x > 0 ? x : 0),
  Sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  Tanh: Math.tanh,
  Sin: Math.sin,
  Cos: Math.cos,
  Sign: Math.sign,
  Erf: erf,
  Not: (x) => (x ? 0 : 1),
  Identity: (x) => x,
  Softplus: (x) => Math.log1p(Math.exp(x)),
  Softsign: (x) => x / (1 + Math.abs(x)),
};

const COMPARE: Record<string, (a: number, b: number) => number> = {
  Equal: (a, b) => (a === b ? 1 : 0),
  Less: (a, b) => (a < b ? 1 : 0),
  Greater: (a, b) => (a > b ? 1 : 0),
  LessOrEqual: (a, b) => (a <= b ? 1 : 0),
  GreaterOrEqual: (a, b) => (a >= b ? 1 : 0),
  And: (a, b) => (a && b ? 1 : 0),
  Or: (a, b) => (a || b ? 1 : 0),
  Xor: (a, b) => ((a ? 1 : 0) ^ (b ? 1 : 0)),
};

function arith(op: string, isInt: boolean, fmod: boolean): ((a: number, b: number) => number) | undefined {
  switch (op) {
    case 'Add': return (a, b) => a + b;
    case 'Sub': return (a, b) => a - b;
    case 'Mul': return (a, b) => a * b;
    case 'Div': return isInt ? (a, b) => Math.trunc(a / b) : (a, b) => a / b;
    case 'Pow': return (a, b) => a ** b;
    case 'Max': return (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b));
    case 'Min': return (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b));
    case 'Sum': return (a, b) => a + b;
    case 'Mod':
      if (fmod || !isInt) return (a, b) => a % b;
      return (a, b) => {
        const m = a % b;
        return m !== 0 && (m < 0) !== (b < 0) ? m + b : m;
      };
    default: return undefined;
  }
}

function binary(a: HostVal, b: HostVal, f: (x: number, y: number) => number, outType: number): HostVal {
  const shape = broadcastShapes(a.shape, b.shape);
  const out = storageFor(outType, size(shape));
  broadcastMap(shape, [a, b], out, (v) => castValue(f(v[0]!, v[1]!), outType));
  return { kind: 'host', dtype: outType, shape, data: out };
}

function reduceAxes(r: number, axes: number[] | undefined, noopWithEmpty: boolean): number[] | null {
  if (!axes || axes.length === 0) return noopWithEmpty ? null : Array.from({ length: r }, (_, i) => i);
  return [...new Set(axes.map((a) => normAxis(a, r)))].sort((x, y) => x - y);
}

function reduce(x: HostVal, axes: number[] | null, keep: boolean, op: string): HostVal {
  if (axes === null) return x;
  const r = x.shape.length;
  const outShapeKeep = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const n = size(outShapeKeep);
  const init = op === 'ReduceMax' ? -Infinity : op === 'ReduceMin' ? Infinity : op === 'ReduceProd' ? 1 : 0;
  const acc = new Float64Array(n).fill(init);
  const outStrides = bstrides(outShapeKeep, x.shape);
  const idx = new Array<number>(r).fill(0);
  let off = 0;
  for (let i = 0; i < x.data.length; i++) {
    const v = x.data[i]!;
    if (op === 'ReduceMax') acc[off] = Math.max(acc[off]!, v);
    else if (op === 'ReduceMin') acc[off] = Math.min(acc[off]!, v);
    else if (op === 'ReduceProd') acc[off]! *= v;
    else if (op === 'ReduceSumSquare') acc[off]! += v * v;
    else if (op === 'ReduceL1') acc[off]! += Math.abs(v);
    else acc[off]! += v;
    for (let ax = r - 1; ax >= 0; ax--) {
      idx[ax]!++;
      off += outStrides[ax]!;
      if (idx[ax]! < x.shape[ax]!) break;
      off -= outStrides[ax]! * x.shape[ax]!;
      idx[ax] = 0;
    }
  }
  const count = size(axes.map((a) => x.shape[a]!));
  if (op === 'ReduceMean') for (let i = 0; i < n; i++) acc[i]! /= count;
  const shape = keep ? outShapeKeep : x.shape.filter((_, i) => !axes.includes(i));
  return hostVal(x.dtype, shape, acc);
}

/** Slice bounds for one axis per ONNX (clamping, negative indices, negative steps). */
export function sliceBounds(dim: number, start: number, end: number, step: number): { start: number; count: number } {
  if (step === 0) throw new Error('Slice step 0');
  let s = start < 0 ? start + dim : start;
  let e = end < 0 ? end + dim : end;
  if (step > 0) {
    s = Math.min(Math.max(s, 0), dim);
    e = Math.min(Math.max(e, 0), dim);
    return { start: s, count: Math.max(0, Math.ceil((e - s) / step)) };
  }
  s = Math.min(Math.max(s, -1), dim - 1);
  e = Math.min(Math.max(e, -1), dim - 1);
  return { start: s, count: Math.max(0, Math.ceil((e - s) / step)) };
}

export interface SliceSpec { starts: number[]; counts: number[]; steps: number[] }

/** Per-axis slice spec over all axes of a tensor of `shape`. */
export function sliceSpec(shape: number[], starts: number[], ends: number[], axes: number[] | undefined, steps: number[] | undefined): SliceSpec {
  const r = shape.length;
  const out: SliceSpec = { starts: new Array<number>(r).fill(0), counts: [...shape], steps: new Array<number>(r).fill(1) };
  const ax = axes ?? starts.map((_, i) => i);
  ax.forEach((a0, i) => {
    const a = normAxis(a0, r);
    const st = steps?.[i] ?? 1;
    const b = sliceBounds(shape[a]!, starts[i]!, ends[i]!, st);
    out.starts[a] = b.start;
    out.counts[a] = b.count;
    out.steps[a] = st;
  });
  return out;
}

function sliceHost(x: HostVal, spec: SliceSpec): HostVal {
  const r = x.shape.length;
  const inStrides = new Array<number>(r).fill(1);
  for (let i = r - 2; i >= 0; i--) inStrides[i] = inStrides[i + 1]! * x.shape[i + 1]!;
  let base = 0;
  for (let i = 0; i < r; i++) base += spec.starts[i]! * inStrides[i]!;
  const st = inStrides.map((s, i) => s * spec.steps[i]!);
  const out = storageFor(x.dtype, size(spec.counts));
  if (out.length > 0) broadcastMapStrided(spec.counts, st, x.data, out, base);
  return { kind: 'host', dtype: x.dtype, shape: spec.counts, data: out };
}

/** Output shape of Reshape per ONNX (0 copies the input dim unless allowzero, -1 inferred). */
export function reshapeTarget(inShape: number[], target: number[], allowZero: boolean): number[] {
  const out = target.map((d, i) => (d === 0 && !allowZero ? inShape[i]! : d));
  const known = out.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const total = size(inShape);
  const neg = out.indexOf(-1);
  if (neg >= 0) out[neg] = known === 0 ? 0 : total / known;
  if (size(out) !== total || out.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`cannot reshape [${inShape.join(',')}] to [${target.join(',')}]`);
  }
  return out;
}

export function unsqueezeShape(shape: number[], axes: number[]): number[] {
  const r = shape.length + axes.length;
  const ax = axes.map((a) => normAxis(a, r, 'Unsqueeze axis')).sort((x, y) => x - y);
  const out: number[] = [];
  let j = 0;
  for (let i = 0; i < r; i++) out.push(ax.includes(i) ? 1 : shape[j++]!);
  return out;
}

export function squeezeShape(shape: number[], axes: number[] | undefined): number[] {
  if (!axes || axes.length === 0) return shape.filter((d) => d !== 1);
  const ax = axes.map((a) => normAxis(a, shape.length, 'Squeeze axis'));
  for (const a of ax) if (shape[a] !== 1) throw new Error(`cannot squeeze axis ${a} of size ${shape[a]}`);
  return shape.filter((_, i) => !ax.includes(i));
}

export function flattenShape(shape: number[], axis: number): number[] {
  const a = axis < 0 ? axis + shape.length : axis;
  return [size(shape.slice(0, a)), size(shape.slice(a))];
}

export interface HostCtx {
  op: string;
  opset: number;
  attrs: Attrs;
  /** Inputs (undefined for omitted optional inputs). A runtime input only exposes its shape. */
  inputs: (HostVal | { kind: 'rt'; shape: number[] } | undefined)[];
  /** How many outputs the node declares. */
  nOutputs: number;
}

function need(v: HostCtx['inputs'][number], what: string): HostVal {
  if (!v || v.kind !== 'host') throw new Error(`${what} must be known when the graph is loaded`);
  return v;
}

function optInts(v: HostCtx['inputs'][number]): number[] | undefined {
  return v && v.kind === 'host' ? ints(v) : undefined;
}

/** Integer range of a quantized element type (ONNX QuantizeLinear saturation). */
export function quantRange(dt: number): [number, number] {
  switch (dt) {
    case DT.INT8: return [-128, 127];
    case DT.UINT16: return [0, 65535];
    case DT.INT16: return [-32768, 32767];
    case DT.INT32: return [-2147483648, 2147483647];
    default: return [0, 255];
  }
}

/** Scale / zero point of (De)QuantizeLinear as values broadcasting against a rank-r input along `axis`. */
export function quantParams(scale: HostVal, zp: HostVal | undefined, r: number, axis: number): { scale: HostVal; zp: HostVal | undefined } {
  if (scale.data.length <= 1) return { scale: { ...scale, shape: [] }, zp: zp && { ...zp, shape: [] } };
  const a = axis < 0 ? axis + r : axis;
  const shape = Array.from({ length: r }, (_, i) => (i === a ? scale.data.length : 1));
  const key = (v: HostVal) => (v.key === undefined ? undefined : `${v.key}|ax${a}r${r}`);
  return { scale: { ...scale, shape, key: key(scale) }, zp: zp && { ...zp, shape, key: key(zp) } };
}

/** Ops evaluated on the host when all their (data) inputs are host values. */
export const HOST_OPS = new Set([
  'QuantizeLinear', 'DequantizeLinear',
  'Constant', 'Shape', 'Size', 'Gather', 'Unsqueeze', 'Squeeze', 'Concat', 'Reshape', 'Flatten', 'Transpose', 'Slice',
  'Cast', 'CastLike', 'Identity', 'Dropout', 'ConstantOfShape', 'Range', 'Expand', 'Tile', 'Where', 'Clip',
  'ReduceSum', 'ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceSumSquare', 'ReduceL1',
  'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Mod', 'Max', 'Min', 'Sum', 'Mean',
  ...Object.keys(UNARY), ...Object.keys(COMPARE),
]);

/** Ops whose result only depends on their input's shape: evaluated on the host even for runtime inputs. */
export const SHAPE_OPS = new Set(['Shape', 'Size']);

/** Evaluate a node on the host. Returns its outputs. */
export function evalHost(c: HostCtx): HostVal[] {
  const { op, attrs, inputs } = c;
  const x0 = inputs[0];
  switch (op) {
    case 'Constant': {
      if (attrs.value && typeof attrs.value === 'object' && !Array.isArray(attrs.value)) return [attrs.value as HostVal];
      if (typeof attrs.value_float === 'number') return [hostVal(DT.FLOAT, [], [attrs.value_float])];
      if (Array.isArray(attrs.value_floats)) return [hostVal(DT.FLOAT, [attrs.value_floats.length], attrs.value_floats as number[])];
      if (typeof attrs.value_int === 'number') return [hostVal(DT.INT64, [], [attrs.value_int])];
      if (Array.isArray(attrs.value_ints)) return [hostVal(DT.INT64, [attrs.value_ints.length], attrs.value_ints as number[])];
      throw new Error('Constant without a numeric value');
    }
    case 'Shape': {
      const s = x0!.shape;
      const r = s.length;
      let start = typeof attrs.start === 'number' ? attrs.start : 0;
      let end = typeof attrs.end === 'number' ? attrs.end : r;
      if (start < 0) start += r;
      if (end < 0) end += r;
      start = Math.min(Math.max(start, 0), r);
      end = Math.min(Math.max(end, 0), r);
      const dims = s.slice(start, Math.max(start, end));
      return [hostVal(DT.INT64, [dims.length], dims)];
    }
    case 'Size':
      return [hostVal(DT.INT64, [], [size(x0!.shape)])];
    case 'Identity':
      return [need(x0, 'input')];
    case 'Dropout': {
      const x = need(x0, 'input');
      const outs: HostVal[] = [x];
      if (c.nOutputs > 1) outs.push(hostVal(DT.BOOL, x.shape, new Array<number>(x.data.length).fill(1)));
      return outs;
    }
    case 'Cast':
      return [hostVal(attrs.to as number, need(x0, 'input').shape, Array.from(need(x0, 'input').data, (v) => castValue(v, attrs.to as number)))];
    case 'CastLike': {
      const to = need(inputs[1], 'target').dtype;
      return [hostVal(to, need(x0, 'input').shape, Array.from(need(x0, 'input').data, (v) => castValue(v, to)))];
    }
    case 'Gather': {
      const data = need(x0, 'data');
      const idx = need(inputs[1], 'indices');
      const r = data.shape.length;
      const axis = normAxis(typeof attrs.axis === 'number' ? attrs.axis : 0, r);
      const outer = size(data.shape.slice(0, axis));
      const inner = size(data.shape.slice(axis + 1));
      const dim = data.shape[axis]!;
      const shape = [...data.shape.slice(0, axis), ...idx.shape, ...data.shape.slice(axis + 1)];
      const out = storageFor(data.dtype, size(shape));
      let o = 0;
      for (let a = 0; a < outer; a++) {
        for (let k = 0; k < idx.data.length; k++) {
          let j = idx.data[k]!;
          if (j < 0) j += dim;
          if (j < 0 || j >= dim) throw new Error(`Gather index ${idx.data[k]} out of range for dimension ${dim}`);
          const base = (a * dim + j) * inner;
          for (let q = 0; q < inner; q++) out[o++] = data.data[base + q]!;
        }
      }
      return [{ kind: 'host', dtype: data.dtype, shape, data: out }];
    }
    case 'Unsqueeze': {
      const x = need(x0, 'input');
      const axes = c.opset >= 13 ? ints(need(inputs[1], 'axes')) : (attrs.axes as number[]);
      return [{ ...x, key: undefined, shape: unsqueezeShape(x.shape, axes) }];
    }
    case 'Squeeze': {
      const x = need(x0, 'input');
      const axes = c.opset >= 13 ? optInts(inputs[1]) : (attrs.axes as number[] | undefined);
      return [{ ...x, key: undefined, shape: squeezeShape(x.shape, axes) }];
    }
    case 'Reshape': {
      const x = need(x0, 'input');
      const target = c.opset >= 5 ? ints(need(inputs[1], 'shape')) : (attrs.shape as number[]);
      return [{ ...x, key: undefined, shape: reshapeTarget(x.shape, target, attrs.allowzero === 1) }];
    }
    case 'Flatten': {
      const x = need(x0, 'input');
      return [{ ...x, key: undefined, shape: flattenShape(x.shape, typeof attrs.axis === 'number' ? attrs.axis : 1) }];
    }
    case 'Transpose': {
      const x = need(x0, 'input');
      const perm = (attrs.perm as number[] | undefined) ?? x.shape.map((_, i) => x.shape.length - 1 - i);
      const t = transposeData(x.shape, x.data, perm);
      return [{ kind: 'host', dtype: x.dtype, shape: t.shape, data: t.data }];
    }
    case 'Concat': {
      const xs = inputs.filter((v): v is HostVal => !!v).map((v) => need(v, 'input'));
      const nonEmpty = xs.filter((v) => !(v.shape.length === 1 && v.shape[0] === 0));
      const list = nonEmpty.length ? nonEmpty : xs;
      const r = list[0]!.shape.length;
      const axis = normAxis(attrs.axis as number, r);
      const outer = size(list[0]!.shape.slice(0, axis));
      const shape = [...list[0]!.shape];
      shape[axis] = list.reduce((a, v) => a + v.shape[axis]!, 0);
      const out = storageFor(list[0]!.dtype, size(shape));
      let o = 0;
      for (let a = 0; a < outer; a++) {
        for (const v of list) {
          const chunk = size(v.shape.slice(axis));
          out.set(v.data.subarray(a * chunk, (a + 1) * chunk), o);
          o += chunk;
        }
      }
      return [{ kind: 'host', dtype: list[0]!.dtype, shape, data: out }];
    }
    case 'Slice': {
      const x = need(x0, 'input');
      let spec: SliceSpec;
      if (c.opset < 10) spec = sliceSpec(x.shape, attrs.starts as number[], attrs.ends as number[], attrs.axes as number[] | undefined, undefined);
      else spec = sliceSpec(x.shape, ints(need(inputs[1], 'starts')), ints(need(inputs[2], 'ends')), optInts(inputs[3]), optInts(inputs[4]));
      return [sliceHost(x, spec)];
    }
    case 'ConstantOfShape': {
      const shape = ints(need(x0, 'shape'));
      const v = attrs.value as HostVal | undefined;
      const dt = v ? v.dtype : DT.FLOAT;
      const fill = v ? v.data[0]! : 0;
      return [hostVal(dt, shape, new Array<number>(size(shape)).fill(fill))];
    }
    case 'Range': {
      const [s, l, d] = [need(inputs[0], 'start'), need(inputs[1], 'limit'), need(inputs[2], 'delta')];
      const start = s.data[0]!;
      const delta = d.data[0]!;
      const n = Math.max(Math.ceil((l.data[0]! - start) / delta), 0);
      return [hostVal(s.dtype, [n], Array.from({ length: n }, (_, i) => start + i * delta))];
    }
    case 'Expand': {
      const x = need(x0, 'input');
      const shape = broadcastShapes(x.shape, ints(need(inputs[1], 'shape')));
      const out = storageFor(x.dtype, size(shape));
      broadcastMap(shape, [x], out, (v) => v[0]!);
      return [{ kind: 'host', dtype: x.dtype, shape, data: out }];
    }
    case 'Tile': {
      const x = need(x0, 'input');
      const reps = ints(need(inputs[1], 'repeats'));
      const shape = x.shape.map((d, i) => d * reps[i]!);
      const out = storageFor(x.dtype, size(shape));
      const r = shape.length;
      const idx = new Array<number>(r).fill(0);
      for (let i = 0; i < out.length; i++) {
        let off = 0;
        for (let a = 0; a < r; a++) off = off * x.shape[a]! + (idx[a]! % x.shape[a]!);
        out[i] = x.data[off]!;
        for (let a = r - 1; a >= 0; a--) {
          if (++idx[a]! < shape[a]!) break;
          idx[a] = 0;
        }
      }
      return [{ kind: 'host', dtype: x.dtype, shape, data: out }];
    }
    case 'Where': {
      const [cnd, a, b] = [need(inputs[0], 'condition'), need(inputs[1], 'x'), need(inputs[2], 'y')];
      const shape = broadcastShapes(cnd.shape, a.shape, b.shape);
      const out = storageFor(a.dtype, size(shape));
      broadcastMap(shape, [cnd, a, b], out, (v) => (v[0] ? v[1]! : v[2]!));
      return [{ kind: 'host', dtype: a.dtype, shape, data: out }];
    }
    case 'Clip': {
      const x = need(x0, 'input');
      const lo = c.opset >= 11 ? (inputs[1] ? need(inputs[1], 'min').data[0]! : -Infinity) : typeof attrs.min === 'number' ? attrs.min : -Infinity;
      const hi = c.opset >= 11 ? (inputs[2] ? need(inputs[2], 'max').data[0]! : Infinity) : typeof attrs.max === 'number' ? attrs.max : Infinity;
      return [hostVal(x.dtype, x.shape, Array.from(x.data, (v) => Math.min(Math.max(v, lo), hi)))];
    }
    case 'ReduceSum':
    case 'ReduceMean':
    case 'ReduceMax':
    case 'ReduceMin':
    case 'ReduceProd':
    case 'ReduceSumSquare':
    case 'ReduceL1': {
      const x = need(x0, 'input');
      const axesFromInput = op === 'ReduceSum' ? c.opset >= 13 : c.opset >= 18;
      const axes = axesFromInput ? optInts(inputs[1]) : (attrs.axes as number[] | undefined);
      const keep = attrs.keepdims === undefined ? true : attrs.keepdims !== 0;
      return [reduce(x, reduceAxes(x.shape.length, axes, attrs.noop_with_empty_axes === 1), keep, op)];
    }
    case 'QuantizeLinear':
    case 'DequantizeLinear': {
      const x = need(x0, 'input');
      const sc = need(inputs[1], 'scale');
      const zp0 = inputs[2] ? need(inputs[2], 'zero point') : undefined;
      const { scale, zp } = quantParams(sc, zp0, x.shape.length, typeof attrs.axis === 'number' ? attrs.axis : 1);
      if (op === 'DequantizeLinear') {
        const shifted = zp ? binary(x, zp, (a, b) => a - b, DT.FLOAT) : { ...x, dtype: DT.FLOAT, data: Float32Array.from(x.data) };
        return [binary(shifted, scale, (a, b) => a * b, DT.FLOAT)];
      }
      const to = zp0 ? zp0.dtype : DT.UINT8;
      const [lo, hi] = quantRange(to);
      const q = binary(x, scale, (a, b) => roundHalfEven(a / b), DT.DOUBLE);
      const withZp = zp ? binary(q, zp, (a, b) => a + b, DT.DOUBLE) : q;
      return [hostVal(to, withZp.shape, Array.from(withZp.data, (v) => Math.min(Math.max(v, lo), hi)))];
    }
    default:
      break;
  }
  if (UNARY[op]) {
    const x = need(x0, 'input');
    const f = UNARY[op]!;
    return [hostVal(x.dtype, x.shape, Array.from(x.data, (v) => castValue(f(v), x.dtype)))];
  }
  if (COMPARE[op]) return [binary(need(x0, 'a'), need(inputs[1], 'b'), COMPARE[op]!, DT.BOOL)];
  if (op === 'Mean') {
    const xs = inputs.map((v) => need(v, 'input'));
    let acc = xs[0]!;
    for (const v of xs.slice(1)) acc = binary(acc, v, (p, q) => p + q, acc.dtype);
    return [hostVal(acc.dtype, acc.shape, Array.from(acc.data, (v) => v / xs.length))];
  }
  const a0 = need(x0, 'input');
  const f = arith(op, !isFloatType(a0.dtype), attrs.fmod === 1);
  if (f) {
    let acc = a0;
    for (const v of inputs.slice(1)) acc = binary(acc, need(v, 'input'), f, a0.dtype);
    return [acc];
  }
  throw new Error(`no host evaluation for ${op}`);
}
