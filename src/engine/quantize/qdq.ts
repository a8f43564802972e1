/**
 * The QDQ rewrite: QuantizeLinear/DequantizeLinear pairs on calibrated activations, int8 weights with per-channel
 * scales, int32 biases, in the form ONNX Runtime's optimiser fuses into integer kernels (see plan.ts for the facts).
 *
 * Numbers:
 * - Activations are asymmetric uint8 by default: x ~ (q - zp) * s with s = (hi - lo) / 255, the range widened to
 *   hold 0 so that 0.0 (padding, ReLU) is exact. uint8 is what ORT's x86 kernels run (U8S8; int8 activations are
 *   converted to uint8 by its QDQS8ToU8 pass anyway); 'int8' is kept for measurement.
 * - Weights are symmetric int8 in [-127, 127], one scale per output channel (axis 0 for Conv, the output axis of
 *   Gemm's B); MatMul per column. Depthwise convs have one output channel per group, so per-channel scales matter
 *   most there: a single scale for the first depthwise conv of the shared MobileNet would span channels whose
 *   weights differ by 100x.
 * - Bias: int32 with scale x_scale * w_scale[c] and zero point 0, as QLinearConv computes it.
 */
import {
  dimsOf,
  finishGraph,
  floatInit,
  GraphIndex,
  int32Init,
  int8Init,
  makeNode,
  type GraphProto,
  type NodeProto,
  uint8Init,
} from './graph.js';
import { intAttr } from '../../onnx/proto.js';
import type { Plan } from './plan.js';

/** Largest |int32 bias| written, with headroom for the accumulator it is added to. */
const BIAS_LIMIT = 2 ** 30;

export type ActivationType = 'uint8' | 'int8';

export interface QParams { scale: number; zeroPoint: number; qmin: number; qmax: number }

/** One ULP below a positive float32. */
function f32Below(x: number): number {
  const f = new Float32Array([x]);
  const i = new Int32Array(f.buffer);
  i[0]!--;
  return f[0]!;
}

/** Asymmetric parameters for the real range [lo, hi] (widened to hold 0), float32 scale. */
export function activationParams(lo: number, hi: number, type: ActivationType): QParams {
  const qmin = type === 'uint8' ? 0 : -128;
  const qmax = type === 'uint8' ? 255 : 127;
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  // A tensor that is all zeros on the calibration set: any scale represents it; 1/255 keeps the maths finite.
  const span = hi - lo > 1e-30 ? hi - lo : 1;
  const scale = Math.fround(span / (qmax - qmin));
  const zeroPoint = Math.max(qmin, Math.min(qmax, Math.round(qmin - lo / scale)));
  return { scale, zeroPoint, qmin, qmax };
}

export interface RewriteOptions {
  activationType: ActivationType;
  /** Per-channel weight scales (default true). */
  perChannel: boolean;
  /** Per-channel means of calibrated tensors: when given, Conv biases absorb the mean error of the int8 weights. */
  means?: Map<string, Float64Array>;
}

export interface RewriteResult {
  quantized: { node: string; op: string; depthwise: boolean }[];
  /** Relu / Clip nodes dropped because the quantised range does their clamping. */
  removedActivations: number;
}

/** A Clip's bounds (opset >= 11 inputs, older attributes); -inf/inf when absent. */
function clipBounds(n: NodeProto, idx: GraphIndex): [number, number] | undefined {
  if ((n.input ?? []).length > 1) {
    const lo = n.input![1] ? idx.constantValues(n.input![1]!) : undefined;
    const hi = n.input![2] ? idx.constantValues(n.input![2]!) : undefined;
    if ((n.input![1] && !lo) || (n.input![2] && !hi)) return undefined;
    return [lo ? lo[0]! : -Infinity, hi ? hi[0]! : Infinity];
  }
  const a = (n.attribute ?? []).find((x) => x.name === 'min');
  const b = (n.attribute ?? []).find((x) => x.name === 'max');
  return [a?.f ?? -Infinity, b?.f ?? Infinity];
}

