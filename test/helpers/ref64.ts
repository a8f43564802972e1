/**
 * A float64 reference evaluator for the small ONNX graphs of the gradient-rule tests: central finite differences of
 * a float32 engine are too noisy to check gradients to a few digits, so the tests difference this one instead.
 * Exactness over speed; opset 17 semantics; one small function per operator.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type Node = InstanceType<typeof onnx.NodeProto>;

export interface T64 { dims: number[]; data: Float64Array }

const num = (v: unknown): number => (typeof v === 'number' ? v : v && typeof (v as { toNumber?: () => number }).toNumber === 'function' ? (v as { toNumber(): number }).toNumber() : Number(v ?? 0));
const size = (d: number[]) => d.reduce((a, b) => a * b, 1);
const strides = (d: number[]) => {
  const s = new Array<number>(d.length).fill(1);
  for (let i = d.length - 2; i >= 0; i--) s[i] = s[i + 1]! * d[i + 1]!;
  return s;
};
const t = (dims: number[], data?: Float64Array): T64 => ({ dims, data: data ?? new Float64Array(size(dims)) });

function attr(n: Node, name: string): { i?: number; f?: number; ints?: number[]; s?: string } | undefined {
  const a = (n.attribute ?? []).find((x) => x.name === name);
  if (!a) return undefined;
  return { i: num(a.i), f: a.f ?? undefined, ints: (a.ints ?? []).map(num), s: a.s ? new TextDecoder().decode(a.s) : undefined };
}
const ai = (n: Node, k: string, d: number) => attr(n, k)?.i ?? d;
const af = (n: Node, k: string, d: number) => (attr(n, k) ? attr(n, k)!.f ?? d : d);
const ais = (n: Node, k: string) => (attr(n, k) ? attr(n, k)!.ints : undefined);

function tensorOf(p: InstanceType<typeof onnx.TensorProto>): T64 {
  const dims = (p.dims ?? []).map(num);
  const raw = p.rawData;
  const dt = p.dataType ?? 1;
  let vals: number[];
  if (raw && raw.length) {
    const buf = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    vals = dt === 1 ? Array.from(new Float32Array(buf)) : dt === 7 ? Array.from(new BigInt64Array(buf), Number) : dt === 11 ? Array.from(new Float64Array(buf)) : dt === 6 ? Array.from(new Int32Array(buf)) : dt === 3 ? Array.from(new Int8Array(buf)) : Array.from(new Uint8Array(buf));
  } else vals = [...(p.floatData ?? []), ...(p.int64Data ?? []).map(num), ...(p.int32Data ?? []), ...(p.doubleData ?? [])];
  return t(dims, Float64Array.from(vals));
}

function broadcastDims(a: number[], b: number[]): number[] {
  const r = Math.max(a.length, b.length);
  return Array.from({ length: r }, (_, i) => {
    const x = a[i - (r - a.length)] ?? 1;
    const y = b[i - (r - b.length)] ?? 1;
    return x === 1 ? y : x;
  });
}

/** Index of `out` position (multi-index) into a broadcast operand of dims `d`. */
function elementwise(xs: T64[], f: (...v: number[]) => number): T64 {
  const dims = xs.map((x) => x.dims).reduce(broadcastDims);
  const out = t(dims);
  const os = strides(dims);
  const maps = xs.map((x) => {
    const pad = dims.length - x.dims.length;
    const s = strides(x.dims);
    return dims.map((d, i) => (i < pad || x.dims[i - pad] === 1 ? 0 : s[i - pad]!));
  });
  const idx = new Array<number>(dims.length).fill(0);
  for (let k = 0; k < out.data.length; k++) {
    let r = k;
    for (let i = 0; i < dims.length; i++) {
      idx[i] = Math.floor(r / os[i]!);
      r -= idx[i]! * os[i]!;
    }
    out.data[k] = f(...xs.map((x, j) => x.data[idx.reduce((a, v, i) => a + v * maps[j]![i]!, 0)]!));
  }
  return out;
}

function transpose(x: T64, perm: number[]): T64 {
  const dims = perm.map((p) => x.dims[p]!);
  const out = t(dims);
  const xs = strides(x.dims);
  const os = strides(dims);
  for (let k = 0; k < out.data.length; k++) {
    let r = k;
    let src = 0;
    for (let i = 0; i < dims.length; i++) {
      const v = Math.floor(r / os[i]!);
      r -= v * os[i]!;
      src += v * xs[perm[i]!]!;
    }
    out.data[k] = x.data[src]!;
  }
  return out;
}

