/**
 * What the three importers share about tensor layout. TF.js and TFLite are NHWC, the ONNX graphs graft writes are
 * NCHW, so weights are permuted, axes renumbered and paddings reordered in one way for every importer.
 */
import type { Attr } from './onnx-builder.js';

/** NHWC axis a is NCHW axis NCHW_OF_NHWC[a]. */
export const NCHW_OF_NHWC = [0, 2, 3, 1];
/** Transpose perms: an NCHW tensor to NHWC, and an NHWC one to NCHW. */
export const TO_NHWC = [0, 2, 3, 1];
export const TO_NCHW = [0, 3, 1, 2];

/**
 * Kernel permutations into ONNX's [out, in/group, kh, kw]. TF.js kernels are HWIO ([kh, kw, in, out]) and depthwise
 * ones HW·C·M (output channel c·M + m reads input channel c); TFLite kernels are OHWI and depthwise ones 1·HW·(C·M).
 */
export const KERNEL_PERM = {
  hwio: [3, 2, 0, 1],
  hwcm: [2, 3, 0, 1],
  ohwi: [0, 3, 1, 2],
  tfliteDepthwise: [3, 0, 1, 2],
} as const;

export const count = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Transpose a row-major array of `shape` by `perm` (a copy, also for the identity). */
export function transposeData<A extends Float32Array | Float64Array>(data: A, shape: readonly number[], perm: readonly number[]): A {
  const out = new (data.constructor as new (n: number) => A)(data.length);
  if (perm.every((p, k) => p === k)) {
    out.set(data);
    return out;
  }
  const newShape = perm.map((p) => shape[p]!);
  const strides = shape.map((_, i) => count(shape.slice(i + 1)));
  const srcStrides = perm.map((p) => strides[p]!);
  const idx = new Array<number>(shape.length).fill(0);
  let src = 0;
  for (let o = 0; o < out.length; o++) {
    out[o] = data[src]!;
    for (let k = perm.length - 1; k >= 0; k--) {
      src += srcStrides[k]!;
      if (++idx[k]! < newShape[k]!) break;
      src -= srcStrides[k]! * newShape[k]!;
      idx[k] = 0;
    }
  }
  return out;
}

/** The ONNX axis order of a TF tensor of rank `r`: ONNX axis j is TF axis onnxAxisOrder(r)[j] (4-D ones are NCHW). */
export const onnxAxisOrder = (r: number): number[] => (r === 4 ? TO_NCHW : [...Array(r).keys()]);

/**
 * TF paddings ([before, after] per TF axis, flattened) as ONNX `pads` (all befores, then all afters, in ONNX axis
 * order).
 */
export function onnxPads(tfPairs: ArrayLike<number>, rank: number): number[] {
  const order = onnxAxisOrder(rank);
  return [...order.map((a) => tfPairs[2 * a]!), ...order.map((a) => tfPairs[2 * a + 1]!)];
}

/** TF's SAME padding of one spatial axis, [before, after] (the extra pixel goes after). */
export function samePads(size: number, k: number, s: number, d: number): [number, number] {
  const total = Math.max((Math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

/**
 * Conv padding attributes for TF's SAME (ONNX auto_pad SAME_UPPER, which puts the extra pixel after, as TF does) or
 * VALID (zero pads). Appended to `attrs`, after kernel/stride attributes, so attribute order stays stable.
 */
export function setSameOrValid(attrs: Record<string, Attr>, same: boolean): void {
  if (same) attrs.auto_pad = 'SAME_UPPER';
  else attrs.pads = [0, 0, 0, 0];
}

/** Output size of a conv / pool along one axis, null when the input size is unknown. */
export function convOutSize(inp: number | null, k: number, s: number, d: number, p: 'same' | [number, number]): number | null {
  if (inp === null) return null;
  if (p === 'same') return Math.ceil(inp / s);
  return Math.floor((inp + p[0] + p[1] - (k - 1) * d - 1) / s) + 1;
}

/** The numpy-broadcast shape of several shapes (null: unknown). */
export function broadcastShape(shapes: (number | null)[][]): (number | null)[] {
  const r = Math.max(...shapes.map((s) => s.length));
  return [...Array(r).keys()].map((i) => {
    let d: number | null = 1;
    for (const s of shapes) {
      const v = s[s.length - r + i];
      if (v === undefined || v === 1) continue;
      if (v === null) d = d === 1 ? null : d;
      else d = v;
    }
    return d;
  });
}

/**
 * Fold an elementwise op over constant inputs, each either a scalar or of the full output `shape`; undefined when
 * they are not all that (then the op is written to the graph instead).
 */
export function foldConstants(inputs: { shape: number[]; data: Float32Array }[], shape: number[], fold: (...v: number[]) => number): Float32Array | undefined {
  if (!inputs.every((t) => count(t.shape) === 1 || t.shape.join() === shape.join())) return undefined;
  return Float32Array.from({ length: count(shape) }, (_, i) => fold(...inputs.map((t) => t.data[count(t.shape) === 1 ? 0 : i]!)));
}
