/**
 * ONNX operators on runtime (float32, input-dependent) values: each builder adds steps to a plan. Values that are
 * known when the plan is built never get here (host.ts evaluates those), so every builder may require its
 * shape-like inputs (Reshape's shape, Slice's starts, Pad's pads, ...) to be host values.
 */
import * as tf from '@tensorflow/tfjs-core';
import {
  type Attrs,
  broadcastShapes,
  DT,
  flattenShape,
  type HostVal,
  hostVal,
  ints,
  isFloatType,
  quantParams,
  quantRange,
  reshapeTarget,
  size,
  sliceSpec,
  squeezeShape,
  unsqueezeShape,
} from './host.js';
import { dropAxes, identity, NHWC, normAxis, physAxis, physShape } from './layout.js';
import { clampOf, type Planner, type RtVal, type Val, type WeightSrc } from './plan.js';

export interface NodeCtx {
  p: Planner;
  name: string;
  op: string;
  opset: number;
  attrs: Attrs;
  inputs: (Val | undefined)[];
  nOutputs: number;
  /** When set, the indices of inputs read as host values (shapes, pads, axes: not weights). */
  hostReads?: Set<number>;
  /**
   * BatchNormalization in training mode (set by the executor for nodes whose running statistics are variables, in a
   * training-mode plan): normalise with the batch's statistics and report them (batch mean, unbiased batch variance,
   * both [C] identity layout) with the node's momentum.
   */
  bnTrain?: (mean: RtVal, variance: RtVal, momentum: number) => void;
}
export type Builder = (c: NodeCtx) => (Val | undefined)[];

// ---------------------------------------------------------------------------------------------------------------
// helpers

function rt(c: NodeCtx, i: number): RtVal {
  const v = c.inputs[i];
  if (!v) throw new Error(`input ${i} is missing`);
  if (v.kind === 'rt') return v;
  if (!isFloatType(v.dtype)) throw new Error(`input ${i} is a ${v.dtype === DT.BOOL ? 'bool' : 'integer'} tensor; only float tensors can be computed at run time`);
  return c.p.constRt(v);
}

function host(c: NodeCtx, i: number, what: string): HostVal {
  c.hostReads?.add(i);
  const v = c.inputs[i];
  if (!v) throw new Error(`${what} (input ${i}) is missing`);
  if (v.kind !== 'host') throw new Error(`${what} (input ${i}) depends on the input data; it must be computable when the model is loaded`);
  return v;
}

function optHost(c: NodeCtx, i: number, what: string): HostVal | undefined {
  return c.inputs[i] ? host(c, i, what) : undefined;
}

function num(c: NodeCtx, name: string, def: number): number {
  const v = c.attrs[name];
  return typeof v === 'number' ? v : def;
}

function numsAttr(c: NodeCtx, name: string): number[] | undefined {
  const v = c.attrs[name];
  return Array.isArray(v) ? (v as number[]) : undefined;
}

function str(c: NodeCtx, name: string, def: string): string {
  const v = c.attrs[name];
  return typeof v === 'string' ? v : def;
}

function unary(c: NodeCtx, f: (x: tf.Tensor) => tf.Tensor): Val[] {
  const x = rt(c, 0);
  return [c.p.fn(c.name, c.op, [x], x.shape, x.perm, ([t]) => f(t!))];
}

/** Spatial padding [top, left, bottom, right] of a conv/pool per ONNX auto_pad / pads. */
function spatialPads(c: NodeCtx, inHW: number[], k: number[], s: number[], d: number[]): [number, number, number, number] {
  const auto = str(c, 'auto_pad', 'NOTSET');
  if (auto === 'SAME_UPPER' || auto === 'SAME_LOWER') {
    const begin: number[] = [];
    const end: number[] = [];
    for (let i = 0; i < 2; i++) {
      const out = Math.ceil(inHW[i]! / s[i]!);
      const total = Math.max(0, (out - 1) * s[i]! + (k[i]! - 1) * d[i]! + 1 - inHW[i]!);
      const b = auto === 'SAME_UPPER' ? Math.floor(total / 2) : Math.ceil(total / 2);
      begin.push(b);
      end.push(total - b);
    }
    return [begin[0]!, begin[1]!, end[0]!, end[1]!];
  }
  if (auto === 'VALID') return [0, 0, 0, 0];
  const p = numsAttr(c, 'pads') ?? [0, 0, 0, 0];
  if (p.length !== 4) throw new Error(`pads ${JSON.stringify(p)}: only 2-D (4 pads) supported`);
  return [p[0]!, p[1]!, p[2]!, p[3]!];
}

function need4d(x: RtVal, what: string): void {
  if (x.shape.length !== 4) throw new Error(`${what}: only 2-D images (4-D NCHW input) are supported, got rank ${x.shape.length}`);
}

function weightSrc(c: NodeCtx, i: number): WeightSrc {
  const v = c.inputs[i]!;
  return v.kind === 'host' ? { host: v } : { slot: c.p.toIdentity(v).slot };
}

/** A per-channel host vector [C] as a value broadcasting over channel axis 1 of a rank-r tensor: [C,1,..]. */
function channelHost(v: Float32Array, r: number, key: string | undefined): HostVal {
  return hostVal(DT.FLOAT, [v.length, ...new Array<number>(r - 2).fill(1)], v, key);
}