function reduce(x: T64, axes: number[], keep: boolean, f: 'sum' | 'mean' | 'max'): T64 {
  const r = x.dims.length;
  const ax = axes.map((a) => (a + r) % r);
  const kd = x.dims.map((d, i) => (ax.includes(i) ? 1 : d));
  const out = t(kd, new Float64Array(size(kd)).fill(f === 'max' ? -Infinity : 0));
  const xs = strides(x.dims);
  const ks = strides(kd);
  for (let k = 0; k < x.data.length; k++) {
    let rr = k;
    let o = 0;
    for (let i = 0; i < r; i++) {
      const v = Math.floor(rr / xs[i]!);
      rr -= v * xs[i]!;
      if (!ax.includes(i)) o += v * ks[i]!;
    }
    out.data[o] = f === 'max' ? Math.max(out.data[o]!, x.data[k]!) : out.data[o]! + x.data[k]!;
  }
  if (f === 'mean') {
    const c = ax.reduce((a, i) => a * x.dims[i]!, 1);
    for (let i = 0; i < out.data.length; i++) out.data[i]! /= c;
  }
  return keep ? out : t(x.dims.filter((_, i) => !ax.includes(i)), out.data);
}

/** Explicit pads [top, left, bottom, right], auto_pad resolved (SAME_UPPER puts the odd cell at the end). */
function padsOf(n: Node, x: T64, kh: number, kw: number): number[] {
  const auto = attr(n, 'auto_pad')?.s ?? 'NOTSET';
  if (auto === 'VALID') return [0, 0, 0, 0];
  if (auto !== 'SAME_UPPER' && auto !== 'SAME_LOWER') return ais(n, 'pads') ?? [0, 0, 0, 0];
  const s = ais(n, 'strides') ?? [1, 1];
  const d = ais(n, 'dilations') ?? [1, 1];
  const one = (len: number, k: number, st: number, dl: number) => {
    const out = Math.ceil(len / st);
    const total = Math.max(0, (out - 1) * st + (k - 1) * dl + 1 - len);
    const small = Math.floor(total / 2);
    return auto === 'SAME_UPPER' ? [small, total - small] : [total - small, small];
  };
  const [t0, b0] = one(x.dims[2]!, kh, s[0]!, d[0]!);
  const [l0, r0] = one(x.dims[3]!, kw, s[1]!, d[1]!);
  return [t0!, l0!, b0!, r0!];
}

/** 2-D windows over NCHW: calls `cell(n, c, oy, ox, iy, ix, k)` for every in-input tap (k: tap index). */
function windows(n: Node, x: T64, kh: number, kw: number, oh: number, ow: number, cell: (b: number, c: number, oy: number, ox: number, iy: number, ix: number, k: number) => void): void {
  const [N, C, H, W] = x.dims as [number, number, number, number];
  const [sh, sw] = ais(n, 'strides') ?? [1, 1];
  const [dh, dw] = ais(n, 'dilations') ?? [1, 1];
  const [pt, pl] = padsOf(n, x, kh, kw);
  for (let b = 0; b < N; b++) for (let c = 0; c < C; c++) for (let oy = 0; oy < oh; oy++) for (let ox = 0; ox < ow; ox++) {
    for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) {
      const iy = oy * sh! + i * dh! - pt!;
      const ix = ox * sw! + j * dw! - pl!;
      if (iy >= 0 && iy < H && ix >= 0 && ix < W) cell(b, c, oy, ox, iy, ix, i * kw + j);
    }
  }
}

function outSize(n: Node, x: T64, kh: number, kw: number): [number, number] {
  const [sh, sw] = ais(n, 'strides') ?? [1, 1];
  const [dh, dw] = ais(n, 'dilations') ?? [1, 1];
  const [pt, pl, pb, pr] = padsOf(n, x, kh, kw);
  return [Math.floor((x.dims[2]! + pt! + pb! - (kh - 1) * dh! - 1) / sh!) + 1, Math.floor((x.dims[3]! + pl! + pr! - (kw - 1) * dw! - 1) / sw!) + 1];
}

