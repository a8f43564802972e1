/**
 * Kernels the TF.js wasm backend lacks (4.22.0), registered for it so that gradients run on wasm.
 *
 * The gap, found by diffing the kernels registered for cpu and for wasm (and confirmed by running the gradient of
 * every op the executor emits on wasm — see test/tf-wasm-kernels.test.ts):
 *   Conv2DBackpropFilter, DepthwiseConv2dNativeBackpropInput, DepthwiseConv2dNativeBackpropFilter (conv/depthwise
 *   weight and input gradients), UnsortedSegmentSum (gradient of gather), Einsum, RaggedGather, RaggedRange,
 *   RaggedTensorToTensor; plus complex/string/canvas kernels (Complex, ComplexAbs, FFT, IFFT, Real, Imag,
 *   StaticRegexReplace, Draw) which are of no use here and stay unregistered.
 *
 * The hot ones are composed from fast wasm kernels (XNNPACK convolutions and matmuls):
 *   - DepthwiseConv2dNativeBackpropInput: a depthwise convolution of the zero-upsampled, padded `dy` with the
 *     spatially flipped filter;
 *   - Conv2DBackpropFilter: a matmul for 1x1 stride-1 convolutions, else a convolution that swaps the roles of batch
 *     and channels (`x` as [C, H, W, N] convolved with `dy` as filter [Ho, Wo, N, M], dilated by the stride);
 *   - DepthwiseConv2dNativeBackpropFilter: a hand-assembled wasm SIMD loop over the backend's heap (simd.ts; see
 *     `depthwiseBackpropFilterSimd`), else (multiplier > 1, channels not a multiple of 4) a depthwise convolution of
 *     the padded input with `dy` as the (per-channel, stride-dilated) filter;
 *   - Identity: shares the input's data (wasm's own kernel copies it).
 * The rest delegate to the cpu backend's kernel functions: inputs are read from the wasm heap, written to the cpu
 * backend, the cpu kernel runs, and its outputs are copied back into wasm tensors.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import { madRowsFor } from './simd.js';

/** Missing kernels that have nothing to do with real-valued tensors; left alone. */
const IRRELEVANT = new Set(['Complex', 'ComplexAbs', 'FFT', 'IFFT', 'Real', 'Imag', 'StaticRegexReplace', 'Draw']);

interface DataBackend {
  readSync(dataId: object): ArrayLike<number> | Uint8Array[];
  write(values: unknown, shape: number[], dtype: tf.DataType): object;
  disposeData(dataId: object, force?: boolean): boolean;
}
interface WasmBackend extends DataBackend {
  incRef(dataId: object): void;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: tf.backend_util.BackendValues): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): tf.backend_util.TypedArray;
}

/** A wasm kernel that runs the cpu backend's kernel `name` on copies of its inputs. */
export function cpuDelegate(name: string): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const wasm = backend as WasmBackend;
    const cpuKernel = tf.getKernel(name, 'cpu');
    const cpu = tf.findBackend('cpu') as unknown as DataBackend | null;
    if (!cpuKernel || !cpu) throw new Error(`cpu kernel ${name} unavailable to back the wasm backend`);
    // Some kernels (Einsum) take an array of inputs rather than a map.
    const cpuInputs = (Array.isArray(inputs) ? [] : {}) as NamedTensorInfoMap;
    const made: object[] = [];
    for (const [key, t] of Object.entries(inputs)) {
      if (!t) continue;
      const values = wasm.readSync(t.dataId);
      const dataId = cpu.write(values, t.shape, t.dtype);
      made.push(dataId);
      (cpuInputs as Record<string, TensorInfo>)[key] = { dataId, shape: t.shape, dtype: t.dtype };
    }
    try {
      const res = cpuKernel.kernelFunc({ inputs: cpuInputs, backend: cpu, attrs: attrs as NamedAttrMap });
      const outs = Array.isArray(res) ? res : [res];
      const copies = outs.map((o) => {
        const values = cpu.readSync(o.dataId) as tf.backend_util.BackendValues;
        if (!made.includes(o.dataId)) made.push(o.dataId);
        return wasm.makeOutput(o.shape, o.dtype, undefined, values);
      });
      return Array.isArray(res) ? copies : copies[0]!;
    } finally {
      for (const id of made) cpu.disposeData(id, true);
    }
  };
}