function keyOf(...vals: (HostVal | undefined)[]): string | undefined {
  return vals.every((v) => !v || v.key !== undefined) ? vals.map((v) => v?.key ?? '-').join('&') : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// builders

const conv: Builder = (c) => {
  const x = rt(c, 0);
  need4d(x, 'Conv');
  const wv = c.inputs[1];
  if (!wv) throw new Error('Conv without weights');
  const [m, cg, kh, kw] = wv.shape as [number, number, number, number];
  if (wv.shape.length !== 4) throw new Error(`Conv weights of rank ${wv.shape.length}: only 2-D convolutions are supported`);
  const [n, ch, h, w] = x.shape as [number, number, number, number];
  const group = num(c, 'group', 1);
  if (cg * group !== ch) throw new Error(`weights [${wv.shape}] with group ${group} do not fit ${ch} input channels`);
  const strides = (numsAttr(c, 'strides') ?? [1, 1]) as [number, number];
  const dil = (numsAttr(c, 'dilations') ?? [1, 1]) as [number, number];
  const pads = spatialPads(c, [h, w], [kh, kw], strides, dil);
  const ho = Math.floor((h + pads[0] + pads[2] - ((kh - 1) * dil[0] + 1)) / strides[0]) + 1;
  const wo = Math.floor((w + pads[1] + pads[3] - ((kw - 1) * dil[1] + 1)) / strides[1]) + 1;
  if (ho <= 0 || wo <= 0) throw new Error(`output would be ${ho}x${wo}`);
  const b = c.inputs[2] ? weightSrc(c, 2) : undefined;
  return [
    c.p.conv(
      c.name,
      c.p.toPerm(x, NHWC),
      { w: weightSrc(c, 1), ...(b ? { b } : {}), inC: ch, outC: m, group, kh, kw, strides, pads, dilations: dil },
      [n, m, ho, wo],
      NHWC,
    ),
  ];
};

const convTranspose: Builder = (c) => {
  const x = rt(c, 0);
  need4d(x, 'ConvTranspose');
  const wv = c.inputs[1]!;
  const [ci, m, kh, kw] = wv.shape as [number, number, number, number];
  const [n, ch, h, w] = x.shape as [number, number, number, number];
  if (num(c, 'group', 1) !== 1) throw new Error('grouped ConvTranspose is not supported');
  if ((numsAttr(c, 'dilations') ?? [1, 1]).some((d) => d !== 1)) throw new Error('dilated ConvTranspose is not supported');
  if (ci !== ch) throw new Error(`weights [${wv.shape}] do not fit ${ch} input channels`);
  const s = (numsAttr(c, 'strides') ?? [1, 1]) as [number, number];
  const op = numsAttr(c, 'output_padding') ?? [0, 0];
  const outShape = numsAttr(c, 'output_shape');
  const auto = str(c, 'auto_pad', 'NOTSET');
  let pads = numsAttr(c, 'pads') ?? [0, 0, 0, 0];
  const full = [(h - 1) * s[0] + kh, (w - 1) * s[1] + kw];
  if (outShape || auto === 'SAME_UPPER' || auto === 'SAME_LOWER') {
    const target = outShape ? outShape.slice(-2) : [h * s[0], w * s[1]];
    const begin: number[] = [];
    const end: number[] = [];
    for (let i = 0; i < 2; i++) {
      const total = full[i]! + op[i]! - target[i]!;
      const half = Math.floor(total / 2);
      if (auto === 'SAME_UPPER' || (outShape && auto !== 'SAME_LOWER')) {
        begin.push(half);
        end.push(total - half);
      } else {
        begin.push(total - half);
        end.push(half);
      }
    }
    pads = [begin[0]!, begin[1]!, end[0]!, end[1]!];
  }
  const ho = full[0]! + op[0]! - pads[0]! - pads[2]!;
  const wo = full[1]! + op[1]! - pads[1]! - pads[3]!;
  const xin = c.p.toPerm(x, NHWC);
  const wsrc = weightSrc(c, 1);
  const bsrc = c.inputs[2] ? weightSrc(c, 2) : undefined;
  const toTf = (t: tf.Tensor) => tf.transpose(t, [2, 3, 1, 0]) as tf.Tensor4D;
  const hostW = 'host' in wsrc ? c.p.derived(wsrc.host, 'convT', () => tf.tidy(() => toTf(c.p.tensorFor(wsrc.host, 4, [0, 1, 2, 3])))) : undefined;
  const hostB = bsrc && 'host' in bsrc ? c.p.tensorFor(bsrc.host, 1, [0]) : undefined;
  const ins: RtVal[] = [xin];
  if ('slot' in wsrc) ins.push(c.p.toIdentity(c.inputs[1] as RtVal));
  if (bsrc && 'slot' in bsrc) ins.push(c.p.toIdentity(c.inputs[2] as RtVal));
  const [pt, pl] = [pads[0]!, pads[1]!];
  return [
    c.p.fn(c.name, c.op, ins, [n, m, ho, wo], NHWC, (xs) => {
      let k = 1;
      const filt = hostW ?? toTf(xs[k++]!);
      const bias = hostB ?? (bsrc ? xs[k++] : undefined);
      let y: tf.Tensor4D = tf.conv2dTranspose(xs[0] as tf.Tensor4D, filt as tf.Tensor4D, [n, full[0]!, full[1]!, m], s, 'valid');
      const needH = pt + ho;
      const needW = pl + wo;
      if (needH > full[0]! || needW > full[1]!) y = tf.pad(y, [[0, 0], [0, Math.max(0, needH - full[0]!)], [0, Math.max(0, needW - full[1]!)], [0, 0]]);
      if (pt !== 0 || pl !== 0 || y.shape[1] !== ho || y.shape[2] !== wo) y = tf.slice(y, [0, pt, pl, 0], [n, ho, wo, m]);
      return bias ? tf.add(y, bias) : y;
    }),
  ];
};

const batchNorm: Builder = (c) => {
  const x = rt(c, 0);
  if (num(c, 'training_mode', 0) !== 0) throw new Error('training_mode=1 is not supported (inference only)');
  const eps = num(c, 'epsilon', 1e-5);
  const r = x.shape.length;
  const params = [1, 2, 3, 4].map((i) => c.inputs[i]);
  if (params.some((v) => !v)) throw new Error('BatchNormalization needs scale, B, mean and var');
  if (params.every((v) => v!.kind === 'host')) {
    const [sc, b, mean, vr] = params as HostVal[];
    const ch = sc!.data.length;
    const a = new Float32Array(ch);
    const sh = new Float32Array(ch);
    for (let i = 0; i < ch; i++) {
      a[i] = sc!.data[i]! / Math.fround(Math.sqrt(Math.fround(vr!.data[i]! + eps)));
      sh[i] = b!.data[i]! - mean!.data[i]! * a[i]!;
    }
    const key = keyOf(sc, b, mean, vr);
    const ah = channelHost(a, r, key && `${key}|bnA${eps}`);
    const bh = channelHost(sh, r, key && `${key}|bnB${eps}`);
    return [c.p.binary(c.name, 'BatchNormalization', 'add', c.p.binary(c.name, 'BatchNormalization', 'mul', x, ah), bh)];
  }
  const ch = x.shape[1]!;
  const bshape = physShape(x.shape.map((d, i) => (i === 1 ? ch : 1)), x.perm);
  if (c.bnTrain) {
    // Training mode (PyTorch's convention): normalise with the batch mean and the biased batch variance over every
    // axis but the channel one, differentiably; the running variance is updated with the unbiased one.
    const count = size(x.shape) / ch;
    if (count < 2) throw new Error(`training-mode batch norm needs more than one value per channel (input [${x.shape}])`);
    const cAxis = x.perm.indexOf(1);
    const axes = x.perm.map((_, i) => i).filter((i) => i !== cAxis);
    const aff = [1, 2].map((i) => (c.inputs[i]!.kind === 'rt' ? c.p.toIdentity(c.inputs[i] as RtVal) : c.p.constRt(c.inputs[i] as HostVal)));
    const [y, bm, bv] = c.p.fnMulti(
      c.name,
      c.op,
      [x, ...aff],
      [
        { shape: x.shape, perm: x.perm },
        { shape: [ch], perm: [0] },
        { shape: [ch], perm: [0] },
      ],
      ([t, sc, b]) => {
        const mean = tf.mean(t!, axes, true);
        const dev = tf.sub(t!, mean);
        const vr = tf.mean(tf.square(dev), axes, true);
        const a = tf.mul(tf.reshape(sc!, bshape), tf.rsqrt(tf.add(vr, eps)));
        const out = tf.add(tf.mul(dev, a), tf.reshape(b!, bshape));
        return [out, tf.reshape(mean, [ch]), tf.mul(tf.reshape(vr, [ch]), count / (count - 1))];
      },
    );
    c.bnTrain(bm!, bv!, num(c, 'momentum', 0.9));
    return [y];
  }
  // Trainable parameters or running statistics held as variables: computed each run.
  const ps = params.map((v) => (v!.kind === 'rt' ? c.p.toIdentity(v!) : c.p.constRt(v!)));
  return [
    c.p.fn(c.name, c.op, [x, ...ps], x.shape, x.perm, ([t, sc, b, mean, vr]) => {
      const a = tf.mul(sc!, tf.rsqrt(tf.add(vr!, eps)));
      const sh = tf.sub(b!, tf.mul(mean!, a));
      return tf.add(tf.mul(t!, tf.reshape(a, bshape)), tf.reshape(sh, bshape));
    }),
  ];
};

function clipBounds(c: NodeCtx): [number, number] {
  if (c.opset >= 11) {
    const lo = optHost(c, 1, 'min');
    const hi = optHost(c, 2, 'max');
    return [lo ? lo.data[0]! : -Infinity, hi ? hi.data[0]! : Infinity];
  }
  return [num(c, 'min', -Infinity), num(c, 'max', Infinity)];
}

const binaryOps: Record<string, 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'max' | 'min'> = {
  Add: 'add',
  Sub: 'sub',
  Mul: 'mul',
  Div: 'div',
  Pow: 'pow',
  Max: 'max',
  Min: 'min',
  Sum: 'add',
};

const binaryBuilder: Builder = (c) => {
  const vals = c.inputs.filter((v): v is Val => !!v);
  let acc: Val = vals[0]!;
  for (const v of vals.slice(1)) acc = c.p.binary(c.name, c.op, binaryOps[c.op]!, acc, v);
  if (acc.kind === 'host') throw new Error('unexpected constant');
  return [acc];
};

const mean: Builder = (c) => {
  const vals = c.inputs.filter((v): v is Val => !!v);
  let acc: Val = vals[0]!;
  for (const v of vals.slice(1)) acc = c.p.binary(c.name, c.op, 'add', acc, v);
  return [c.p.binary(c.name, c.op, 'mul', acc, hostVal(DT.FLOAT, [], [1 / vals.length], `mean1/${vals.length}`))];
};

const matMul: Builder = (c) => {
  let a = c.p.toIdentity(rt(c, 0));
  let b = c.p.toIdentity(rt(c, 1));
  const aVec = a.shape.length === 1;
  const bVec = b.shape.length === 1;
  if (aVec) a = c.p.toRank(a, 2);
  if (bVec) b = c.p.fn(c.name, 'Reshape', [b], [b.shape[0]!, 1], [0, 1], ([t]) => tf.reshape(t!, [b.shape[0]!, 1]));
  const ra = a.shape.length;
  const rb = b.shape.length;
  const [mm, k] = a.shape.slice(-2) as [number, number];
  const [k2, nn] = b.shape.slice(-2) as [number, number];
  if (k !== k2) throw new Error(`MatMul inner dimensions ${k} and ${k2} differ`);
  const batch = broadcastShapes(a.shape.slice(0, ra - 2), b.shape.slice(0, rb - 2));
  let shape = [...batch, mm, nn];
  let y = c.p.fn(c.name, c.op, [a, b], shape, identity(shape.length), ([x, w]) => {
    if (x!.rank === 2 && w!.rank === 2) return tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D);
    // Batched: broadcast both to the full batch shape.
    const xa = tf.broadcastTo(x!, [...batch, mm, k]);
    const wb = tf.broadcastTo(w!, [...batch, k, nn]);
    return tf.matMul(xa as tf.Tensor3D, wb as tf.Tensor3D);
  });
  if (aVec || bVec) {
    shape = [...batch, ...(aVec ? [] : [mm]), ...(bVec ? [] : [nn])];
    const s = shape;
    y = c.p.fn(c.name, 'Reshape', [y], s, identity(s.length), ([t]) => tf.reshape(t!, s));
  }
  return [y];
};