type Op = (n: Node, x: (T64 | undefined)[]) => T64[];
const un = (f: (v: number) => number): Op => (_n, [x]) => [elementwise([x!], f)];
const bin = (f: (a: number, b: number) => number): Op => (_n, [a, b]) => [elementwise([a!, b!], f)];

const OPS: Record<string, Op> = {
  Identity: (_n, [x]) => [x!],
  Relu: un((v) => Math.max(0, v)),
  Sigmoid: un((v) => 1 / (1 + Math.exp(-v))),
  Tanh: un(Math.tanh),
  Sqrt: un(Math.sqrt),
  Neg: un((v) => -v),
  Exp: un(Math.exp),
  LeakyRelu: (n, [x]) => [elementwise([x!], (v) => (v > 0 ? v : af(n, 'alpha', 0.01) * v))],
  HardSigmoid: (n, [x]) => [elementwise([x!], (v) => Math.max(0, Math.min(1, af(n, 'alpha', 0.2) * v + af(n, 'beta', 0.5))))],
  HardSwish: un((v) => v * Math.max(0, Math.min(1, v / 6 + 0.5))),
  Clip: (_n, [x, lo, hi]) => [elementwise([x!], (v) => Math.min(hi ? hi.data[0]! : Infinity, Math.max(lo ? lo.data[0]! : -Infinity, v)))],
  Add: bin((a, b) => a + b),
  Sub: bin((a, b) => a - b),
  Mul: bin((a, b) => a * b),
  Div: bin((a, b) => a / b),
  Sum: (_n, xs) => [elementwise(xs as T64[], (...v) => v.reduce((a, b) => a + b, 0))],
  Conv: (n, [x, w, bias]) => {
    const [M, cg, kh, kw] = w!.dims as [number, number, number, number];
    const g = ai(n, 'group', 1);
    const [oh, ow] = outSize(n, x!, kh, kw);
    const [N, C, H, W] = x!.dims as [number, number, number, number];
    const out = t([N, M, oh, ow]);
    const mg = M / g;
    windows(n, x!, kh, kw, oh, ow, (b, c, oy, ox, iy, ix, k) => {
      const grp = Math.floor(c / cg);
      const ci = c - grp * cg;
      const xv = x!.data[((b * C + c) * H + iy) * W + ix]!;
      for (let m = grp * mg; m < (grp + 1) * mg; m++) out.data[((b * M + m) * oh + oy) * ow + ox]! += xv * w!.data[(m * cg + ci) * kh * kw + k]!;
    });
    if (bias) for (let i = 0; i < out.data.length; i++) out.data[i]! += bias.data[Math.floor(i / (oh * ow)) % M]!;
    return [out];
  },
  MaxPool: (n, [x]) => {
    const [kh, kw] = ais(n, 'kernel_shape') as [number, number];
    const [oh, ow] = outSize(n, x!, kh, kw);
    const [N, C, H, W] = x!.dims as [number, number, number, number];
    const out = t([N, C, oh, ow], new Float64Array(N * C * oh * ow).fill(-Infinity));
    windows(n, x!, kh, kw, oh, ow, (b, c, oy, ox, iy, ix) => {
      const o = ((b * C + c) * oh + oy) * ow + ox;
      out.data[o] = Math.max(out.data[o]!, x!.data[((b * C + c) * H + iy) * W + ix]!);
    });
    return [out];
  },
  AveragePool: (n, [x]) => {
    const [kh, kw] = ais(n, 'kernel_shape') as [number, number];
    const [oh, ow] = outSize(n, x!, kh, kw);
    const [N, C, H, W] = x!.dims as [number, number, number, number];
    const out = t([N, C, oh, ow]);
    const cnt = new Float64Array(out.data.length);
    windows(n, x!, kh, kw, oh, ow, (b, c, oy, ox, iy, ix) => {
      const o = ((b * C + c) * oh + oy) * ow + ox;
      out.data[o]! += x!.data[((b * C + c) * H + iy) * W + ix]!;
      cnt[o]!++;
    });
    const include = ai(n, 'count_include_pad', 0) === 1;
    for (let i = 0; i < out.data.length; i++) out.data[i]! /= include ? kh * kw : cnt[i]!;
    return [out];
  },
  GlobalAveragePool: (_n, [x]) => [reduce(x!, [2, 3], true, 'mean')],
  GlobalMaxPool: (_n, [x]) => [reduce(x!, [2, 3], true, 'max')],
  BatchNormalization: (n, [x, s, b, m, v]) => {
    const eps = af(n, 'epsilon', 1e-5);
    const C = x!.dims[1]!;
    const inner = size(x!.dims.slice(2));
    const out = t(x!.dims);
    for (let i = 0; i < out.data.length; i++) {
      const c = Math.floor(i / inner) % C;
      out.data[i] = (s!.data[c]! * (x!.data[i]! - m!.data[c]!)) / Math.sqrt(v!.data[c]! + eps) + b!.data[c]!;
    }
    return [out];
  },
  Gemm: (n, [a, b, c]) => {
    const A = ai(n, 'transA', 0) ? transpose(a!, [1, 0]) : a!;
    const B = ai(n, 'transB', 0) ? transpose(b!, [1, 0]) : b!;
    const [M, K] = A.dims as [number, number];
    const Nn = B.dims[1]!;
    const out = t([M, Nn]);
    for (let i = 0; i < M; i++) for (let j = 0; j < Nn; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += A.data[i * K + k]! * B.data[k * Nn + j]!;
      out.data[i * Nn + j] = af(n, 'alpha', 1) * s;
    }
    return [c ? elementwise([out, c], (p, q) => p + af(n, 'beta', 1) * q) : out];
  },
  MatMul: (_n, [a, b]) => {
    const [M, K] = a!.dims.slice(-2) as [number, number];
    const Nn = b!.dims.at(-1)!;
    const batch = broadcastDims(a!.dims.slice(0, -2), b!.dims.slice(0, -2));
    const nb = size(batch);
    const out = t([...batch, M, Nn]);
    const aBatch = size(a!.dims.slice(0, -2));
    const bBatch = size(b!.dims.slice(0, -2));
    for (let p = 0; p < nb; p++) {
      const ao = (aBatch === 1 ? 0 : p) * M * K;
      const bo = (bBatch === 1 ? 0 : p) * K * Nn;
      for (let i = 0; i < M; i++) for (let j = 0; j < Nn; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a!.data[ao + i * K + k]! * b!.data[bo + k * Nn + j]!;
        out.data[p * M * Nn + i * Nn + j] = s;
      }
    }
    return [out];
  },
  Reshape: (_n, [x, s]) => {
    const want = Array.from(s!.data).map((d, i) => (d === 0 ? x!.dims[i]! : d));
    const known = want.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
    return [t(want.map((d) => (d === -1 ? x!.data.length / known : d)), x!.data)];
  },
  Flatten: (n, [x]) => {
    const a = ai(n, 'axis', 1);
    return [t([size(x!.dims.slice(0, a)), size(x!.dims.slice(a))], x!.data)];
  },
  Squeeze: (_n, [x, axes]) => {
    const ax = Array.from(axes!.data).map((a) => (a + x!.dims.length) % x!.dims.length);
    return [t(x!.dims.filter((_, i) => !ax.includes(i)), x!.data)];
  },
  Unsqueeze: (_n, [x, axes]) => {
    const r = x!.dims.length + axes!.data.length;
    const ax = Array.from(axes!.data).map((a) => (a + r) % r);
    const dims: number[] = [];
    let k = 0;
    for (let i = 0; i < r; i++) dims.push(ax.includes(i) ? 1 : x!.dims[k++]!);
    return [t(dims, x!.data)];
  },
  Transpose: (n, [x]) => [transpose(x!, ais(n, 'perm') ?? x!.dims.map((_, i) => x!.dims.length - 1 - i))],
  Concat: (n, xs) => {
    const r = xs[0]!.dims.length;
    const axis = (ai(n, 'axis', 0) + r) % r;
    const dims = [...xs[0]!.dims];
    dims[axis] = xs.reduce((a, x) => a + x!.dims[axis]!, 0);
    const out = t(dims);
    const outer = size(dims.slice(0, axis));
    let off = 0;
    for (const x of xs) {
      const inner = size(x!.dims.slice(axis));
      for (let o = 0; o < outer; o++) out.data.set(x!.data.subarray(o * inner, (o + 1) * inner), o * size(dims.slice(axis)) + off);
      off += inner;
    }
    return [out];
  },
  Split: (n, [x, split]) => {
    const r = x!.dims.length;
    const axis = (ai(n, 'axis', 0) + r) % r;
    const sizes = split ? Array.from(split.data) : [];
    return sizes.map((_, i) => {
      const start = sizes.slice(0, i).reduce((a, b) => a + b, 0);
      return OPS.Slice!(n, [x, t([1], Float64Array.of(start)), t([1], Float64Array.of(start + sizes[i]!)), t([1], Float64Array.of(axis))])[0]!;
    });
  },
  Slice: (_n, [x, starts, ends, axes, steps]) => {
    const r = x!.dims.length;
    const lo = x!.dims.map(() => 0);
    const hi = [...x!.dims];
    const st = x!.dims.map(() => 1);
    Array.from(starts!.data).forEach((s0, i) => {
      const a = ((axes ? axes.data[i]! : i) + r) % r;
      const d = x!.dims[a]!;
      const step = steps ? steps.data[i]! : 1;
      if (step !== 1) throw new Error('ref64: Slice steps other than 1');
      const c = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
      lo[a] = c(s0);
      hi[a] = Math.max(lo[a]!, c(ends!.data[i]!));
      st[a] = step;
    });
    const dims = x!.dims.map((_, i) => hi[i]! - lo[i]!);
    const out = t(dims);
    const xs = strides(x!.dims);
    const os = strides(dims);
    for (let k = 0; k < out.data.length; k++) {
      let rr = k;
      let src = 0;
      for (let i = 0; i < r; i++) {
        const v = Math.floor(rr / os[i]!);
        rr -= v * os[i]!;
        src += (v + lo[i]!) * xs[i]!;
      }
      out.data[k] = x!.data[src]!;
    }
    return [out];
  },
  Pad: (_n, [x, pads, value]) => {
    const r = x!.dims.length;
    const p = Array.from(pads!.data);
    const dims = x!.dims.map((d, i) => d + p[i]! + p[i + r]!);
    const out = t(dims, new Float64Array(size(dims)).fill(value ? value.data[0]! : 0));
    const xs = strides(x!.dims);
    const os = strides(dims);
    for (let k = 0; k < x!.data.length; k++) {
      let rr = k;
      let o = 0;
      let inside = true;
      for (let i = 0; i < r; i++) {
        const v = Math.floor(rr / xs[i]!);
        rr -= v * xs[i]!;
        const y = v + p[i]!;
        if (y < 0 || y >= dims[i]!) inside = false;
        o += y * os[i]!;
      }
      if (inside) out.data[o] = x!.data[k]!;
    }
    return [out];
  },
  Softmax: (n, [x]) => {
    const r = x!.dims.length;
    const axis = (ai(n, 'axis', -1) + r) % r;
    const m = reduce(x!, [axis], true, 'max');
    const e = elementwise([x!, m], (a, b) => Math.exp(a - b));
    const s = reduce(e, [axis], true, 'sum');
    return [elementwise([e, s], (a, b) => a / b)];
  },
  LogSoftmax: (n, [x]) => {
    const sm = OPS.Softmax!(n, [x])[0]!;
    return [elementwise([sm], Math.log)];
  },
  ReduceMean: (n, [x]) => [reduce(x!, ais(n, 'axes') ?? x!.dims.map((_, i) => i), ai(n, 'keepdims', 1) === 1, 'mean')],
  ReduceSum: (n, [x, axes]) => [reduce(x!, axes ? Array.from(axes.data) : x!.dims.map((_, i) => i), ai(n, 'keepdims', 1) === 1, 'sum')],
};

/** Evaluate `model` in float64 with `feeds` (every graph input), returning the named tensors. */
export function eval64(model: Uint8Array, feeds: Record<string, T64>, outputs: string[]): Record<string, T64> {
  const m = onnx.ModelProto.decode(model);
  const env = new Map<string, T64>();
  for (const i of m.graph!.initializer ?? []) env.set(i.name!, tensorOf(i));
  for (const [k, v] of Object.entries(feeds)) env.set(k, v);
  for (const n of m.graph!.node ?? []) {
    const op = OPS[n.opType!];
    if (!op) throw new Error(`ref64: no reference for ${n.opType}`);
    const res = op(n as Node, (n.input ?? []).map((i) => (i ? env.get(i) : undefined)));
    (n.output ?? []).forEach((o, i) => o && res[i] && env.set(o, res[i]!));
  }
  return Object.fromEntries(outputs.map((o) => [o, env.get(o)!]));
}