/**
 * Symmetric int8 quantisation of a weight tensor along `axis` (undefined: one scale). Returns the int8 values and the
 * scale per slice; an all-zero slice gets scale 1 (its values are 0 whatever the scale). `minScale[c]`, when given,
 * raises a slice's scale (see the int32 bias limit in rewriteQdq).
 */
export function quantizeWeights(w: Float64Array, dims: number[], axis: number | undefined, minScale?: ArrayLike<number>): { q: Int8Array; scales: Float32Array } {
  const channels = axis === undefined ? 1 : dims[axis]!;
  const inner = axis === undefined ? 1 : dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const chOf = (i: number) => (axis === undefined ? 0 : Math.floor(i / inner) % channels);
  const maxAbs = new Float64Array(channels);
  for (let i = 0; i < w.length; i++) maxAbs[chOf(i)] = Math.max(maxAbs[chOf(i)]!, Math.abs(w[i]!));
  const scales = Float32Array.from(maxAbs, (m, c) => Math.max(m > 0 ? m / 127 : 1, minScale?.[c] ?? 0));
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) q[i] = Math.max(-127, Math.min(127, Math.round(w[i]! / scales[chOf(i)]!)));
  return { q, scales };
}

/**
 * Weight bias correction (Nagel et al. 2019): int8 weights shift each output channel's mean by
 * sum_i (Wq - W)[c, i] * E[x_i]; subtract that from the bias. E[x_i] is the calibrated mean of input channel i
 * (zero padding at the borders is ignored). Measured on the shared MobileNet: see docs/benchmarks.md.
 */
function correctBias(bias: Float64Array, w: Float64Array, q: Int8Array, scales: Float32Array, dims: number[], group: number, mean: Float64Array): void {
  const cout = dims[0]!;
  const cinPerGroup = dims[1]!;
  const spatial = dims.slice(2).reduce((a, b) => a * b, 1);
  const outPerGroup = cout / group;
  if (mean.length !== cinPerGroup * group) return;
  for (let c = 0; c < cout; c++) {
    const g = Math.floor(c / outPerGroup);
    let shift = 0;
    for (let i = 0; i < cinPerGroup; i++) {
      let d = 0;
      for (let k = 0; k < spatial; k++) {
        const at = (c * cinPerGroup + i) * spatial + k;
        d += q[at]! * scales[c]! - w[at]!;
      }
      shift += d * mean[g * cinPerGroup + i]!;
    }
    bias[c]! -= shift;
  }
}