const gemm: Builder = (c) => {
  const alpha = num(c, 'alpha', 1);
  const beta = num(c, 'beta', 1);
  const transA = num(c, 'transA', 0) === 1;
  const transB = num(c, 'transB', 0) === 1;
  const a = c.p.toIdentity(rt(c, 0));
  if (a.shape.length !== 2) throw new Error(`Gemm input A must be 2-D, got [${a.shape}]`);
  const bv = c.inputs[1]!;
  const [m, k] = transA ? [a.shape[1]!, a.shape[0]!] : [a.shape[0]!, a.shape[1]!];
  const [k2, n] = transB ? [bv.shape[1]!, bv.shape[0]!] : [bv.shape[0]!, bv.shape[1]!];
  if (k !== k2) throw new Error(`Gemm inner dimensions ${k} and ${k2} differ`);
  const ins: RtVal[] = [a];
  // No transpose flags reach the kernels: wasm's matmul is ~8x slower with them, and its fused matmul adds the bias
  // wrongly with transposeB (tfjs-backend-wasm 4.22). Constant B is kept as [K,N] and as [N,K] for the gradient.
  let hostB: tf.Tensor2D | undefined;
  let hostBT: tf.Tensor2D | undefined;
  if (bv.kind === 'host') {
    const t = () => c.p.tensorFor(bv, 2, [0, 1]);
    hostB = c.p.derived(bv, transB ? 'gemm:T' : 'gemm', () => tf.tidy(() => (transB ? tf.transpose(t()) : tf.clone(t())))) as tf.Tensor2D;
    hostBT = c.p.derived(bv, transB ? 'gemm' : 'gemm:T', () => tf.tidy(() => (transB ? tf.clone(t()) : tf.transpose(t())))) as tf.Tensor2D;
  } else ins.push(c.p.toIdentity(bv));
  // C: a constant row (scalar, [N] or [1,N]) becomes a [N] bias vector (the fused matmul takes only rank-1
  // bias, and wasm checks the shape its data was created with, so no reshape of a [1,N] tensor either).
  let hostC: tf.Tensor | undefined;
  let rowBias = false;
  const cv = c.inputs[2];
  if (cv && beta !== 0) {
    if (cv.kind === 'host') {
      const row = size(cv.shape) === 1 || (cv.shape.length <= 2 && cv.shape[cv.shape.length - 1] === n && size(cv.shape) === n);
      const vals = row ? Array.from({ length: n }, (_, j) => cv.data[size(cv.shape) === 1 ? 0 : j]! * beta) : Array.from(cv.data, (v) => v * beta);
      const shape = row ? [n] : cv.shape;
      const h = hostVal(DT.FLOAT, shape, vals, cv.key && `${cv.key}*${beta}:${shape}`);
      hostC = c.p.tensorFor(h, shape.length, identity(shape.length));
      rowBias = row;
    } else ins.push(c.p.toIdentity(cv));
  }
  const cRt = !!cv && beta !== 0 && cv.kind === 'rt';
  if (hostB && hostBT && !transA && !cRt && alpha === 1 && (!hostC || rowBias)) {
    // Constant weights: fused forward, and dA = dY B^T with B^T precomputed.
    const bias = hostC;
    const run = tf.customGrad(((x: tf.Tensor2D, save: tf.GradSaveFunc) => {
      void save;
      const y = tf.fused.matMul({ a: x, b: hostB!, bias });
      return { value: y, gradFunc: (dy: tf.Tensor) => tf.matMul(dy as tf.Tensor2D, hostBT!) };
    }) as unknown as Parameters<typeof tf.customGrad>[0]);
    return [c.p.fn(c.name, c.op, ins, [m, n], [0, 1], ([x]) => run(x!))];
  }
  return [
    c.p.fn(c.name, c.op, ins, [m, n], [0, 1], (xs) => {
      let i = 1;
      const x = transA ? tf.transpose(xs[0]!) : xs[0]!;
      const w = hostB ?? (transB ? tf.transpose(xs[i++]!) : xs[i++]!);
      let bias: tf.Tensor | undefined = hostC;
      if (cRt) bias = beta === 1 ? xs[i++] : tf.mul(xs[i++]!, beta);
      if (alpha === 1 && bias && bias === hostC && rowBias) return tf.fused.matMul({ a: x as tf.Tensor2D, b: w as tf.Tensor2D, bias });
      let y = tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D);
      if (alpha !== 1) y = tf.mul(y, alpha);
      return bias ? tf.add(y, bias) : y;
    }),
  ];
};

