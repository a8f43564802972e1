/**
 * Rewrites of the forward graph that make both passes cheaper, applied before differentiation:
 * - a zero Pad of H and W in front of a Conv becomes the Conv's own pads (TF exports pad "same" convolutions with
 *   an explicit Pad; ONNX Runtime does not fuse it here, and the Pad costs a copy forward and a Slice backward);
 * - Relu followed by Clip becomes one Clip with the lower bound raised to 0 (one mask in the backward pass);
 * - a trained Conv followed by a frozen per-channel Mul + Add (folded batch norm) scales its weights instead.
 * Each applies only when the intermediate tensor has no other reader and is not a graph output.
 * Measured on MobileNet v1 0.75, batch 1 input gradient: docs/benchmarks.md.
 */
import { attrString, type ForwardGraph, type FwdNode } from './forward-graph.js';
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
  r = readers(fwd);

  // A trained convolution followed by a frozen per-channel affine (batch norm folded into Mul + Add, as exported
  // MobileNets have it): scale the weights instead of the activations, W' = W·s, b' = b·s + t. The same function of
  // the same trained W, but the scale runs on the [M, C, k, k] weights rather than on the [N, M, H, W] activations,
  // and the shift becomes the convolution's bias: per layer one Mul and one Add fewer forward and one Mul fewer
  // backward. (With constant weights ONNX Runtime fuses this itself; weights fed as inputs it cannot.)
  const params = new Set(fwd.params.map((p) => p.name));
  const perChannel = (name: string | undefined, m: number): Float32Array | undefined => {
    if (!name || params.has(name)) return undefined;
    const v = fwd.values.get(name);
    const d = fwd.dims.get(name);
    if (!v || !d) return undefined;
    if (v.length === 1) return new Float32Array(m).fill(v[0]!);
    // Right-aligned against [N, M, H, W]: M on the third axis from the end, every other axis 1.
    if (v.length !== m || d.length < 3 || d[d.length - 3] !== m || d.some((x, i) => i !== d.length - 3 && x !== 1)) return undefined;
    return Float32Array.from(v);
  };
  const inserted = new Map<FwdNode, FwdNode>();
  for (const conv of fwd.nodes) {
    const w = conv.inputs[1];
    if (conv.opType !== 'Conv' || !w || !params.has(w) || (conv.inputs[2] && params.has(conv.inputs[2]))) continue;
    const mul = only(conv.outputs[0]!);
    if (!mul || mul.opType !== 'Mul') continue;
    const add = only(mul.outputs[0]!);
    if (!add || add.opType !== 'Add') continue;
    const wd = fwd.dims.get(w);
    if (!wd || wd.length !== 4) continue;
    const m = wd[0]!;
    const sv = perChannel(mul.inputs[0] === conv.outputs[0] ? mul.inputs[1] : mul.inputs[0], m);
    const tv = perChannel(add.inputs[0] === mul.outputs[0] ? add.inputs[1] : add.inputs[0], m);
    const bias = conv.inputs[2] ? fwd.values.get(conv.inputs[2]) : new Array<number>(m).fill(0);
    if (!sv || !tv || !bias || bias.length !== m) continue;
    const id = counter++;
    const scaleName = `__bn_scale_${id}`;
    const biasName = `__bn_bias_${id}`;
    const scaled = `__bn_w_${id}`;
    const b = Float32Array.from(bias, (x, i) => x * sv[i]! + tv[i]!);
    for (const [name, dims, value] of [[scaleName, [m, 1, 1, 1], sv], [biasName, [m], b]] as const) {
      fwd.initializers.push(floatTensor(name, [...dims], value));
      if (value.length <= 4096) fwd.values.set(name, Array.from(value));
      fwd.dims.set(name, [...dims]);
      fwd.types.set(name, 1);
    }
    fwd.dims.set(scaled, wd);
    fwd.types.set(scaled, 1);
    inserted.set(conv, { name: scaled, opType: 'Mul', inputs: [w, scaleName], outputs: [scaled], attrs: new Map() });
    conv.inputs = [conv.inputs[0]!, scaled, biasName];
    conv.outputs = [add.outputs[0]!];
    dead.add(mul);
    dead.add(add);
  }
  fwd.nodes = fwd.nodes.filter((n) => !dead.has(n)).flatMap((n) => (inserted.has(n) ? [inserted.get(n)!, n] : [n]));
  return fwd;
}