type Pad4 = { top: number; bottom: number; left: number; right: number };

/** Output geometry and padding of a conv, as TF.js computes it from the kernel attributes. */
function convInfo(xShape: number[], filterShape: number[], attrs: NamedAttrMap, depthwise: boolean) {
  const { strides, pad, dimRoundingMode, dilations } = attrs as {
    strides: [number, number] | number;
    pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    dilations?: [number, number] | number;
  };
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    dilations ?? 1,
    pad,
    dimRoundingMode,
    depthwise,
    'channelsLast',
  );
}

function channelsLast(attrs: NamedAttrMap): boolean {
  const f = (attrs as { dataFormat?: string }).dataFormat;
  return f === undefined || f === 'NHWC' || f === 'channelsLast';
}

/**
 * `dy` [N,Ho,Wo,C] with (s-1) zeros after every row/column: [N,Ho*sh,Wo*sw,C] (the last s-1 rows/columns are
 * zeros beyond the (Ho-1)*sh+1 that matter; callers account for them instead of slicing, which is slow on wasm).
 */
function upsampleZeros(dy: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  if (sh === 1 && sw === 1) return dy;
  const [n, h, w, c] = dy.shape;
  let t: tf.Tensor = tf.reshape(dy, [n, h, 1, w, 1, c]);
  t = tf.pad(t, [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]]);
  return tf.reshape(t, [n, h * sh, w * sw, c]) as tf.Tensor4D;
}

/** Geometry of a conv for its input gradient (effective kernel = dilated kernel extent). */
export interface BackpropGeom { strideH: number; strideW: number; ekh: number; ekw: number; padTop: number; padLeft: number }

/**
 * `dy` zero-upsampled by the stride (and cropped where needed), with the padding that makes a stride-1 convolution
 * with the spatially flipped filter give the gradient w.r.t. an input of spatial size inH x inW. The padding is
 * left to the convolution (explicit padding; a separate pad op costs a full copy on wasm).
 */
export function backpropInputPlan(dy: tf.Tensor4D, g: BackpropGeom, inH: number, inW: number): { src: tf.Tensor4D; pad: tf.backend_util.ExplicitPadding | 'valid' } {
  const up = upsampleZeros(dy, g.strideH, g.strideW);
  // Trailing zero rows/columns of the upsampled dy beyond (Ho-1)*sh+1 count as bottom/right padding already.
  const [n, uh, uw, ch] = up.shape;
  // Input row r receives from upsampled rows r + padTop - (ekh-1) .. r + padTop; pad so every row has them.
  const pt = g.ekh - 1 - g.padTop;
  const pl = g.ekw - 1 - g.padLeft;
  const pb = inH + g.ekh - 1 - pt - uh;
  const pr = inW + g.ekw - 1 - pl - uw;
  let src: tf.Tensor4D = up;
  // Negative padding means cropping.
  if (pt < 0 || pl < 0 || pb < 0 || pr < 0) {
    const ct = Math.max(0, -pt);
    const cl = Math.max(0, -pl);
    const cb = Math.max(0, -pb);
    const cr = Math.max(0, -pr);
    src = tf.slice(src, [0, ct, cl, 0], [n, uh - ct - cb, uw - cl - cr, ch]);
  }
  const p = [Math.max(0, pt), Math.max(0, pb), Math.max(0, pl), Math.max(0, pr)];
  return { src, pad: p.every((v) => v === 0) ? 'valid' : [[0, 0], [p[0]!, p[1]!], [p[2]!, p[3]!], [0, 0]] };
}

function geomOf(info: tf.backend_util.Conv2DInfo): BackpropGeom {
  return {
    strideH: info.strideHeight,
    strideW: info.strideWidth,
    ekh: (info.filterHeight - 1) * info.dilationHeight + 1,
    ekw: (info.filterWidth - 1) * info.dilationWidth + 1,
    padTop: info.padInfo.top,
    padLeft: info.padInfo.left,
  };
}

