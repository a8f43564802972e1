/**
 * A plan: the runtime part of an ONNX graph for one input shape, as a list of steps over numbered slots, each slot
 * holding one float32 tf.Tensor while the plan runs. Built by the ops in ops.ts, then optimised (zero Pad folded
 * into the next Conv, per-channel Mul/Add/Sub/Div with constants folded into constant conv weights and bias,
 * Relu/Clip fused into the conv's activation) and compiled into closures.
 */
import * as tf from '@tensorflow/tfjs-core';
import { type HostVal, hostToLayout, size } from './host.js';
import { backpropInputPlan } from './wasm-kernels.js';
import { identity, isIdentity, isTrivialTranspose, physShape, relayoutPerm, samePerm } from './layout.js';

export interface RtVal {
  kind: 'rt';
  slot: number;
  /** Logical (ONNX) shape. */
  shape: number[];
  /** Layout: the slot holds transpose(logical, perm). */
  perm: number[];
}
export type Val = HostVal | RtVal;

export interface Clamp { lo: number; hi: number }
export type WeightSrc = { host: HostVal } | { slot: number };
export type Operand = { slot: number } | { host: HostVal };
export type BinOp = 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'max' | 'min';

interface StepBase {
  /** ONNX nodes this step implements (several after fusion). */
  nodes: string[];
  /** Their op types, for profiles. */
  ops: string[];
  outs: number[];
}
export interface ConvStep extends StepBase {
  kind: 'conv';
  x: number;
  w: WeightSrc;
  b?: WeightSrc;
  /** Input channels, output channels, groups, kernel size. */
  inC: number;
  outC: number;
  group: number;
  kh: number;
  kw: number;
  strides: [number, number];
  /** top, left, bottom, right */
  pads: [number, number, number, number];
  dilations: [number, number];
  clamp?: Clamp;
  /**
   * Per-output-channel factors of a runtime weight (folded per-channel Mul/Div after the conv): the conv uses
   * w * wScale[m], computed with TF.js ops so that the weight's gradient follows.
   */
  wScale?: Float32Array;
}
export interface BinaryStep extends StepBase {
  kind: 'binary';
  op: BinOp;
  a: Operand;
  b: Operand;
  /** Rank and layout both operands are brought to (host operands are laid out when compiled). */
  rank: number;
  perm: number[];
}
export interface ClampStep extends StepBase { kind: 'clamp'; x: number; clamp: Clamp }
export interface PadStep extends StepBase { kind: 'pad'; x: number; pads: [number, number][]; value: number }
export interface FnStep extends StepBase { kind: 'fn'; ins: number[]; fn: (xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[] }
export interface SourceStep extends StepBase { kind: 'source'; get: () => tf.Tensor }
export type Step = ConvStep | BinaryStep | ClampStep | PadStep | FnStep | SourceStep;

interface SlotInfo { phys: number[]; persistent: boolean }

/** Device copies of host constants shared by all plans of an executor, by cache key. */
export class ConstCache {
  private map = new Map<string, tf.Tensor>();
  get(key: string | undefined, make: () => tf.Tensor, owned: tf.Tensor[]): tf.Tensor {
    if (key === undefined) {
      // Kept: plans can be built inside a caller's tf.tidy (a new input shape); the plan owns and disposes it.
      const t = tf.keep(make());
      owned.push(t);
      return t;
    }
    let t = this.map.get(key);
    if (!t) {
      t = tf.keep(make());
      this.map.set(key, t);
    }
    return t;
  }
  dispose(): void {
    for (const t of this.map.values()) t.dispose();
    this.map.clear();
  }
}

/** Key for a device copy of a host value in a given layout, or undefined when the value may change per plan. */
function layoutKey(h: HostVal, rank: number, perm: number[], tag = ''): string | undefined {
  return h.key === undefined ? undefined : `${h.key}|r${rank}|${perm.join(',')}${tag}`;
}

export function clampOf(lo: number, hi: number): Clamp {
  return { lo, hi };
}

const FMAX = 3.4028234663852886e38;

export class Planner {
  readonly steps: Step[] = [];
  readonly slots: SlotInfo[] = [];
  private relayouts = new Map<string, RtVal>();
  private hostSources = new Map<HostVal, RtVal>();

  constructor(
    readonly cache: ConstCache,
    /** Tensors this plan owns (constants without a cache key). */
    readonly owned: tf.Tensor[],
  ) {}

  newSlot(phys: number[], persistent = false): number {
    this.slots.push({ phys, persistent });
    return this.slots.length - 1;
  }