interface PoolGeom { k: [number, number]; s: [number, number]; pads: [number, number, number, number]; extra: [number, number]; out: [number, number] }

function poolGeometry(c: NodeCtx, x: RtVal): PoolGeom {
  need4d(x, c.op);
  const k = numsAttr(c, 'kernel_shape') as [number, number] | undefined;
  if (!k || k.length !== 2) throw new Error('kernel_shape must give 2 sizes');
  const s = (numsAttr(c, 'strides') ?? [1, 1]) as [number, number];
  if ((numsAttr(c, 'dilations') ?? [1, 1]).some((d) => d !== 1)) throw new Error('dilated pooling is not supported');
  const hw = [x.shape[2]!, x.shape[3]!];
  const pads = spatialPads(c, hw, k, s, [1, 1]);
  const ceil = num(c, 'ceil_mode', 0) === 1;
  const out: number[] = [];
  const extra: number[] = [];
  for (let i = 0; i < 2; i++) {
    const span = hw[i]! + pads[i]! + pads[i + 2]! - k[i]!;
    let o = (ceil ? Math.ceil(span / s[i]!) : Math.floor(span / s[i]!)) + 1;
    // The last window must start inside the input or its left padding (as PyTorch and ONNX Runtime do).
    if (ceil && (o - 1) * s[i]! >= hw[i]! + pads[i]!) o--;
    out.push(o);
    extra.push(Math.max(0, (o - 1) * s[i]! + k[i]! - (hw[i]! + pads[i]! + pads[i + 2]!)));
  }
  return { k, s, pads, extra: extra as [number, number], out: out as [number, number] };
}

const maxPool: Builder = (c) => {
  if (c.nOutputs > 1) throw new Error('MaxPool indices output is not supported');
  const x = rt(c, 0);
  const g = poolGeometry(c, x);
  const xin = c.p.toPerm(x, NHWC);
  const [n, ch] = x.shape as [number, number];
  const [pt, pl, pb, pr] = g.pads;
  const padded = pt + pl + pb + pr + g.extra[0] + g.extra[1] > 0;
  const pads: [number, number][] = [[0, 0], [pt, pb + g.extra[0]], [pl, pr + g.extra[1]], [0, 0]];
  return [
    c.p.fn(c.name, c.op, [xin], [n, ch, g.out[0], g.out[1]], NHWC, ([t]) => {
      const src = padded ? tf.pad(t!, pads, -3.4028234663852886e38) : t!;
      return tf.maxPool(src as tf.Tensor4D, g.k, g.s, 'valid');
    }),
  ];
};