/**
 * Gradient of a depthwise conv w.r.t. its input, as a forward depthwise conv: dx = depthwise(src(dy), flip(W)).
 * W: [kh,kw,C,mult]; with a multiplier, each (c,k) plane is convolved with W[:,:,c,k] and summed over k.
 */
function depthwiseBackpropInputImpl(dy: tf.Tensor4D, filter: tf.Tensor4D, inShape: number[], attrs: NamedAttrMap): tf.Tensor4D {
  const info = convInfo(inShape, filter.shape, attrs, true);
  const [kh, kw, c, mult] = filter.shape;
  const { src, pad } = backpropInputPlan(dy, geomOf(info), inShape[1]!, inShape[2]!);
  const flipped = kh === 1 && kw === 1 ? filter : tf.reverse(filter, [0, 1]);
  const dil: [number, number] = [info.dilationHeight, info.dilationWidth];
  if (mult === 1) return tf.depthwiseConv2d(src, flipped as tf.Tensor4D, 1, pad, 'NHWC', dil);
  const f2 = tf.reshape(flipped, [kh, kw, c * mult, 1]) as tf.Tensor4D;
  const y = tf.depthwiseConv2d(src, f2, 1, pad, 'NHWC', dil);
  return tf.sum(tf.reshape(y, [inShape[0]!, inShape[1]!, inShape[2]!, c, mult]), 4) as tf.Tensor4D;
}

/**
 * Gradient of a conv w.r.t. its input: a forward conv of the upsampled, padded `dy` with the flipped filter whose
 * in/out channels are swapped (XNNPACK; a matmul with transposeB is 10x slower on wasm for the 1x1 case).
 */
