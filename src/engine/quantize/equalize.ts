/**
 * Channel range equalisation between consecutive convs (cross-layer equalisation, Nagel et al. 2019, driven by
 * calibration statistics instead of weights), before quantising.
 *
 * Why: QLinearConv has one scale for its whole input tensor, so a channel whose values stay tiny next to its
 * neighbours' is quantised to a handful of levels; a following depthwise conv with large weights on that channel then
 * amplifies the rounding. Measured on the shared MobileNet (16 train images, min/max ranges): the first depthwise
 * conv's output kept cosine 0.917 with float, the second 0.944, every other layer >= 0.99; folded depthwise weights
 * reach |w| = 224 on some channels and 0.11 on others.
 *
 * The fix: for A -> [Relu] -> [Clip(0, hi)] -> [Pad] -> B, scale A's output channel c by k_c (weights and bias) and
 * B's weights on input channel c by 1 / k_c. ReLU commutes with a positive scale; Clip(0, hi) does too as long as the
 * scaled channel stays below hi, which holds on the calibration data by choosing k_c = max_all / max_c (the channel's
 * calibrated max lifted to the tensor's). Zero padding commutes with any scale.
 *
 * Off by default, by measurement: it brings the first depthwise output from cosine 0.917 to 0.9999, but the
 * features at the end gain little once the weight bias correction (qdq.ts) is on, for one more calibration pass.
 * Shared MobileNet, all convs int8, feature cosine to fp32 (32 calibration / 64 validation images): neither 0.9849,
 * equalisation only 0.9852, bias correction only 0.9971, both 0.9970; (100 / 200 images): bias correction 0.9972,
 * both 0.9974.
 */
import { dimsOf, floatInit, GraphIndex, type GraphProto, type NodeProto } from './graph.js';
import { intAttr, stringAttr } from '../../onnx/proto.js';

/** Channel scales beyond this are not applied: such a channel is (nearly) dead and has nothing to gain. */
const MAX_SCALE = 256;

export interface EqualizePair {
  /** The first conv and the tensor after its activations (whose per-channel maxima decide the scales). */
  a: NodeProto;
  end: string;
  b: NodeProto;
  /** Upper clip bound after A (Infinity for a plain Relu). */
  hi: number;
}

/** Pairs A -> (Relu | Clip(0, hi))+ -> (Pad)? -> B with nothing else reading A's channels. */
export function equalizablePairs(idx: GraphIndex): EqualizePair[] {
  const pairs: EqualizePair[] = [];
  for (const a of idx.graph.node ?? []) {
    if (a.opType !== 'Conv' || !idx.inits.get(a.input?.[1] ?? '') || (a.input?.[2] && !idx.inits.get(a.input[2]))) continue;
    let t = a.output![0]!;
    let hi = Infinity;
    let sawRelu = false;
    for (;;) {
      const cons = idx.consumersOf(t);
      if (cons.length !== 1 || idx.graphOutputs.has(t)) break;
      const c = cons[0]!;
      if (c.opType === 'Relu' && c.input![0] === t) sawRelu = true;
      else if (c.opType === 'Clip' && c.input![0] === t && c.input!.length === 3) {
        const lo = idx.constantValues(c.input![1]!)?.[0];
        const up = idx.constantValues(c.input![2]!)?.[0];
        if (lo === undefined || up === undefined || lo !== 0) break;
        hi = Math.min(hi, up);
        sawRelu = true;
      } else break;
      t = c.output![0]!;
    }
    if (!sawRelu) continue;
    const end = t;
    let x = end;
    for (;;) {
      const cons = idx.consumersOf(x);
      if (cons.length !== 1 || idx.graphOutputs.has(x)) break;
      const c = cons[0]!;
      if (c.opType === 'Pad' && c.input![0] === x && stringAttr(c, 'mode', 'constant') === 'constant') {
        const v = c.input![2] ? idx.constantValues(c.input![2]!)?.[0] : 0;
        if (v !== 0) break;
        x = c.output![0]!;
        continue;
      }
      if (c.opType === 'Conv' && c.input![0] === x && idx.inits.get(c.input![1] ?? '')) {
        const channels = dimsOf(idx.inits.get(a.input![1]!)!)[0]!;
        const g = intAttr(c, 'group', 1);
        if (g === 1 || g === channels) pairs.push({ a, end, b: c, hi });
      }
      break;
    }
  }
  return pairs;
}

/**
 * Apply the scales for each pair given the per-channel maxima of `end` (NCHW channel axis). Returns how many
 * channels were rescaled. Initializers are replaced (new names), so shared weights are never changed elsewhere.
 */
export function equalize(graph: GraphProto, pairs: EqualizePair[], channelMax: Map<string, Float64Array>): number {
  const idx = new GraphIndex(graph);
  let changed = 0;
  const replace = (n: NodeProto, slot: number, values: Float64Array, dims: number[]) => {
    const name = `${n.input![slot]}_equalized`;
    graph.initializer!.push(floatInit(name, dims, values));
    n.input = [...n.input!];
    n.input[slot] = name;
    idx.inits.set(name, graph.initializer!.at(-1)!);
  };
  for (const { a, end, b, hi } of pairs) {
    const m = channelMax.get(end);
    if (!m) continue;
    const top = Math.min(hi, Math.max(...m));
    if (!(top > 0)) continue;
    const k = Array.from(m, (v) => (v > 0 && v < top && top / v <= MAX_SCALE ? top / v : 1));
    if (k.every((v) => v === 1)) continue;
    const wa = idx.constantValues(a.input![1]!)!;
    const da = dimsOf(idx.inits.get(a.input![1]!)!);
    const perA = wa.length / da[0]!;
    for (let c = 0; c < da[0]!; c++) for (let j = 0; j < perA; j++) wa[c * perA + j]! *= k[c]!;
    replace(a, 1, wa, da);
    if (a.input![2]) {
      const ba = idx.constantValues(a.input![2]!)!;
      for (let c = 0; c < ba.length; c++) ba[c]! *= k[c]!;
      replace(a, 2, ba, [ba.length]);
    }
    const wb = idx.constantValues(b.input![1]!)!;
    const db = dimsOf(idx.inits.get(b.input![1]!)!);
    const spatial = db.slice(2).reduce((x, y) => x * y, 1);
    if (db[1] === 1 && intAttr(b, 'group', 1) === db[0]) {
      // Depthwise: output channel c reads input channel c.
      for (let c = 0; c < db[0]!; c++) for (let j = 0; j < spatial; j++) wb[c * spatial + j]! /= k[c]!;
    } else {
      for (let o = 0; o < db[0]!; o++) for (let c = 0; c < db[1]!; c++) for (let j = 0; j < spatial; j++) wb[(o * db[1]! + c) * spatial + j]! /= k[c]!;
    }
    replace(b, 1, wb, db);
    changed += k.filter((v) => v !== 1).length;
  }
  return changed;
}