  /** The graph input: slot 0, NCHW as given. */
  input(shape: number[]): RtVal {
    if (this.slots.length !== 0) throw new Error('input must be the first slot');
    const slot = this.newSlot([...shape], true);
    return { kind: 'rt', slot, shape: [...shape], perm: identity(shape.length) };
  }

  private val(slot: number, shape: number[], perm: number[]): RtVal {
    return { kind: 'rt', slot, shape: [...shape], perm: [...perm] };
  }

  fn(node: string, op: string, ins: RtVal[], shape: number[], perm: number[], fn: (xs: tf.Tensor[]) => tf.Tensor): RtVal {
    const out = this.newSlot(physShape(shape, perm));
    this.steps.push({ kind: 'fn', nodes: [node], ops: [op], ins: ins.map((v) => v.slot), outs: [out], fn });
    return this.val(out, shape, perm);
  }

  fnMulti(node: string, op: string, ins: RtVal[], outs: { shape: number[]; perm: number[] }[], fn: (xs: tf.Tensor[]) => tf.Tensor[]): RtVal[] {
    const slots = outs.map((o) => this.newSlot(physShape(o.shape, o.perm)));
    this.steps.push({ kind: 'fn', nodes: [node], ops: [op], ins: ins.map((v) => v.slot), outs: slots, fn });
    return outs.map((o, i) => this.val(slots[i]!, o.shape, o.perm));
  }

  /** A persistent tensor (a constant or a variable) as a runtime value in identity layout. */
  source(node: string, get: () => tf.Tensor, shape: number[]): RtVal {
    const out = this.newSlot([...shape], true);
    this.steps.push({ kind: 'source', nodes: [node], ops: ['Source'], outs: [out], get });
    return this.val(out, shape, identity(shape.length));
  }

  /** A host value as a runtime value (identity layout, float32). */
  constRt(h: HostVal): RtVal {
    let v = this.hostSources.get(h);
    if (!v) {
      const t = this.tensorFor(h, h.shape.length, identity(h.shape.length));
      v = this.source(`const:${h.key ?? '?'}`, () => t, h.shape);
      this.hostSources.set(h, v);
    }
    return v;
  }

  /** Device copy of host value `h` reshaped to `rank` and laid out by `perm` (float32). */
  tensorFor(h: HostVal, rank: number, perm: number[]): tf.Tensor {
    return this.cache.get(
      layoutKey(h, rank, perm),
      () => {
        const l = hostToLayout(h, rank, perm);
        return tf.tensor(l.data instanceof Float32Array ? l.data : Float32Array.from(l.data), l.shape, 'float32');
      },
      this.owned,
    );
  }

  /** Device copy of a host value transformed by `make` (e.g. conv weights in TF layout), cached under `tag`. */
  derived(h: HostVal, tag: string, make: () => tf.Tensor): tf.Tensor {
    return this.cache.get(h.key === undefined ? undefined : `${h.key}|${tag}`, make, this.owned);
  }

  /** `v` in layout `perm` (a transpose, or a reshape when only size-1 axes move; shared by all who ask). */
  toPerm(v: RtVal, perm: number[]): RtVal {
    if (samePerm(v.perm, perm)) return v;
    const key = `${v.slot}|${perm.join(',')}`;
    const hit = this.relayouts.get(key);
    if (hit) return hit;
    const q = relayoutPerm(v.perm, perm);
    const from = physShape(v.shape, v.perm);
    const to = physShape(v.shape, perm);
    const out = isTrivialTranspose(from, q)
      ? this.fn('(layout)', 'Reshape', [v], v.shape, perm, ([x]) => tf.reshape(x!, to))
      : this.fn('(layout)', 'Transpose', [v], v.shape, perm, ([x]) => tf.transpose(x!, q));
    this.relayouts.set(key, out);
    return out;
  }

  toIdentity(v: RtVal): RtVal {
    return this.toPerm(v, identity(v.shape.length));
  }

  /** `v` with leading size-1 axes up to rank `r` (layout extended accordingly). */
  toRank(v: RtVal, r: number): RtVal {
    const k = r - v.shape.length;
    if (k <= 0) return v;
    const shape = [...new Array<number>(k).fill(1), ...v.shape];
    const perm = [...identity(k), ...v.perm.map((a) => a + k)];
    return this.fn('(layout)', 'Reshape', [v], shape, perm, ([x]) => tf.reshape(x!, physShape(shape, perm)));
  }