/** Rewrite `graph` in place: QDQ for the planned nodes with the calibrated ranges. */
export function rewriteQdq(graph: GraphProto, plan: Plan, ranges: Map<string, [number, number]>, opts: RewriteOptions): RewriteResult {
  const idx = new GraphIndex(graph);
  const nodes = graph.node!;
  const inits = graph.initializer!;
  const added: NodeProto[] = [];
  const removed = new Set<NodeProto>();
  const zpInit = opts.activationType === 'uint8' ? uint8Init : int8Init;
  /** Float tensor name -> its quantised twin and parameters. */
  const quantised = new Map<string, { q: string; p: QParams; scaleName: string; zpName: string }>();
  const redirect = new Map<string, string>();
  const inputRoots = new Set(plan.nodes.map((p) => p.root));

  // 1. A QuantizeLinear/DequantizeLinear pair per calibrated tensor; Relu/Clip before it dropped when redundant.
  for (const root of plan.roots) {
    const r = ranges.get(root);
    if (!r) throw new Error(`internal: no calibrated range for '${root}'`);
    let p = activationParams(r[0], r[1], opts.activationType);
    let src = root;
    const drop: NodeProto[] = [];
    // A model output that only a quantised node's result reaches (no quantised node reads it) is written by the
    // DequantizeLinear, for the fusion; one that a quantised node reads keeps its float values (e.g. the pooled
    // features feeding the classifier are graft's features, and stay exact).
    const isOutput = idx.graphOutputs.has(root) && !inputRoots.has(root);
    for (;;) {
      if (idx.graphOutputs.has(root) && !isOutput) break;
      const prod = idx.producer.get(src);
      if (!prod || (prod.opType !== 'Relu' && prod.opType !== 'Clip')) break;
      const input = prod.input![0]!;
      if (idx.consumersOf(input).length !== 1 || idx.graphOutputs.has(input) || !idx.producer.has(input)) break;
      // Real values the quantised tensor can hold: [(qmin - zp) s, (qmax - zp) s].
      const lowest = (p.qmin - p.zeroPoint) * p.scale;
      if (prod.opType === 'Relu') {
        if (lowest < 0) break;
      } else {
        const b = clipBounds(prod, idx);
        if (!b || lowest < b[0]) break;
        // The top may overshoot the clip bound by float rounding of the scale: nudge the scale down by ULPs. More
        // than rounding (a range calibrated past the bound) keeps the Clip.
        if ((p.qmax - p.zeroPoint) * p.scale > b[1] * (1 + 1e-6)) break;
        let s = p.scale;
        while ((p.qmax - p.zeroPoint) * s > b[1] && s > 0) s = f32Below(s);
        if (s !== p.scale) p = { ...p, scale: s };
      }
      drop.push(prod);
      src = input;
    }
    for (const d of drop) removed.add(d);
    // A model output keeps its name: the DequantizeLinear writes it, and what computed it writes a renamed tensor.
    if (isOutput && drop.length === 0 && !idx.graphInputs.has(root)) {
      const prod = idx.producer.get(root)!;
      src = `${root}_float`;
      prod.output = prod.output!.map((o) => (o === root ? src : o));
    }
    const scaleName = `${root}_scale`;
    const zpName = `${root}_zero_point`;
    inits.push(floatInit(scaleName, [], [p.scale]), zpInit(zpName, [], [p.zeroPoint]));
    const q = `${root}_quantized`;
    const dq = isOutput && !idx.graphInputs.has(root) ? root : `${root}_dequantized`;
    added.push(makeNode('QuantizeLinear', [src, scaleName, zpName], [q], `${root}_QuantizeLinear`));
    added.push(makeNode('DequantizeLinear', [q, scaleName, zpName], [dq], `${root}_DequantizeLinear`));
    quantised.set(root, { q, p, scaleName, zpName });
    quantised.set(dq, { q, p, scaleName, zpName });
    if (dq !== root) redirect.set(root, dq);
  }
  for (const n of nodes) {
    if (removed.has(n)) continue;
    n.input = n.input!.map((i) => redirect.get(i) ?? i);
  }

  // 2. Passthrough ops between a calibrated tensor and a quantised node run on the quantised bytes.
  const moved = new Set<NodeProto>();
  for (const pn of plan.nodes) {
    for (const p of pn.chain) {
      if (moved.has(p)) continue;
      moved.add(p);
      const src = quantised.get(p.input![0]!);
      if (!src) throw new Error(`internal: passthrough ${p.name} reads an unquantised tensor`);
      const out = p.output![0]!;
      const qOut = `${out}_quantized`;
      p.input = [...p.input!];
      p.input[0] = src.q;
      if (p.opType === 'Pad') {
        const v = p.input[2] ? idx.constantValues(p.input[2])?.[0] ?? 0 : 0;
        if (v === 0) p.input[2] = src.zpName;
        else {
          const name = `${out}_pad_value_quantized`;
          inits.push(zpInit(name, [], [Math.max(src.p.qmin, Math.min(src.p.qmax, Math.round(v / src.p.scale) + src.p.zeroPoint))]));
          p.input[2] = name;
        }
        while (p.input.length < 3) p.input.push('');
      }
      p.output = [qOut];
      added.push(makeNode('DequantizeLinear', [qOut, src.scaleName, src.zpName], [out], `${out}_DequantizeLinear`));
      quantised.set(out, { ...src, q: qOut });
    }
  }

  // 3. Weights and biases.
  const result: RewriteResult = { quantized: [], removedActivations: removed.size };
  for (const pn of plan.nodes) {
    const n = pn.node;
    const x = quantised.get(n.input![0]!);
    if (!x) throw new Error(`internal: ${n.name} reads an unquantised activation`);
    const wName = n.input![1]!;
    const wInit = idx.inits.get(wName)!;
    const dims = dimsOf(wInit);
    const w = idx.constantValues(wName)!;
    let axis: number | undefined;
    if (opts.perChannel) axis = n.opType === 'Conv' ? 0 : n.opType === 'Gemm' ? (intAttr(n, 'transB', 0) ? 0 : 1) : 1;
    const bName = n.opType === 'MatMul' ? undefined : n.input![2];
    // A Conv without bias gets a zero one when bias correction will fill it.
    const bias = bName ? idx.constantValues(bName)! : n.opType === 'Conv' && opts.means ? new Float64Array(dims[0]!) : undefined;
    // The bias is int32 at scale x_scale * w_scale[c]: a channel whose weights are ~0 (dead channels of a folded
    // batch norm reach |w| = 1e-12 in the shared MobileNet) with a bias of -1.6 would need 1e16. Raise such a
    // channel's weight scale until its bias fits (its weights then round to 0, as they nearly are).
    let minScale: Float64Array | undefined;
    if (bias) {
      const outCh = axis === undefined ? 1 : dims[axis]!;
      minScale = new Float64Array(outCh);
      for (let c = 0; c < bias.length; c++) {
        const k = axis === undefined ? 0 : c;
        minScale[k] = Math.max(minScale[k]!, Math.abs(bias[c]!) / (x.p.scale * BIAS_LIMIT));
      }
    }
    const { q, scales } = quantizeWeights(w, dims, axis, minScale);
    const mean = n.opType === 'Conv' && bias && pn.chain.every((c) => c.opType === 'Pad' || c.opType === 'Identity') ? opts.means?.get(pn.root) : undefined;
    if (mean && bias && axis === 0) correctBias(bias, w, q, scales, dims, intAttr(n, 'group', 1), mean);
    const base = n.name || n.output![0]!;
    const wq = `${base}_weight_quantized`;
    const ws = `${base}_weight_scale`;
    const wz = `${base}_weight_zero_point`;
    const sDims = axis === undefined ? [] : [scales.length];
    inits.push(int8Init(wq, dims, q), floatInit(ws, sDims, scales), int8Init(wz, sDims, new Array(scales.length).fill(0)));
    const axisAttr: Record<string, number> = axis === undefined ? {} : { axis };
    added.push(makeNode('DequantizeLinear', [wq, ws, wz], [`${base}_weight_dequantized`], `${base}_weight_DequantizeLinear`, axisAttr));
    n.input = [...n.input!];
    n.input[1] = `${base}_weight_dequantized`;
    if (bias) {
      const b = bias;
      const outCh = axis === undefined ? b.length : scales.length;
      const bScale = Float32Array.from({ length: outCh }, (_, c) => x.p.scale * scales[axis === undefined ? 0 : c]!);
      const bq = Int32Array.from(b, (v, c) => Math.max(-BIAS_LIMIT, Math.min(BIAS_LIMIT, Math.round(v / bScale[c]!))));
      const bqName = `${base}_bias_quantized`;
      inits.push(int32Init(bqName, [outCh], bq), floatInit(`${base}_bias_scale`, [outCh], bScale), int32Init(`${base}_bias_zero_point`, [outCh], new Array(outCh).fill(0)));
      added.push(makeNode('DequantizeLinear', [bqName, `${base}_bias_scale`, `${base}_bias_zero_point`], [`${base}_bias_dequantized`], `${base}_bias_DequantizeLinear`, { axis: 0 }));
      n.input[2] = `${base}_bias_dequantized`;
    }
    const depthwise = n.opType === 'Conv' && intAttr(n, 'group', 1) > 1 && intAttr(n, 'group', 1) === dims[0];
    result.quantized.push({ node: base, op: n.opType!, depthwise });
  }

  graph.node = [...nodes.filter((n) => !removed.has(n)), ...added];
  finishGraph(graph);
  return result;
}