function conv2dBackpropInputImpl(dy: tf.Tensor4D, filter: tf.Tensor4D, inShape: number[], attrs: NamedAttrMap): tf.Tensor4D {
  const info = convInfo(inShape, filter.shape, attrs, false);
  const { src, pad } = backpropInputPlan(dy, geomOf(info), inShape[1]!, inShape[2]!);
  const [kh, kw] = filter.shape;
  const f = tf.transpose(kh === 1 && kw === 1 ? filter : tf.reverse(filter, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D;
  return tf.conv2d(src, f, 1, pad, 'NHWC', [info.dilationHeight, info.dilationWidth]);
}

/** `x` padded as the forward conv padded it, cropped/extended to exactly the rows/columns the conv read. */
function paddedInput(x: tf.Tensor4D, pad: Pad4, needH: number, needW: number): tf.Tensor4D {
  const [n, , , c] = x.shape;
  let xp = x;
  if (pad.top > 0 || pad.left > 0 || pad.bottom > 0 || pad.right > 0) {
    xp = tf.pad(x, [[0, 0], [Math.max(0, pad.top), Math.max(0, pad.bottom)], [Math.max(0, pad.left), Math.max(0, pad.right)], [0, 0]]);
  }
  if (xp.shape[1] > needH || xp.shape[2] > needW) xp = tf.slice(xp, [0, 0, 0, 0], [n, Math.min(needH, xp.shape[1]), Math.min(needW, xp.shape[2]), c]);
  if (xp.shape[1] < needH || xp.shape[2] < needW) xp = tf.pad(xp, [[0, 0], [0, needH - xp.shape[1]], [0, needW - xp.shape[2]], [0, 0]]);
  return xp;
}

/** Every d-th row/column of a [kh', kw', ...] tensor (undoing a dilation of the output taps). */
function everyNth(t: tf.Tensor, dh: number, dw: number, kh: number, kw: number): tf.Tensor {
  if (dh === 1 && dw === 1) return t;
  const rows = tf.tensor1d(Array.from({ length: kh }, (_, i) => i * dh), 'int32');
  const cols = tf.tensor1d(Array.from({ length: kw }, (_, i) => i * dw), 'int32');
  return tf.gather(tf.gather(t, rows, 0), cols, 1);
}

/**
 * Gradient of a conv w.r.t. its filter. 1x1 stride-1: x^T dy as a matmul (with x transposed explicitly: wasm's
 * matmul with a transpose flag is ~10x slower). Otherwise a convolution that swaps the roles of batch and channels:
 * dW[a,b,i,o] = sum_{n,h,w} xp[n, h*sh + a*dh, w*sw + b*dw, i] * dy[n,h,w,o], i.e. xp^T [i, H, W, n] convolved with
 * the filter dy^T [h, w, n, o] dilated by the stride.
 */
function conv2dBackpropFilterImpl(x: tf.Tensor4D, dy: tf.Tensor4D, filterShape: number[], attrs: NamedAttrMap): tf.Tensor4D {
  const info = convInfo(x.shape, filterShape, attrs, false);
  const [kh, kw, ci, co] = filterShape as [number, number, number, number];
  const [n, oh, ow] = dy.shape;
  const sh = info.strideHeight;
  const sw = info.strideWidth;
  const dh = info.dilationHeight;
  const dw = info.dilationWidth;
  const pad: Pad4 = info.padInfo;
  const needH = (oh - 1) * sh + (kh - 1) * dh + 1;
  const needW = (ow - 1) * sw + (kw - 1) * dw + 1;
  const xp = paddedInput(x, pad, needH, needW);
  if (kh === 1 && kw === 1 && sh === 1 && sw === 1) {
    const a = tf.transpose(tf.reshape(xp, [n * oh * ow, ci]));
    const b = tf.reshape(dy, [n * oh * ow, co]);
    return tf.reshape(tf.matMul(a, b), [1, 1, ci, co]) as tf.Tensor4D;
  }
  const xt = tf.transpose(xp, [3, 1, 2, 0]) as tf.Tensor4D;
  const ft = tf.transpose(dy, [1, 2, 0, 3]) as tf.Tensor4D;
  const r = tf.conv2d(xt, ft, 1, 'valid', 'NHWC', [sh, sw]); // [ci, ekh, ekw, co]
  return everyNth(tf.transpose(r, [1, 2, 0, 3]), dh, dw, kh, kw) as tf.Tensor4D;
}

/**
 * Gradient of a depthwise conv w.r.t. its filter, as a depthwise convolution of the padded input with `dy` as the
 * (per-channel, stride-dilated) filter; batch images become extra channels, summed at the end.
 */
function depthwiseBackpropFilterImpl(x: tf.Tensor4D, dy: tf.Tensor4D, filterShape: number[], attrs: NamedAttrMap): tf.Tensor4D {
  const info = convInfo(x.shape, filterShape, attrs, true);
  const [kh, kw, c, mult] = filterShape as [number, number, number, number];
  const [n, oh, ow] = dy.shape;
  const sh = info.strideHeight;
  const sw = info.strideWidth;
  const dh = info.dilationHeight;
  const dw = info.dilationWidth;
  const needH = (oh - 1) * sh + (kh - 1) * dh + 1;
  const needW = (ow - 1) * sw + (kw - 1) * dw + 1;
  let xp: tf.Tensor = paddedInput(x, info.padInfo, needH, needW);
  // Channels (n, c, k): x repeated over the multiplier k, dy as is.
  if (mult > 1) xp = tf.reshape(tf.tile(tf.reshape(xp, [n, needH, needW, c, 1]), [1, 1, 1, 1, mult]), [n, needH, needW, c * mult]);
  const cm = c * mult;
  const xin = (n === 1 ? xp : tf.reshape(tf.transpose(xp, [1, 2, 0, 3]), [1, needH, needW, n * cm])) as tf.Tensor4D;
  const filt = tf.reshape(n === 1 ? dy : tf.transpose(dy, [1, 2, 0, 3]), [oh, ow, n * cm, 1]) as tf.Tensor4D;
  const r = tf.depthwiseConv2d(xin, filt, 1, 'valid', 'NHWC', [sh, sw]); // [1, ekh, ekw, n*cm]
  let out = tf.reshape(r, [r.shape[1], r.shape[2], n, cm]);
  out = everyNth(out, dh, dw, kh, kw);
  return tf.reshape(n === 1 ? out : tf.sum(out, 2), [kh, kw, c, mult]) as tf.Tensor4D;
}

/**
 * Depthwise filter gradient computed on the wasm heap with a hand-assembled SIMD routine (simd.ts), for multiplier 1
 * and channels a multiple of 4 (else undefined): dW[a,b,c] = sum_{n,h,w} x[n, h*sh + a*dh - top, w*sw + b*dw - left, c]
 * * dy[n,h,w,c] (0 outside x), accumulated in float32, one (image, output row, tap) row segment per call. XNNPACK,
 * given `dy` as a huge depthwise filter, runs this 10-20x below its speed on the forward 3x3 convolution.
 */
function depthwiseBackpropFilterSimd(backend: WasmBackend, x: TensorInfo, dy: TensorInfo, filterShape: number[], attrs: NamedAttrMap): TensorInfo | undefined {
  const [kh, kw, c, mult] = filterShape as [number, number, number, number];
  if (mult !== 1 || c % 4 !== 0 || x.dtype !== 'float32' || dy.dtype !== 'float32') return undefined;
  const memory = (backend as unknown as { wasm?: { asm?: { memory?: unknown } } }).wasm?.asm?.memory;
  if (!(memory instanceof WebAssembly.Memory)) return undefined;
  const mad = madRowsFor(memory);
  if (!mad) return undefined;
  const info = convInfo(x.shape, filterShape, attrs, true);
  const [n, ih, iw] = x.shape as [number, number, number, number];
  const [, oh, ow] = dy.shape as [number, number, number, number];
  const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = info;
  const { top, left } = info.padInfo;
  // The output first (allocating may grow the heap, which detaches earlier views); it is the accumulator.
  const out = backend.makeOutput([kh, kw, c, 1], 'float32');
  const ov = backend.typedArrayFromHeap(out) as Float32Array;
  ov.fill(0);
  const accAt = ov.byteOffset;
  const xAt = backend.typedArrayFromHeap(x).byteOffset;
  const gAt = backend.typedArrayFromHeap(dy).byteOffset;
  const cb = c * 4;
  // Per column tap q: the output columns whose input column w*sw + q*dw - left lies inside x.
  const w0 = new Int32Array(kw);
  const w1 = new Int32Array(kw);
  for (let q = 0; q < kw; q++) {
    const off = q * dw - left;
    w0[q] = Math.max(0, Math.ceil(-off / sw));
    w1[q] = Math.min(ow, Math.floor((iw - 1 - off) / sw) + 1);
  }
  for (let b = 0; b < n; b++) {
    for (let h = 0; h < oh; h++) {
      const gRow = gAt + (b * oh + h) * ow * cb;
      for (let a = 0; a < kh; a++) {
        const r = h * sh + a * dh - top;
        if (r < 0 || r >= ih) continue;
        const xRow = xAt + (b * ih + r) * iw * cb;
        for (let q = 0; q < kw; q++) {
          const lo = w0[q]!;
          const cnt = w1[q]! - lo;
          if (cnt <= 0) continue;
          mad(accAt + (a * kw + q) * cb, xRow + (lo * sw + q * dw - left) * cb, gRow + lo * cb, cnt, cb, sw * cb);
        }
      }
    }
  }
  return out;
}

type View = (t: TensorInfo | undefined) => tf.Tensor;

/**
 * A kernel composed of TF.js ops on the current (wasm) backend. Inputs are wrapped as tensors sharing their data
 * (one extra reference each, dropped by the tidy); the result's data gets one extra reference before the tensor is
 * disposed, which the engine then owns through the TensorInfo we return.
 */
function composed(fn: (inputs: NamedTensorInfoMap, attrs: NamedAttrMap, view: View) => tf.Tensor): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const b = backend as WasmBackend;
    const view: View = (t) => {
      if (!t) throw new Error('missing kernel input');
      b.incRef(t.dataId);
      return tf.engine().makeTensorFromTensorInfo(t, backend as tf.KernelBackend);
    };
    const out = tf.tidy(() => fn(inputs, attrs ?? {}, view));
    b.incRef(out.dataId);
    const info: TensorInfo = { dataId: out.dataId, shape: out.shape, dtype: out.dtype };
    out.dispose();
    return info;
  };
}