const avgPool: Builder = (c) => {
  const x = rt(c, 0);
  const g = poolGeometry(c, x);
  const includePad = num(c, 'count_include_pad', 0) === 1;
  const xin = c.p.toPerm(x, NHWC);
  const [n, ch, h, w] = x.shape as [number, number, number, number];
  const [pt, pl, pb, pr] = g.pads;
  const padded = pt + pl + pb + pr + g.extra[0] + g.extra[1] > 0;
  const pads: [number, number][] = [[0, 0], [pt, pb + g.extra[0]], [pl, pr + g.extra[1]], [0, 0]];
  // Divisor per output position: the window clipped to the input (or to the padded input if count_include_pad);
  // the extra rows/columns added for ceil_mode never count.
  const area = g.k[0] * g.k[1];
  const fac = new Float32Array(g.out[0] * g.out[1]);
  let uniform = true;
  for (let i = 0; i < g.out[0]; i++) {
    for (let j = 0; j < g.out[1]; j++) {
      const hs = i * g.s[0] - pt;
      const ws = j * g.s[1] - pl;
      const [h0, h1] = includePad ? [Math.max(hs, -pt), Math.min(hs + g.k[0], h + pb)] : [Math.max(hs, 0), Math.min(hs + g.k[0], h)];
      const [w0, w1] = includePad ? [Math.max(ws, -pl), Math.min(ws + g.k[1], w + pr)] : [Math.max(ws, 0), Math.min(ws + g.k[1], w)];
      const cnt = Math.max(1, (h1 - h0) * (w1 - w0));
      fac[i * g.out[1] + j] = area / cnt;
      if (cnt !== area) uniform = false;
    }
  }
  const facT = uniform ? undefined : c.p.tensorFor(hostVal(DT.FLOAT, [1, g.out[0], g.out[1], 1], fac, `avgfac:${h},${w}:${JSON.stringify(g)}:${includePad}`), 4, [0, 1, 2, 3]);
  return [
    c.p.fn(c.name, c.op, [xin], [n, ch, g.out[0], g.out[1]], NHWC, ([t]) => {
      const src = padded ? tf.pad(t!, pads, 0) : t!;
      const y = tf.avgPool(src as tf.Tensor4D, g.k, g.s, 'valid');
      return facT ? tf.mul(y, facT) : y;
    }),
  ];
};

function globalPool(kind: 'mean' | 'max'): Builder {
  return (c) => {
    const x = rt(c, 0);
    const r = x.shape.length;
    if (r < 3) throw new Error(`${c.op} needs a rank >= 3 input`);
    const axes = Array.from({ length: r - 2 }, (_, i) => physAxis(x.perm, i + 2));
    const shape = x.shape.map((d, i) => (i < 2 ? d : 1));
    return [c.p.fn(c.name, c.op, [x], shape, x.perm, ([t]) => (kind === 'mean' ? tf.mean(t!, axes, true) : tf.max(t!, axes, true)))];
  };
}

const REDUCE: Record<string, (x: tf.Tensor, axes: number[], keep: boolean) => tf.Tensor> = {
  ReduceMean: (x, a, k) => tf.mean(x, a, k),
  ReduceSum: (x, a, k) => tf.sum(x, a, k),
  ReduceMax: (x, a, k) => tf.max(x, a, k),
  ReduceMin: (x, a, k) => tf.min(x, a, k),
  ReduceProd: (x, a, k) => tf.prod(x, a, k),
  ReduceSumSquare: (x, a, k) => tf.sum(tf.square(x), a, k),
  ReduceL1: (x, a, k) => tf.sum(tf.abs(x), a, k),
  ReduceL2: (x, a, k) => tf.sqrt(tf.sum(tf.square(x), a, k)),
  ReduceLogSumExp: (x, a, k) => tf.logSumExp(x, a, k),
};

const reduceBuilder: Builder = (c) => {
  const x = rt(c, 0);
  const r = x.shape.length;
  const fromInput = c.op === 'ReduceSum' ? c.opset >= 13 : c.opset >= 18;
  const given = fromInput ? (c.inputs[1] ? ints(host(c, 1, 'axes')) : undefined) : numsAttr(c, 'axes');
  const keep = num(c, 'keepdims', 1) === 1;
  if (!given || given.length === 0) {
    if (num(c, 'noop_with_empty_axes', 0) === 1) return [x];
  }
  const axes = [...new Set((given && given.length ? given : identity(r)).map((a) => normAxis(a, r)))].sort((a, b) => a - b);
  const phys = axes.map((a) => physAxis(x.perm, a));
  const shape = keep ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
  const perm = keep ? x.perm : dropAxes(x.perm, axes);
  const f = REDUCE[c.op]!;
  return [c.p.fn(c.name, c.op, [x], shape, perm, ([t]) => f(t!, phys, keep))];
};

function softmaxLike(log: boolean): Builder {
  return (c) => {
    const x = rt(c, 0);
    const r = x.shape.length;
    const f = (t: tf.Tensor) => (log ? tf.logSoftmax(t) : tf.softmax(t));
    const axis = normAxis(num(c, 'axis', c.opset >= 13 ? -1 : 1), r);
    if (c.opset >= 13 || axis === r - 1) {
      // Softmax over one axis: needs that axis last in memory.
      const v = physAxis(x.perm, axis) === r - 1 ? x : c.p.toPerm(x, [...x.perm.filter((a) => a !== axis), axis]);
      return [c.p.fn(c.name, c.op, [v], v.shape, v.perm, ([t]) => f(t!))];
    }
    // Before opset 13: over the flattened axes [axis, r).
    const xi = c.p.toIdentity(x);
    const flat = flattenShape(x.shape, axis);
    return [c.p.fn(c.name, c.op, [xi], x.shape, identity(r), ([t]) => tf.reshape(f(tf.reshape(t!, flat)), x.shape))];
  };
}

const concat: Builder = (c) => {
  const vals = c.inputs.filter((v): v is Val => !!v && size(v.shape) > 0);
  const lead = vals.find((v): v is RtVal => v.kind === 'rt');
  if (!lead) throw new Error('unexpected constant Concat');
  const r = lead.shape.length;
  const axis = normAxis(num(c, 'axis', 0), r);
  const ins = vals.map((v) => c.p.toPerm(v.kind === 'rt' ? v : c.p.constRt(v), lead.perm));
  const shape = [...lead.shape];
  shape[axis] = vals.reduce((a, v) => a + v.shape[axis]!, 0);
  const pa = physAxis(lead.perm, axis);
  if (ins.length === 1) return [ins[0]!];
  return [c.p.fn(c.name, c.op, ins, shape, lead.perm, (xs) => tf.concat(xs, pa))];
}

function reshapeTo(c: NodeCtx, x: RtVal, shape: number[]): RtVal {
  const xi = c.p.toIdentity(x);
  return c.p.fn(c.name, c.op, [xi], shape, identity(shape.length), ([t]) => tf.reshape(t!, shape));
}