  conv(node: string, x: RtVal, s: Omit<ConvStep, 'kind' | 'nodes' | 'ops' | 'outs' | 'x'>, outShape: number[], perm: number[]): RtVal {
    const out = this.newSlot(physShape(outShape, perm));
    this.steps.push({ kind: 'conv', nodes: [node], ops: ['Conv'], outs: [out], x: x.slot, ...s });
    return this.val(out, outShape, perm);
  }

  binary(node: string, op: string, bop: BinOp, a: Val, b: Val): RtVal {
    const shape = broadcast(a.shape, b.shape);
    const r = shape.length;
    // Layout: that of the runtime operand with the most elements (the other is brought to it).
    const rts = [a, b].filter((v): v is RtVal => v.kind === 'rt');
    const lead = rts.reduce((m, v) => (size(v.shape) > size(m.shape) ? v : m));
    const perm = lead.shape.length === r ? lead.perm : [...identity(r - lead.shape.length), ...lead.perm.map((p) => p + r - lead.shape.length)];
    const operand = (v: Val): Operand => (v.kind === 'host' ? { host: v } : { slot: this.toPerm(this.toRank(v, r), perm).slot });
    const oa = operand(a);
    const ob = operand(b);
    const out = this.newSlot(physShape(shape, perm));
    this.steps.push({ kind: 'binary', nodes: [node], ops: [op], outs: [out], op: bop, a: oa, b: ob, rank: r, perm });
    return this.val(out, shape, perm);
  }

  clamp(node: string, op: string, x: RtVal, c: Clamp): RtVal {
    const out = this.newSlot(physShape(x.shape, x.perm));
    this.steps.push({ kind: 'clamp', nodes: [node], ops: [op], outs: [out], x: x.slot, clamp: c });
    return this.val(out, x.shape, x.perm);
  }