/** The depthwise filter gradient as a depthwise convolution (the general case: multiplier > 1, odd channel counts). */
const depthwiseBackpropFilterComposed = composed((inp, attrs, view) => {
  const { filterShape } = attrs as { filterShape: number[] };
  return depthwiseBackpropFilterImpl(view(inp.x) as tf.Tensor4D, view(inp.dy) as tf.Tensor4D, filterShape, attrs);
});

export const COMPOSED_WASM_KERNELS: Record<string, KernelFunc> = {
  Conv2DBackpropInput: composed((inp, attrs, view) => {
    if (!channelsLast(attrs)) throw new Error('Conv2DBackpropInput: only NHWC is supported on wasm');
    const { inputShape } = attrs as { inputShape: number[] };
    return conv2dBackpropInputImpl(view(inp.dy) as tf.Tensor4D, view(inp.filter) as tf.Tensor4D, inputShape, attrs);
  }),
  DepthwiseConv2dNativeBackpropInput: composed((inp, attrs, view) => {
    if (!channelsLast(attrs)) throw new Error('DepthwiseConv2dNativeBackpropInput: only NHWC is supported on wasm');
    const { inputShape } = attrs as { inputShape: number[] };
    return depthwiseBackpropInputImpl(view(inp.dy) as tf.Tensor4D, view(inp.filter) as tf.Tensor4D, inputShape, attrs);
  }),
  Conv2DBackpropFilter: composed((inp, attrs, view) => {
    if (!channelsLast(attrs)) throw new Error('Conv2DBackpropFilter: only NHWC is supported on wasm');
    const { filterShape } = attrs as { filterShape: number[] };
    return conv2dBackpropFilterImpl(view(inp.x) as tf.Tensor4D, view(inp.dy) as tf.Tensor4D, filterShape, attrs);
  }),
  DepthwiseConv2dNativeBackpropFilter: ({ inputs, backend, attrs }) => {
    const a = attrs ?? {};
    if (!channelsLast(a)) throw new Error('DepthwiseConv2dNativeBackpropFilter: only NHWC is supported on wasm');
    const { filterShape } = a as { filterShape: number[] };
    return depthwiseBackpropFilterSimd(backend as WasmBackend, inputs.x!, inputs.dy!, filterShape, a) ?? depthwiseBackpropFilterComposed({ inputs, backend, attrs: a });
  },
  // wasm's Identity copies the data (tf.clone, and every tensor a custom gradient saves); sharing it is enough, as
  // on cpu: no wasm kernel writes into its inputs.
  Identity: ({ inputs, backend }) => {
    const x = inputs.x!;
    (backend as WasmBackend).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  },
};