const reshape: Builder = (c) => {
  const x = rt(c, 0);
  const target = c.opset >= 5 ? ints(host(c, 1, 'shape')) : (numsAttr(c, 'shape') ?? []);
  return [reshapeTo(c, x, reshapeTarget(x.shape, target, num(c, 'allowzero', 0) === 1))];
};

const flatten: Builder = (c) => {
  const x = rt(c, 0);
  return [reshapeTo(c, x, flattenShape(x.shape, num(c, 'axis', 1)))];
};

const squeeze: Builder = (c) => {
  const x = rt(c, 0);
  const axes = c.opset >= 13 ? (c.inputs[1] ? ints(host(c, 1, 'axes')) : undefined) : numsAttr(c, 'axes');
  return [reshapeTo(c, x, squeezeShape(x.shape, axes))];
};

const unsqueeze: Builder = (c) => {
  const x = rt(c, 0);
  const axes = c.opset >= 13 ? ints(host(c, 1, 'axes')) : numsAttr(c, 'axes') ?? [];
  return [reshapeTo(c, x, unsqueezeShape(x.shape, axes))];
};

/** Transpose only relabels: the data stays where it is, its recorded layout changes. */
const transpose: Builder = (c) => {
  const x = rt(c, 0);
  const r = x.shape.length;
  const perm = numsAttr(c, 'perm') ?? identity(r).reverse();
  const shape = perm.map((a) => x.shape[a]!);
  const newPerm = x.perm.map((p) => perm.indexOf(p));
  return [{ kind: 'rt', slot: x.slot, shape, perm: newPerm }];
};

/** An int32 index tensor owned by the plan (or cached when the indices are constant). */
function indexTensor(c: NodeCtx, values: number[], shape: number[], key?: string): tf.Tensor {
  return c.p.cache.get(key, () => tf.tensor(Int32Array.from(values), shape, 'int32'), c.p.owned);
}

const gather: Builder = (c) => {
  const x = rt(c, 0);
  const idxH = host(c, 1, 'indices');
  const r = x.shape.length;
  const axis = normAxis(num(c, 'axis', 0), r);
  const dim = x.shape[axis]!;
  const idx = ints(idxH).map((i) => (i < 0 ? i + dim : i));
  if (idx.some((i) => i < 0 || i >= dim)) throw new Error(`Gather index out of range for dimension ${dim}`);
  const key = idxH.key && `${idxH.key}|gather${dim}`;
  const shape = [...x.shape.slice(0, axis), ...idxH.shape, ...x.shape.slice(axis + 1)];
  if (idxH.shape.length <= 1) {
    const pa = physAxis(x.perm, axis);
    const t = indexTensor(c, idx, [idx.length], key);
    if (idxH.shape.length === 1) return [c.p.fn(c.name, c.op, [x], shape, x.perm, ([v]) => tf.gather(v!, t, pa))];
    const perm = dropAxes(x.perm, [axis]);
    return [c.p.fn(c.name, c.op, [x], shape, perm, ([v]) => tf.squeeze(tf.gather(v!, t, pa), [pa]))];
  }
  const xi = c.p.toIdentity(x);
  const t = indexTensor(c, idx, idxH.shape, key);
  return [c.p.fn(c.name, c.op, [xi], shape, identity(shape.length), ([v]) => tf.gather(v!, t, axis))];
};

const slice: Builder = (c) => {
  const x = rt(c, 0);
  const spec =
    c.opset < 10
      ? sliceSpec(x.shape, numsAttr(c, 'starts')!, numsAttr(c, 'ends')!, numsAttr(c, 'axes'), undefined)
      : sliceSpec(x.shape, ints(host(c, 1, 'starts')), ints(host(c, 2, 'ends')), c.inputs[3] ? ints(host(c, 3, 'axes')) : undefined, c.inputs[4] ? ints(host(c, 4, 'steps')) : undefined);
  const shape = spec.counts;
  const r = x.shape.length;
  // In physical axes: a plain slice for unit steps, a gather for the others.
  const begin: number[] = [];
  const sz: number[] = [];
  const gathers: { axis: number; idx: tf.Tensor }[] = [];
  for (let i = 0; i < r; i++) {
    const a = x.perm[i]!;
    if (spec.steps[a] === 1) {
      begin.push(spec.starts[a]!);
      sz.push(spec.counts[a]!);
    } else {
      begin.push(0);
      sz.push(x.shape[a]!);
      const list = Array.from({ length: spec.counts[a]! }, (_, k) => spec.starts[a]! + k * spec.steps[a]!);
      gathers.push({ axis: i, idx: indexTensor(c, list, [list.length]) });
    }
  }
  const whole = begin.every((b) => b === 0) && sz.every((s, i) => s === physShape(x.shape, x.perm)[i]);
  return [
    c.p.fn(c.name, c.op, [x], shape, x.perm, ([t]) => {
      let y = whole ? t! : tf.slice(t!, begin, sz);
      for (const g of gathers) y = tf.gather(y, g.idx, g.axis);
      return whole && gathers.length === 0 ? tf.clone(y) : y;
    }),
  ];
};

