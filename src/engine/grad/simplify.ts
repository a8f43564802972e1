/**
 * Rewrites of the forward graph that make both passes cheaper, applied before differentiation:
 * - a zero Pad of H and W in front of a Conv becomes the Conv's own pads (TF exports pad "same" convolutions with
 *   an explicit Pad; ONNX Runtime does not fuse it here, and the Pad costs a copy forward and a Slice backward);
 * - Relu followed by Clip becomes one Clip with the lower bound raised to 0 (one mask in the backward pass).
 * Each applies only when the intermediate tensor has no other reader and is not a graph output.
 * Measured on MobileNet v1 0.75, batch 1 input gradient: docs/benchmarks.md.
 */
import { attrString, type ForwardGraph, type FwdNode } from './forward.js';
import { encodeAttr, floatTensor } from './onnx-writer.js';

function readers(fwd: ForwardGraph): Map<string, FwdNode[]> {
  const m = new Map<string, FwdNode[]>();
  for (const n of fwd.nodes) for (const i of n.inputs) if (i) m.set(i, [...(m.get(i) ?? []), n]);
  return m;
}

let counter = 0;

export function simplifyForward(fwd: ForwardGraph): ForwardGraph {
  const outputs = new Set(fwd.outputs);
  let r = readers(fwd);
  const only = (t: string): FwdNode | undefined => {
    const rs = r.get(t);
    return !outputs.has(t) && rs?.length === 1 ? rs[0] : undefined;
  };
  const dead = new Set<FwdNode>();

  for (const pad of fwd.nodes) {
    if (pad.opType !== 'Pad' || attrString(pad, 'mode', 'constant') !== 'constant') continue;
    const conv = only(pad.outputs[0]!);
    if (!conv || conv.opType !== 'Conv' || conv.inputs[0] !== pad.outputs[0] || attrString(conv, 'auto_pad', 'NOTSET') !== 'NOTSET') continue;
    const pads = fwd.values.get(pad.inputs[1]!);
    const value = pad.inputs[2] ? fwd.values.get(pad.inputs[2]) : [0];
    if (!pads || pads.length !== 8 || !value || value[0] !== 0 || pad.inputs[3]) continue;
    const [n0, c0, t, l, n1, c1, b, rr] = pads as [number, number, number, number, number, number, number, number];
    if (n0 || c0 || n1 || c1 || t < 0 || l < 0 || b < 0 || rr < 0) continue;
    const old = conv.attrs.get('pads')?.ints?.map(Number) ?? [0, 0, 0, 0];
    conv.attrs.set('pads', encodeAttr('pads', [old[0]! + t, old[1]! + l, old[2]! + b, old[3]! + rr]));
    conv.inputs[0] = pad.inputs[0]!;
    dead.add(pad);
  }
  fwd.nodes = fwd.nodes.filter((n) => !dead.has(n));
  r = readers(fwd);

  for (const relu of fwd.nodes) {
    if (relu.opType !== 'Relu') continue;
    const clip = only(relu.outputs[0]!);
    if (!clip || clip.opType !== 'Clip') continue;
    const lo = clip.inputs[1] ? fwd.values.get(clip.inputs[1]) : [-Infinity];
    if (!lo || lo.length !== 1) continue;
    const name = `__relu_clip_${counter++}`;
    const v = Math.max(0, lo[0]!);
    const t = floatTensor(name, [], Float32Array.of(v));
    fwd.initializers.push(t);
    fwd.values.set(name, [v]);
    fwd.dims.set(name, []);
    fwd.types.set(name, 1);
    clip.inputs[0] = relu.inputs[0]!;
    clip.inputs[1] = name;
    dead.add(relu);
  }
  fwd.nodes = fwd.nodes.filter((n) => !dead.has(n));
  return fwd;
}