  /** Constant-mode pad with logical pads [[before, after] per axis] (non-negative). */
  pad(node: string, x: RtVal, logicalPads: [number, number][], value: number): RtVal {
    const shape = x.shape.map((d, i) => d + logicalPads[i]![0] + logicalPads[i]![1]);
    const pads = x.perm.map((a) => logicalPads[a]!);
    const out = this.newSlot(physShape(shape, x.perm));
    this.steps.push({ kind: 'pad', nodes: [node], ops: ['Pad'], outs: [out], x: x.slot, pads, value });
    return this.val(out, shape, x.perm);
  }
}

export function broadcast(a: number[], b: number[]): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[i - (r - a.length)] ?? 1;
    const y = b[i - (r - b.length)] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`shapes [${a.join(',')}] and [${b.join(',')}] do not broadcast`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Optimisation

function ins(s: Step): number[] {
  switch (s.kind) {
    case 'conv': return [s.x, ...('slot' in s.w ? [s.w.slot] : []), ...(s.b && 'slot' in s.b ? [s.b.slot] : [])];
    case 'binary': return [...('slot' in s.a ? [s.a.slot] : []), ...('slot' in s.b ? [s.b.slot] : [])];
    case 'clamp':
    case 'pad': return [s.x];
    case 'fn': return s.ins;
    case 'source': return [];
  }
}

/** Per-channel values of a host operand broadcast against a conv output [N, M, H, W], or undefined if not such. */
function perChannel(h: HostVal, m: number): Float64Array | undefined {
  if (h.shape.length > 4) return undefined;
  const s = [...new Array<number>(4 - h.shape.length).fill(1), ...h.shape];
  if (s[0] !== 1 || s[2] !== 1 || s[3] !== 1 || (s[1] !== 1 && s[1] !== m)) return undefined;
  const out = new Float64Array(m);
  for (let i = 0; i < m; i++) out[i] = h.data[s[1] === 1 ? 0 : i]!;
  return out;
}

function composeClamp(a: Clamp | undefined, b: Clamp): Clamp | undefined {
  if (!a) return b;
  const lo = Math.max(a.lo, b.lo);
  const hi = Math.min(a.hi, b.hi);
  return lo <= hi ? { lo, hi } : undefined;
}

function joinKeys(...keys: (string | undefined)[]): string | undefined {
  return keys.every((k) => k !== undefined) ? keys.join('&') : undefined;
}

/** Fold what can be folded into convolutions (in place). `keep`: slots that must stay observable (outputs). */
export function optimize(steps: Step[], keep: Set<number>): Step[] {
  const uses = new Map<number, number>();
  const consumers = new Map<number, number[]>();
  steps.forEach((s, i) => {
    for (const x of ins(s)) {
      uses.set(x, (uses.get(x) ?? 0) + 1);
      consumers.set(x, [...(consumers.get(x) ?? []), i]);
    }
  });
  const producer = new Map<number, number>();
  steps.forEach((s, i) => s.outs.forEach((o) => producer.set(o, i)));
  const dead = new Set<number>();
  const single = (slot: number): number | undefined => {
    if (keep.has(slot) || uses.get(slot) !== 1) return undefined;
    const c = consumers.get(slot)![0]!;
    return dead.has(c) ? undefined : c;
  };

  steps.forEach((s, i) => {
    if (s.kind !== 'conv' || dead.has(i)) return;
    // Zero padding of H and W in front of the conv.
    const pi = producer.get(s.x);
    const p = pi === undefined ? undefined : steps[pi];
    if (p && p.kind === 'pad' && p.value === 0 && single(s.x) === i) {
      const [n, h, w, c] = p.pads;
      if (n && c && n[0] === 0 && n[1] === 0 && c[0] === 0 && c[1] === 0 && h && w) {
        s.pads = [s.pads[0] + h[0], s.pads[1] + w[0], s.pads[2] + h[1], s.pads[3] + w[1]];
        s.x = p.x;
        s.nodes = [...p.nodes, ...s.nodes];
        s.ops = [...p.ops, ...s.ops];
        dead.add(pi!);
      }
    }
    // Followers: per-channel affine ops with constants (into weights/bias), then clamps (into the activation).
    for (;;) {
      const ci = single(s.outs[0]!);
      if (ci === undefined) break;
      const c = steps[ci]!;
      if (c.kind === 'binary' && !s.clamp && (!s.b || 'host' in s.b)) {
        const mine = 'slot' in c.a && c.a.slot === s.outs[0];
        const other = mine ? c.b : c.a;
        if (!('host' in other)) break;
        const v = perChannel(other.host, s.outC);
        if (!v) break;
        if ((c.op === 'sub' || c.op === 'div') && !mine) break;
        if (c.op !== 'mul' && c.op !== 'div' && c.op !== 'add' && c.op !== 'sub') break;
        const b = s.b && 'host' in s.b ? s.b.host : undefined;
        const nb = new Float32Array(s.outC);
        if (b) nb.set(b.data);
        if (c.op === 'mul' || c.op === 'div') {
          for (let m = 0; m < s.outC; m++) nb[m] = c.op === 'mul' ? nb[m]! * v[m]! : nb[m]! / v[m]!;
          if ('host' in s.w) {
            const w = s.w.host;
            const per = w.data.length / s.outC;
            const wd = new Float32Array(w.data.length);
            for (let m = 0; m < s.outC; m++) {
              for (let k = 0; k < per; k++) wd[m * per + k] = c.op === 'mul' ? w.data[m * per + k]! * v[m]! : w.data[m * per + k]! / v[m]!;
            }
            s.w = { host: { kind: 'host', dtype: w.dtype, shape: w.shape, data: wd, key: joinKeys(w.key, c.op, other.host.key) } };
          } else {
            // A runtime (trainable) weight: the factors are applied when the step runs.
            const f = s.wScale ?? new Float32Array(s.outC).fill(1);
            for (let m = 0; m < s.outC; m++) f[m] = c.op === 'mul' ? f[m]! * v[m]! : f[m]! / v[m]!;
            s.wScale = f;
          }
        } else {
          for (let m = 0; m < s.outC; m++) nb[m] = c.op === 'add' ? nb[m]! + v[m]! : nb[m]! - v[m]!;
        }
        s.b = { host: { kind: 'host', dtype: 1, shape: [s.outC], data: nb, key: joinKeys(b ? b.key : `zeros${s.outC}`, c.op, other.host.key) } };
      } else if (c.kind === 'clamp') {
        const m = composeClamp(s.clamp, c.clamp);
        if (!m) break;
        s.clamp = m;
      } else break;
      s.nodes = [...s.nodes, ...c.nodes];
      s.ops = [...s.ops, ...c.ops];
      s.outs = c.outs;
      dead.add(ci);
    }
  });
  // Clamp after clamp (Relu then Clip) outside convs.
  steps.forEach((s, i) => {
    if (s.kind !== 'clamp' || dead.has(i)) return;
    for (;;) {
      const ci = single(s.outs[0]!);
      if (ci === undefined) break;
      const c = steps[ci]!;
      if (c.kind !== 'clamp') break;
      const m = composeClamp(s.clamp, c.clamp);
      if (!m) break;
      s.clamp = m;
      s.nodes = [...s.nodes, ...c.nodes];
      s.ops = [...s.ops, ...c.ops];
      s.outs = c.outs;
      dead.add(ci);
    }
  });
  return steps.filter((_, i) => !dead.has(i));
}

// ---------------------------------------------------------------------------------------------------------------
// Compilation

export interface CompiledStep {
  /** ONNX nodes the step implements. */
  nodes: string[];
  ins: number[];
  outs: number[];
  /** Slots whose last use is this step (disposed after it). */
  frees: number[];
  label: string;
  run: (xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[];
}

function activationOf(c: Clamp | undefined): { act: 'linear' | 'relu' | 'relu6'; rest?: Clamp } {
  if (!c) return { act: 'linear' };
  if (c.lo === 0 && c.hi === Infinity) return { act: 'relu' };
  if (c.lo === 0 && c.hi === 6) return { act: 'relu6' };
  return { act: 'linear', rest: c };
}

function applyClamp(x: tf.Tensor, c: Clamp): tf.Tensor {
  if (c.lo === 0 && c.hi === Infinity) return tf.relu(x);
  if (c.lo === 0 && c.hi === 6) return tf.relu6(x);
  if (c.hi === Infinity) return tf.maximum(x, c.lo);
  if (c.lo === -Infinity) return tf.minimum(x, c.hi);
  return tf.clipByValue(x, Math.max(c.lo, -FMAX), Math.min(c.hi, FMAX));
}

/** W [M, C/g, kh, kw] (host) with zeros inserted for dilation: [M, C/g, (kh-1)*dh+1, (kw-1)*dw+1]. */
function dilateHost(w: HostVal, dh: number, dw: number): HostVal {
  const [m, c, kh, kw] = w.shape as [number, number, number, number];
  const eh = (kh - 1) * dh + 1;
  const ew = (kw - 1) * dw + 1;
  const out = new Float32Array(m * c * eh * ew);
  for (let a = 0; a < m * c; a++) {
    for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) out[(a * eh + i * dh) * ew + j * dw] = w.data[(a * kh + i) * kw + j]!;
  }
  return { kind: 'host', dtype: 1, shape: [m, c, eh, ew], data: out, key: w.key === undefined ? undefined : `${w.key}|dil${dh},${dw}` };
}

/** The same for a runtime weight tensor. */
function dilateRt(w: tf.Tensor, dh: number, dw: number): tf.Tensor {
  const [m, c, kh, kw] = w.shape as [number, number, number, number];
  let t = tf.reshape(w, [m, c, kh, 1, kw, 1]);
  t = tf.pad(t, [[0, 0], [0, 0], [0, 0], [0, dh - 1], [0, 0], [0, dw - 1]]);
  t = tf.reshape(t, [m, c, kh * dh, kw * dw]);
  return tf.slice(t, [0, 0, 0, 0], [m, c, (kh - 1) * dh + 1, (kw - 1) * dw + 1]);
}

/** 0/1 float mask of where `y = clamp(z, c)` passes gradient (strictly inside the interval); float ops only. */
function clampMask(y: tf.Tensor, c: Clamp): tf.Tensor | undefined {
  if (c.lo === -Infinity && c.hi === Infinity) return undefined;
  if (c.hi === Infinity) return tf.step(c.lo === 0 ? y : tf.sub(y, c.lo));
  if (c.lo === -Infinity) return tf.step(tf.sub(c.hi, y));
  return tf.step(tf.mul(c.lo === 0 ? y : tf.sub(y, c.lo), tf.sub(c.hi, y)));
}

function compileConv(s: ConvStep, p: Planner): CompiledStep['run'] {
  const [dh, dw] = s.dilations;
  const depthwise = s.group === s.inC && s.group > 1 && s.outC % s.inC === 0;
  const mult = s.outC / s.inC;
  const explicit: tf.backend_util.ExplicitPadding = [[0, 0], [s.pads[0], s.pads[2]], [s.pads[1], s.pads[3]], [0, 0]];
  const pad = s.pads.every((x) => x === 0) ? 'valid' : explicit;
  const { act, rest } = activationOf(s.clamp);
  const dil = dh > 1 || dw > 1;
  const tag = depthwise ? 'dw' : s.group === 1 ? 'conv' : `g${s.group}`;
  const nf = depthwise ? 1 : s.group;

  // Filters in TF layout: regular [kh,kw,C/g,M] (per group), depthwise [kh,kw,C,mult]. Dilation is applied to the
  // kernel (zeros inserted), as TF.js has no gradients for dilated convolutions.
  const toTf = (w: tf.Tensor): tf.Tensor4D[] => {
    const [, , kh, kw] = w.shape as number[];
    if (depthwise) return [tf.transpose(tf.reshape(w, [s.inC, mult, kh!, kw!]), [2, 3, 0, 1]) as tf.Tensor4D];
    if (s.group === 1) return [tf.transpose(w, [2, 3, 1, 0]) as tf.Tensor4D];
    return tf.split(w, s.group, 0).map((g) => tf.transpose(g, [2, 3, 1, 0]) as tf.Tensor4D);
  };

  /**
   * Forward with TF-layout filters; bias and relu/relu6 fused. It runs inside tf.customGrad (nothing recorded), so
   * it calls the fused kernels directly: tf.fused.* would unfuse the activation whenever a gradient is recorded.
   */
  const forward = (x: tf.Tensor4D, filters: tf.Tensor4D[], bias: tf.Tensor | undefined): tf.Tensor => {
    let y: tf.Tensor;
    if (s.group === 1 || depthwise) {
      const attrs = { strides: s.strides, pad, dataFormat: 'NHWC', dilations: [1, 1], dimRoundingMode: undefined, activation: act, leakyreluAlpha: 0 };
      const inputs: tf.NamedTensorMap = { x, filter: filters[0]! };
      if (bias) inputs.bias = bias;
      y = tf.engine().runKernel(depthwise ? 'FusedDepthwiseConv2D' : 'FusedConv2D', inputs, attrs as never) as tf.Tensor;
    } else {
      const parts = tf.split(x, s.group, 3).map((xg, g) => tf.conv2d(xg as tf.Tensor4D, filters[g]!, s.strides, pad, 'NHWC', 1));
      y = tf.concat(parts, 3);
      if (bias) y = tf.add(y, bias);
      if (act !== 'linear') y = applyClamp(y, act === 'relu' ? { lo: 0, hi: Infinity } : { lo: 0, hi: 6 });
    }
    return rest ? applyClamp(y, rest) : y;
  };

  // Forward through the fused kernels; the gradient is hand-written: a mask from the output (float ops only:
  // comparisons are slow on wasm), the input gradient as a stride-1 convolution of the upsampled, padded gradient
  // with flipped filters (precomputed for constant weights), filter gradients through the backprop-filter kernels.
  const wHost = 'host' in s.w ? (dil ? dilateHost(s.w.host, dh, dw) : s.w.host) : undefined;
  const wShape = 'host' in s.w ? s.w.host.shape : undefined;
  const hostFilters = wHost
    ? Array.from({ length: nf }, (_, g) => p.derived(wHost, `${tag}:${g}`, () => tf.tidy(() => toTf(p.tensorFor(wHost, 4, [0, 1, 2, 3]))[g]!)) as tf.Tensor4D)
    : undefined;
  const backOf = (f: tf.Tensor4D): tf.Tensor4D => {
    const flipped = f.shape[0] === 1 && f.shape[1] === 1 ? f : tf.reverse(f, [0, 1]);
    if (depthwise) return (mult === 1 ? flipped : tf.reshape(flipped, [f.shape[0], f.shape[1], s.inC * mult, 1])) as tf.Tensor4D;
    return tf.transpose(flipped, [0, 1, 3, 2]) as tf.Tensor4D; // [kh,kw,M/g,C/g]
  };
  const hostBack = wHost && hostFilters ? hostFilters.map((f, g) => p.derived(wHost, `${tag}:back:${g}`, () => tf.tidy(() => backOf(f))) as tf.Tensor4D) : undefined;
  const hostBias = s.b && 'host' in s.b ? p.tensorFor(s.b.host, 1, [0]) : undefined;
  const wRt = 'slot' in s.w;
  const bRt = !!s.b && 'slot' in s.b;
  const cl = s.clamp;
  const geomFor = (ekh: number, ekw: number) => ({ strideH: s.strides[0], strideW: s.strides[1], ekh, ekw, padTop: s.pads[0], padLeft: s.pads[1] });

  /** Filter gradient (TF layout) of one group, through the kernels (wasm: wasm-kernels.ts). */
  const filterGrad = (x: tf.Tensor4D, g: tf.Tensor4D, fshape: number[]): tf.Tensor => {
    if (depthwise) {
      return tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x, dy: g }, { strides: s.strides, pad, dilations: [1, 1], dimRoundingMode: undefined, filterShape: fshape } as never) as tf.Tensor;
    }
    return tf.engine().runKernel('Conv2DBackpropFilter', { x, dy: g }, { strides: s.strides, pad, dataFormat: 'NHWC', dimRoundingMode: undefined, filterShape: fshape } as never) as tf.Tensor;
  };
  /** TF-layout filter gradients back to the ONNX weight layout [M, C/g, kh, kw] (undoing kernel dilation). */
  const toOnnx = (grads: tf.Tensor[], shape: number[]): tf.Tensor => {
    let w: tf.Tensor;
    if (depthwise) {
      const [ekh, ekw] = grads[0]!.shape;
      w = tf.reshape(tf.transpose(grads[0]!, [2, 3, 0, 1]), [s.outC, 1, ekh!, ekw!]);
    } else w = tf.concat(grads.map((g) => tf.transpose(g, [3, 2, 0, 1])), 0);
    if (!dil) return w;
    const [m, c, kh, kw] = shape as [number, number, number, number];
    const rows = tf.tensor1d(Array.from({ length: kh }, (_, i) => i * dh), 'int32');
    const cols = tf.tensor1d(Array.from({ length: kw }, (_, i) => i * dw), 'int32');
    return tf.reshape(tf.gather(tf.gather(w, rows, 2), cols, 3), [m, c, kh, kw]);
  };

  const run = lazyCustomGrad((args: tf.Tensor[], save: tf.GradSaveFunc) => {
    const x = args[0] as tf.Tensor4D;
    const wT = wRt ? (args[1] as tf.Tensor) : undefined;
    const bT = bRt ? (args[wRt ? 2 : 1] as tf.Tensor) : undefined;
    const filters = hostFilters ?? toTf(dil ? dilateRt(wT!, dh, dw) : wT!);
    const y = forward(x, filters, hostBias ?? bT);
    save(wRt || bRt ? [y, x, ...filters] : [y]);
    const [n, ih, iw] = x.shape;
    const wShapeRt = wT ? [...wT.shape] : wShape!;
    return {
      value: y,
      // One thunk per input; the tape calls only those of inputs that lead to what is differentiated (no input
      // gradient for the first conv of a network trained from its input, no filter gradients for a saliency map).
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const m = cl ? clampMask(saved[0]!, cl) : undefined;
        const g = (m ? tf.mul(dy, m) : dy) as tf.Tensor4D;
        const fs = (hostFilters ?? (saved.slice(2) as tf.Tensor4D[]));
        const dx = () => {
          const back = hostBack ?? fs.map(backOf);
          const geom = geomFor(fs[0]!.shape[0], fs[0]!.shape[1]);
          const { src, pad: bp } = backpropInputPlan(g, geom, ih, iw);
          if (depthwise) {
            const d = tf.depthwiseConv2d(src, back[0]!, 1, bp);
            return mult === 1 ? d : tf.sum(tf.reshape(d, [n, ih, iw, s.inC, mult]), 4);
          }
          if (s.group === 1) return tf.conv2d(src, back[0]!, 1, bp);
          return tf.concat(tf.split(src, s.group, 3).map((sg, k) => tf.conv2d(sg as tf.Tensor4D, back[k]!, 1, bp)), 3);
        };
        const grads = [dx];
        if (wRt) {
          grads.push(() => {
            const xs = saved[1] as tf.Tensor4D;
            let fg: tf.Tensor[];
            if (depthwise || s.group === 1) fg = [filterGrad(xs, g, fs[0]!.shape)];
            else {
              const xg = tf.split(xs, s.group, 3);
              const gg = tf.split(g, s.group, 3);
              fg = fs.map((f, k) => filterGrad(xg[k] as tf.Tensor4D, gg[k] as tf.Tensor4D, f.shape));
            }
            return toOnnx(fg, wShapeRt);
          });
        }
        if (bRt) grads.push(() => tf.sum(g, [0, 1, 2]));
        return grads;
      },
    };
  });
  const wSlot = wRt ? 1 : -1;
  const bSlot = bRt ? (wRt ? 2 : 1) : -1;
  const wScale = wRt && s.wScale ? p.tensorFor({ kind: 'host', dtype: 1, shape: [s.outC, 1, 1, 1], data: s.wScale }, 4, [0, 1, 2, 3]) : undefined;
  return (xs) => {
    const args: tf.Tensor[] = [xs[0]!];
    if (wSlot > 0) args.push(wScale ? tf.mul(xs[wSlot]!, wScale) : xs[wSlot]!);
    if (bSlot > 0) args.push(xs[bSlot]!);
    return run(...args);
  };
}