const pad: Builder = (c) => {
  const x = rt(c, 0);
  const r = x.shape.length;
  const mode = str(c, 'mode', 'constant');
  let raw: number[];
  let value = 0;
  let axes = identity(r);
  if (c.opset >= 11) {
    raw = ints(host(c, 1, 'pads'));
    const cv = optHost(c, 2, 'constant_value');
    if (cv) value = cv.data[0]!;
    if (c.inputs[3]) axes = ints(host(c, 3, 'axes')).map((a) => normAxis(a, r));
  } else {
    raw = numsAttr(c, 'pads') ?? numsAttr(c, 'paddings') ?? [];
    value = num(c, 'value', 0);
  }
  const k = axes.length;
  if (raw.length !== 2 * k) throw new Error(`pads has ${raw.length} values for ${k} axes`);
  const pads: [number, number][] = identity(r).map(() => [0, 0]);
  axes.forEach((a, i) => (pads[a] = [raw[i]!, raw[i + k]!]));
  let v = x;
  // Negative pads crop.
  if (pads.some(([b, e]) => b < 0 || e < 0)) {
    const begin = pads.map(([b]) => Math.max(0, -b));
    const shape = v.shape.map((d, i) => d - begin[i]! - Math.max(0, -pads[i]![1]));
    const pb = v.perm.map((a) => begin[a]!);
    const ps = physShape(shape, v.perm);
    v = c.p.fn(c.name, 'Slice', [v], shape, v.perm, ([t]) => tf.slice(t!, pb, ps));
    for (const p of pads) {
      p[0] = Math.max(0, p[0]);
      p[1] = Math.max(0, p[1]);
    }
  }
  if (pads.every(([b, e]) => b === 0 && e === 0)) return [v];
  if (mode === 'constant') return [c.p.pad(c.name, v, pads, value)];
  const shape = v.shape.map((d, i) => d + pads[i]![0] + pads[i]![1]);
  const phys = v.perm.map((a) => pads[a]!);
  // Reflect and edge padding are composed from slices (TF.js's MirrorPad gradient ignores the reflected parts).
  if (mode === 'reflect' || mode === 'edge') {
    return [
      c.p.fn(c.name, c.op, [v], shape, v.perm, ([t]) => {
        let y = t!;
        phys.forEach(([b, e], ax) => {
          if (b === 0 && e === 0) return;
          const n = y.shape[ax]!;
          if (mode === 'reflect' && (b >= n || e >= n)) throw new Error(`reflect padding ${Math.max(b, e)} needs a dimension larger than ${n}`);
          const part = (from: number, count: number) => {
            const begin = y.shape.map((_, i) => (i === ax ? from : 0));
            const sz = y.shape.map((d, i) => (i === ax ? count : d));
            return tf.slice(y, begin, sz);
          };
          const parts: tf.Tensor[] = [];
          if (mode === 'edge') {
            const reps = (k: number) => y.shape.map((_, i) => (i === ax ? k : 1));
            if (b > 0) parts.push(tf.tile(part(0, 1), reps(b)));
            parts.push(y);
            if (e > 0) parts.push(tf.tile(part(n - 1, 1), reps(e)));
          } else {
            if (b > 0) parts.push(tf.reverse(part(1, b), ax));
            parts.push(y);
            if (e > 0) parts.push(tf.reverse(part(n - 1 - e, e), ax));
          }
          y = tf.concat(parts, ax);
        });
        return y;
      }),
    ];
  }
  throw new Error(`Pad mode '${mode}' is not supported`);
};

const identityOp: Builder = (c) => {
  const outs: (Val | undefined)[] = [c.inputs[0]];
  if (c.op === 'Dropout' && c.nOutputs > 1) outs.push(hostVal(DT.BOOL, c.inputs[0]!.shape, new Array<number>(size(c.inputs[0]!.shape)).fill(1)));
  return outs;
};

const cast: Builder = (c) => {
  const to = c.op === 'CastLike' ? c.inputs[1]!.kind === 'host' ? (c.inputs[1] as HostVal).dtype : DT.FLOAT : num(c, 'to', DT.FLOAT);
  if (!isFloatType(to)) throw new Error(`casting a run-time tensor to a non-float type is not supported`);
  return [c.inputs[0]];
};

const expand: Builder = (c) => {
  const x = rt(c, 0);
  const shape = broadcastShapes(x.shape, ints(host(c, 1, 'shape')));
  const xi = c.p.toRank(c.p.toIdentity(x), shape.length);
  return [c.p.fn(c.name, c.op, [xi], shape, identity(shape.length), ([t]) => tf.broadcastTo(t!, shape))];
};

const tile: Builder = (c) => {
  const x = rt(c, 0);
  const reps = ints(host(c, 1, 'repeats'));
  const shape = x.shape.map((d, i) => d * reps[i]!);
  const phys = x.perm.map((a) => reps[a]!);
  return [c.p.fn(c.name, c.op, [x], shape, x.perm, ([t]) => tf.tile(t!, phys))];
};

const split: Builder = (c) => {
  const x = rt(c, 0);
  const r = x.shape.length;
  const axis = normAxis(num(c, 'axis', 0), r);
  const dim = x.shape[axis]!;
  let sizes = c.opset >= 13 ? (c.inputs[1] ? ints(host(c, 1, 'split')) : undefined) : numsAttr(c, 'split');
  if (!sizes) {
    const n = num(c, 'num_outputs', c.nOutputs);
    const each = Math.ceil(dim / n);
    sizes = Array.from({ length: n }, (_, i) => Math.max(0, Math.min(each, dim - i * each)));
  }
  if (sizes.reduce((a, b) => a + b, 0) !== dim) throw new Error(`split sizes ${sizes} do not add up to ${dim}`);
  const pa = physAxis(x.perm, axis);
  const outs = sizes.map((s) => ({ shape: x.shape.map((d, i) => (i === axis ? s : d)), perm: x.perm }));
  const sz = sizes;
  return c.p.fnMulti(c.name, c.op, [x], outs, ([t]) => tf.split(t!, sz, pa));
};

const lrn: Builder = (c) => {
  const x = rt(c, 0);
  need4d(x, 'LRN');
  const n = num(c, 'size', 0);
  if (n % 2 !== 1) throw new Error(`LRN size ${n}: only odd sizes are supported`);
  const alpha = num(c, 'alpha', 1e-4);
  const beta = num(c, 'beta', 0.75);
  const bias = num(c, 'bias', 1);
  const xin = c.p.toPerm(x, NHWC);
  return [c.p.fn(c.name, c.op, [xin], x.shape, NHWC, ([t]) => tf.localResponseNormalization(t as tf.Tensor4D, (n - 1) / 2, bias, alpha / n, beta))];
};

const prelu: Builder = (c) => {
  const x = rt(c, 0);
  const sv = c.inputs[1]!;
  const r = x.shape.length;
  if (sv.kind === 'host') {
    const t = c.p.tensorFor(sv, r, x.perm);
    return [c.p.fn(c.name, c.op, [x], x.shape, x.perm, ([v]) => tf.prelu(v!, t))];
  }
  const s = c.p.toPerm(c.p.toRank(sv, r), x.perm);
  return [c.p.fn(c.name, c.op, [x, s], x.shape, x.perm, ([v, a]) => tf.prelu(v!, a!))];
};

/**
 * QuantizeLinear at run time: the quantized values are kept as float32 integers (only DequantizeLinear reads
 * them). The gradient is the straight-through estimator: dy / scale where the value was not saturated.
 */
