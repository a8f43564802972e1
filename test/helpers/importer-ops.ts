/**
 * Helpers for testing importer handlers one at a time: a plain NHWC reference convolution and padding, layout
 * conversion, running ONNX bytes with onnxruntime-node, and reading back the nodes and initializers written.
 */
import assert from 'node:assert/strict';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';

const { onnx } = onnxProto;

/** Deterministic numbers in [-1, 1). */
export const noise = (n: number, seed: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 97.13 + i * 12.9898) * 0.999);

/** An NHWC tensor of batch 1. */
export interface Nhwc { h: number; w: number; c: number; d: Float32Array }

export function nchwOf(x: Nhwc): Float32Array {
  const out = new Float32Array(x.d.length);
  for (let i = 0; i < x.h; i++) for (let j = 0; j < x.w; j++) for (let k = 0; k < x.c; k++) out[(k * x.h + i) * x.w + j] = x.d[(i * x.w + j) * x.c + k]!;
  return out;
}

/**
 * TF's convolution (batch 1, NHWC). `w` is HWIO [kh, kw, C, O], or for a depthwise conv HW·C·M [kh, kw, C, M] with
 * output channel c·M + m. SAME puts the smaller half of the padding before.
 */
export function convRef(x: Nhwc, w: Float32Array, kh: number, kw: number, outOrMult: number, opts: { stride?: number; same?: boolean; depthwise?: boolean; bias?: ArrayLike<number> } = {}): Nhwc {
  const s = opts.stride ?? 1;
  const oh = opts.same ? Math.ceil(x.h / s) : Math.floor((x.h - kh) / s) + 1;
  const ow = opts.same ? Math.ceil(x.w / s) : Math.floor((x.w - kw) / s) + 1;
  const pt = opts.same ? Math.floor(Math.max((oh - 1) * s + kh - x.h, 0) / 2) : 0;
  const pl = opts.same ? Math.floor(Math.max((ow - 1) * s + kw - x.w, 0) / 2) : 0;
  const oc = opts.depthwise ? x.c * outOrMult : outOrMult;
  const at = (i: number, j: number, k: number) => (i < 0 || j < 0 || i >= x.h || j >= x.w ? 0 : x.d[(i * x.w + j) * x.c + k]!);
  const d = new Float32Array(oh * ow * oc);
  for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++) for (let o = 0; o < oc; o++) {
    let sum = opts.bias?.[o] ?? 0;
    for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) {
      const [yi, xj] = [i * s + a - pt, j * s + b - pl];
      if (opts.depthwise) sum += at(yi, xj, Math.floor(o / outOrMult)) * w[((a * kw + b) * x.c + Math.floor(o / outOrMult)) * outOrMult + (o % outOrMult)]!;
      else for (let k = 0; k < x.c; k++) sum += at(yi, xj, k) * w[((a * kw + b) * x.c + k) * outOrMult + o]!;
    }
    d[(i * ow + j) * oc + o] = sum;
  }
  return { h: oh, w: ow, c: oc, d };
}

/** Zero padding of H and W (batch 1, NHWC). */
export function padRef(x: Nhwc, top: number, bottom: number, left: number, right: number): Nhwc {
  const h = x.h + top + bottom;
  const w = x.w + left + right;
  const d = new Float32Array(h * w * x.c);
  for (let i = 0; i < x.h; i++) for (let j = 0; j < x.w; j++) for (let k = 0; k < x.c; k++) d[((i + top) * w + j + left) * x.c + k] = x.d[(i * x.w + j) * x.c + k]!;
  return { h, w, c: x.c, d };
}

export async function runOnnx(bytes: Uint8Array, feeds: Record<string, [Float32Array, number[]]>): Promise<Record<string, { data: Float32Array; dims: readonly number[] }>> {
  const s = await ort.InferenceSession.create(bytes);
  const inputs = Object.fromEntries(Object.entries(feeds).map(([k, [d, dims]]) => [k, new ort.Tensor('float32', d, dims)]));
  const out = await s.run(inputs);
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, { data: t.data as Float32Array, dims: t.dims }]));
}

export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'same length');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export interface WrittenNode { op: string; inputs: string[]; attrs: Record<string, unknown> }

/** The nodes, initializer shapes and int64 initializer values of ONNX bytes, attributes as plain numbers / strings / arrays. */
export function written(bytes: Uint8Array): { nodes: WrittenNode[]; inits: Map<string, number[]>; int64s: Map<string, number[]> } {
  const g = onnx.ModelProto.decode(bytes).graph!;
  const nodes = (g.node ?? []).map((n) => ({
    op: n.opType!,
    inputs: [...(n.input ?? [])],
    attrs: Object.fromEntries(
      (n.attribute ?? []).map((a) => {
        if (a.type === 2) return [a.name!, Number(a.i)];
        if (a.type === 1) return [a.name!, a.f];
        if (a.type === 3) return [a.name!, new TextDecoder().decode(a.s!)];
        if (a.type === 7) return [a.name!, (a.ints ?? []).map(Number)];
        return [a.name!, [...(a.floats ?? [])]];
      }),
    ),
  }));
  const inits = new Map((g.initializer ?? []).map((t) => [t.name!, (t.dims ?? []).map(Number)]));
  const int64s = new Map(
    (g.initializer ?? []).filter((t) => t.dataType === 7).map((t) => {
      const raw = t.rawData!;
      return [t.name!, [...new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength))].map(Number)];
    }),
  );
  return { nodes, inits, int64s };
}