/**
 * tf.customGrad, but `gradFunc` returns one thunk per input, and the tape calls only the thunks of inputs on the
 * path to what is differentiated (tf.customGrad computes every input's gradient). The same engine call tf.customGrad
 * makes (Engine.runKernelFunc, private in the typings).
 */
function lazyCustomGrad(
  f: (inputs: tf.Tensor[], save: tf.GradSaveFunc) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => (() => tf.Tensor)[] },
): (...inputs: tf.Tensor[]) => tf.Tensor {
  const engine = tf.engine() as unknown as {
    runKernelFunc(p: {
      forwardFunc: (backend: unknown, save: tf.GradSaveFunc) => tf.Tensor;
      backwardsFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => Record<string, () => tf.Tensor>;
      inputs: Record<string, tf.Tensor>;
    }): tf.Tensor;
  };
  return (...inputs) => {
    let res: ReturnType<typeof f> | undefined;
    const inputMap: Record<string, tf.Tensor> = {};
    inputs.forEach((t, i) => (inputMap[i] = t));
    return engine.runKernelFunc({
      forwardFunc: (_, save) => {
        res = f(inputs, save);
        return res.value;
      },
      backwardsFunc: (dy, saved) => {
        const thunks = res!.gradFunc(dy, saved);
        if (thunks.length !== inputs.length) throw new Error(`internal: ${thunks.length} gradients for ${inputs.length} inputs`);
        const map: Record<string, () => tf.Tensor> = {};
        thunks.forEach((t, i) => (map[i] = t));
        return map;
      },
      inputs: inputMap,
    });
  };
}