const quantizeLinear: Builder = (c) => {
  const x = rt(c, 0);
  const r = x.shape.length;
  const sc = host(c, 1, 'scale');
  const zp0 = optHost(c, 2, 'zero point');
  const { scale, zp } = quantParams(sc, zp0, r, num(c, 'axis', 1));
  const [lo, hi] = quantRange(zp0 ? zp0.dtype : DT.UINT8);
  const s = c.p.tensorFor(scale, r, x.perm);
  const z = zp ? c.p.tensorFor(zp, r, x.perm) : undefined;
  const run = tf.customGrad(((t: tf.Tensor, save: tf.GradSaveFunc) => {
    const scaled = tf.div(t, s);
    let q = tf.round(scaled);
    if (z) q = tf.add(q, z);
    const y = tf.clipByValue(q, lo, hi);
    save([q]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, [qs]: tf.Tensor[]) => tf.div(tf.mul(dy, tf.step(tf.mul(tf.sub(qs!, lo - 0.5), tf.sub(hi + 0.5, qs!)))), s),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return [c.p.fn(c.name, c.op, [x], x.shape, x.perm, ([t]) => run(t!))];
};

/** DequantizeLinear at run time: (x - zero point) * scale, per tensor or along `axis`. */
const dequantizeLinear: Builder = (c) => {
  const x = rt(c, 0);
  const { scale, zp } = quantParams(host(c, 1, 'scale'), optHost(c, 2, 'zero point'), x.shape.length, num(c, 'axis', 1));
  const zpf = zp && { ...zp, dtype: DT.FLOAT, data: Float32Array.from(zp.data) };
  const shifted = zpf && zpf.data.some((v) => v !== 0) ? c.p.binary(c.name, c.op, 'sub', x, zpf) : x;
  return [c.p.binary(c.name, c.op, 'mul', shifted, { ...scale, dtype: DT.FLOAT })];
};

const SQRT1_2 = Math.SQRT1_2;

export const BUILDERS: Record<string, Builder> = {
  Conv: conv,
  ConvTranspose: convTranspose,
  BatchNormalization: batchNorm,
  Relu: (c) => [c.p.clamp(c.name, c.op, rt(c, 0), clampOf(0, Infinity))],
  Clip: (c) => {
    const [lo, hi] = clipBounds(c);
    if (lo === -Infinity && hi === Infinity) return [c.inputs[0]];
    return [c.p.clamp(c.name, c.op, rt(c, 0), clampOf(lo, hi))];
  },
  LeakyRelu: (c) => unary(c, (x) => tf.leakyRelu(x, num(c, 'alpha', 0.01))),
  PRelu: prelu,
  Sigmoid: (c) => unary(c, tf.sigmoid),
  HardSigmoid: (c) => {
    const a = num(c, 'alpha', 0.2);
    const b = num(c, 'beta', 0.5);
    return unary(c, (x) => tf.clipByValue(tf.add(tf.mul(x, a), b), 0, 1));
  },
  HardSwish: (c) => unary(c, (x) => tf.mul(x, tf.div(tf.relu6(tf.add(x, 3)), 6))),
  Tanh: (c) => unary(c, tf.tanh),
  Exp: (c) => unary(c, tf.exp),
  Log: (c) => unary(c, tf.log),
  Sqrt: (c) => unary(c, tf.sqrt),
  Neg: (c) => unary(c, tf.neg),
  Abs: (c) => unary(c, tf.abs),
  Reciprocal: (c) => unary(c, tf.reciprocal),
  Floor: (c) => unary(c, tf.floor),
  Ceil: (c) => unary(c, tf.ceil),
  Sin: (c) => unary(c, tf.sin),
  Cos: (c) => unary(c, tf.cos),
  Erf: (c) => unary(c, tf.erf),
  Softplus: (c) => unary(c, tf.softplus),
  Softsign: (c) => unary(c, (x) => tf.div(x, tf.add(tf.abs(x), 1))),
  Elu: (c) => {
    const a = num(c, 'alpha', 1);
    // relu(x) + a (exp(min(x, 0)) - 1): no comparison ops (they have no gradient).
    return unary(c, a === 1 ? tf.elu : (x) => tf.add(tf.relu(x), tf.mul(tf.sub(tf.exp(tf.minimum(x, 0)), 1), a)));
  },
  Selu: (c) => {
    const a = num(c, 'alpha', 1.6732632423543772);
    const g = num(c, 'gamma', 1.0507009873554805);
    return unary(c, (x) => tf.mul(tf.add(tf.relu(x), tf.mul(tf.sub(tf.exp(tf.minimum(x, 0)), 1), a)), g));
  },
  Mish: (c) => unary(c, (x) => tf.mul(x, tf.tanh(tf.softplus(x)))),
  Gelu: (c) =>
    unary(c, (x) =>
      str(c, 'approximate', 'none') === 'tanh'
        ? tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3)))))))
        : tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, SQRT1_2))))),
  Add: binaryBuilder,
  Sub: binaryBuilder,
  Mul: binaryBuilder,
  Div: binaryBuilder,
  Pow: binaryBuilder,
  Max: binaryBuilder,
  Min: binaryBuilder,
  Sum: binaryBuilder,
  Mean: mean,
  MatMul: matMul,
  Gemm: gemm,
  MaxPool: maxPool,
  AveragePool: avgPool,
  GlobalAveragePool: globalPool('mean'),
  GlobalMaxPool: globalPool('max'),
  ReduceMean: reduceBuilder,
  ReduceSum: reduceBuilder,
  ReduceMax: reduceBuilder,
  ReduceMin: reduceBuilder,
  ReduceProd: reduceBuilder,
  ReduceSumSquare: reduceBuilder,
  ReduceL1: reduceBuilder,
  ReduceL2: reduceBuilder,
  ReduceLogSumExp: reduceBuilder,
  Softmax: softmaxLike(false),
  LogSoftmax: softmaxLike(true),
  Concat: concat,
  Reshape: reshape,
  Flatten: flatten,
  Squeeze: squeeze,
  Unsqueeze: unsqueeze,
  Transpose: transpose,
  Gather: gather,
  Slice: slice,
  Pad: pad,
  Identity: identityOp,
  Dropout: identityOp,
  Cast: cast,
  CastLike: cast,
  Expand: expand,
  Tile: tile,
  Split: split,
  LRN: lrn,
  QuantizeLinear: quantizeLinear,
  DequantizeLinear: dequantizeLinear,
};