/**
 * wasm kernels that give wrong results in tfjs-backend-wasm 4.22 and are replaced by the cpu ones:
 * MaxPoolGrad drops gradient at some windows (e.g. 'same' padding, or inputs padded with very negative values).
 */
export const REPLACED_BY_CPU = ['MaxPoolGrad'];

/** Kernels registered for wasm by delegation to cpu (filled by `registerWasmGradientKernels`). */
export const DELEGATED_WASM_KERNELS: string[] = [];

let registered = false;

/** Register, for the wasm backend, every kernel cpu has and wasm lacks (idempotent). */
export function registerWasmGradientKernels(): void {
  if (registered) return;
  registered = true;
  const wasm = new Set(tf.getKernelsForBackend('wasm').map((k) => k.kernelName));
  for (const [name, kernelFunc] of Object.entries(COMPOSED_WASM_KERNELS)) {
    // wasm's own Conv2DBackpropInput is a plain loop, ~10x slower than XNNPACK's conv/matmul: replaced.
    if (wasm.has(name)) tf.unregisterKernel(name, 'wasm');
    tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc });
    wasm.add(name);
  }
  for (const name of REPLACED_BY_CPU) {
    if (wasm.has(name)) tf.unregisterKernel(name, 'wasm');
    tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: cpuDelegate(name) });
    DELEGATED_WASM_KERNELS.push(name);
    wasm.add(name);
  }
  for (const k of tf.getKernelsForBackend('cpu')) {
    if (wasm.has(k.kernelName) || IRRELEVANT.has(k.kernelName)) continue;
    tf.registerKernel({ kernelName: k.kernelName, backendName: 'wasm', kernelFunc: cpuDelegate(k.kernelName) });
    DELEGATED_WASM_KERNELS.push(k.kernelName);
  }
}