/** Relu/Relu6/Clip with a float-mask gradient (TF.js's Relu6/ClipByValue gradients use comparisons: slow on wasm). */
function compileClamp(c: Clamp): CompiledStep['run'] {
  const run = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
    const y = applyClamp(x, c);
    save([y]);
    return { value: y, gradFunc: (dy: tf.Tensor, [ys]: tf.Tensor[]) => { const m = clampMask(ys!, c); return m ? tf.mul(dy, m) : dy; } };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return ([x]) => run(x!);
}

const BIN: Record<BinOp, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor> = {
  add: tf.add,
  sub: tf.sub,
  mul: tf.mul,
  div: tf.div,
  pow: tf.pow,
  max: tf.maximum,
  min: tf.minimum,
};

function compileBinary(s: BinaryStep, p: Planner): CompiledStep['run'] {
  const f = BIN[s.op];
  const ca = 'host' in s.a ? p.tensorFor(s.a.host, s.rank, s.perm) : undefined;
  const cb = 'host' in s.b ? p.tensorFor(s.b.host, s.rank, s.perm) : undefined;
  if (ca && cb) return () => f(ca, cb);
  if (ca) return ([b]) => f(ca, b!);
  if (cb) return ([a]) => f(a!, cb);
  return ([a, b]) => f(a!, b!);
}

export interface CompiledPlan {
  steps: CompiledStep[];
  nslots: number;
  persistent: boolean[];
  /** Expected physical shape per slot (checked on a plan's first run). */
  phys: number[][];
}

/** Turn optimised steps into closures; `keep` slots (outputs) are never freed. */
export function compile(p: Planner, steps: Step[], keep: Set<number>): CompiledPlan {
  const out: CompiledStep[] = steps.map((s) => {
    const label = s.ops.join('+');
    let run: CompiledStep['run'];
    switch (s.kind) {
      case 'conv': run = compileConv(s, p); break;
      case 'binary': run = compileBinary(s, p); break;
      case 'clamp': run = compileClamp(s.clamp); break;
      case 'pad': { const pads = s.pads; const v = s.value; run = ([x]) => tf.pad(x!, pads, v); break; }
      case 'fn': run = s.fn; break;
      case 'source': { const g = s.get; run = () => g(); break; }
    }
    return { nodes: s.nodes, ins: ins(s), outs: s.outs, frees: [], label, run };
  });
  const last = new Map<number, number>();
  out.forEach((s, i) => s.ins.forEach((x) => last.set(x, i)));
  for (const [slot, i] of last) {
    if (!keep.has(slot) && !p.slots[slot]!.persistent) out[i]!.frees.push(slot);
  }
  // Outputs nobody reads (e.g. unused second outputs of Split) are freed right away.
  out.forEach((s) => s.outs.forEach((o) => { if (!last.has(o) && !keep.has(o) && !p.slots[o]!.persistent) s.frees.push(o); }));
  return { steps: out, nslots: p.slots.length, persistent: p.slots.map((s) => s.persistent), phys: p.slots.map((s) => s.phys) };
}

export { isIdentity };
