/**
 * Which nodes of a float graph get int8 weights, which activation tensors need a calibrated range, and what stays
 * float (and why). Pure graph analysis: no numbers are computed here.
 *
 * Facts taken from ONNX Runtime's QDQ quantiser and its graph optimiser (onnxruntime/python/tools/quantization and
 * core/optimizer/qdq_transformer), which is what turns the QDQ graph into integer kernels:
 * - Conv fuses into QLinearConv when its input and weight come from DequantizeLinear (bias: int32 DQ) and its
 *   output goes straight to QuantizeLinear; Gemm fuses into QGemm (output Q optional), MatMul into QLinearMatMul or
 *   MatMulIntegerToFloat. Grouped and depthwise convs take the same path.
 * - Relu and Clip after a quantised op are dropped when the output's quantised range already does their clamping
 *   (ORT's python quantiser: QDQRemovableActivation; its optimiser: ReluQuantFusion, ClipQuantFusion).
 * - Data-movement ops (Reshape, Transpose, Flatten, Squeeze, MaxPool, ...) run on the quantised bytes: ORT drops
 *   DQ->op->Q around them. Pad is not in that list, so graft puts Pad itself on the uint8 tensor (padding with the
 *   zero point, which is exactly 0.0): the shared MobileNet pads before each of its 14 stride-2 / 3x3 convs with a
 *   Pad whose amounts come from the input shape, and a float Pad between Q and DQ would break every fusion.
 */
import { dimsOf, GraphIndex, type NodeProto } from './graph.js';
import { intAttr, stringAttr } from '../../onnx/proto.js';

/** Ops graft quantises (weights from an initializer). */
export const COMPUTE_OPS = new Set(['Conv', 'Gemm', 'MatMul']);

/** Ops that only move or select values: they run on the quantised tensor with the scale of their input. */
export const PASSTHROUGH_OPS = new Set(['Pad', 'MaxPool', 'Reshape', 'Flatten', 'Transpose', 'Squeeze', 'Unsqueeze', 'Identity']);

export interface PlanOptions {
  /** Leave the first weighted layer(s) (those reading the model input) in float. */
  skipFirst?: boolean;
  /** Leave the last weighted layer(s) (those feeding a model output with no weighted layer between) in float. */
  skipLast?: boolean;
  /** Node names to leave in float. */
  keepFloat?: string[];
}

export interface PlannedNode {
  node: NodeProto;
  /** Calibrated tensor the activation input derives from (through `chain`). */
  root: string;
  /** Passthrough nodes from `root` to the node's activation input, in order: they run on the quantised tensor. */
  chain: NodeProto[];
  /**
   * Where the node's output (after its Relu/Clip) is quantised (for QLinearConv-style fusion), also when it is a
   * model output (which then carries the dequantised values).
   */
  outRoot?: string;
}

export interface FloatNode { node: string; op: string; reason: string }

export interface Plan {
  nodes: PlannedNode[];
  /** Tensors that need a calibrated range, in graph order. */
  roots: string[];
  float: FloatNode[];
}

/** Why a compute node cannot be quantised (undefined: it can). */
function unsupported(n: NodeProto, idx: GraphIndex, opset: number): string | undefined {
  const x = n.input?.[0] ?? '';
  if (!idx.isActivation(x)) return 'its data input is a constant';
  const wName = n.input?.[1] ?? '';
  const w = idx.inits.get(wName);
  if (!w) return 'its weights are not a constant initializer';
  if ((w.dataType ?? 1) !== 1) return 'its weights are not float32';
  if (opset < 13) return `model opset ${opset} < 13 (per-channel QuantizeLinear/DequantizeLinear need opset 13)`;
  const dims = dimsOf(w);
  if (n.opType === 'Conv') {
    if (dims.length < 3) return 'weights of rank < 3';
    const b = n.input?.[2];
    if (b && !idx.inits.get(b)) return 'its bias is not a constant initializer';
  } else if (n.opType === 'Gemm') {
    if (dims.length !== 2) return 'B is not a matrix';
    if (intAttr(n, 'transA', 0) !== 0) return 'transA = 1';
    const alpha = (n.attribute ?? []).find((a) => a.name === 'alpha')?.f ?? 1;
    const beta = (n.attribute ?? []).find((a) => a.name === 'beta')?.f ?? 1;
    if (alpha !== 1 || beta !== 1) return `alpha ${alpha}, beta ${beta} (only 1, 1)`;
    const c = n.input?.[2];
    if (c) {
      const ci = idx.inits.get(c);
      const nOut = intAttr(n, 'transB', 0) ? dims[0]! : dims[1]!;
      if (!ci) return 'its bias C is not a constant initializer';
      if (dimsOf(ci).reduce((a, b) => a * b, 1) !== nOut) return 'its bias C is not one value per output';
    }
  } else if (n.opType === 'MatMul') {
    if (dims.length !== 2) return 'B is not a matrix';
  }
  return undefined;
}

/** Walk back from a node's activation input through passthrough ops to the tensor that gets calibrated. */
function rootOf(x: string, idx: GraphIndex, opset: number): { root: string; chain: NodeProto[] } {
  const chain: NodeProto[] = [];
  let t = x;
  for (;;) {
    const p = idx.producer.get(t);
    if (!p || !PASSTHROUGH_OPS.has(p.opType ?? '') || idx.graphOutputs.has(t) || p.output!.filter(Boolean).length !== 1) break;
    // Pad before opset 11 takes its value as an attribute, and a computed pad value cannot be quantised here.
    if (p.opType === 'Pad' && (opset < 11 || (!!p.input?.[2] && !idx.constant(p.input[2])))) break;
    if (p.opType === 'Pad' && !['constant', 'reflect', 'edge'].includes(stringAttr(p, 'mode', 'constant'))) break;
    if (!idx.isActivation(p.input![0]!)) break;
    chain.unshift(p);
    t = p.input![0]!;
  }
  return { root: t, chain };
}

/** The end of a Relu/Clip chain after `t` (each with `t` as its only consumer), or `t` itself. */
export function activationEnd(t: string, idx: GraphIndex): string {
  let cur = t;
  for (;;) {
    const cons = idx.consumersOf(cur);
    if (cons.length !== 1 || idx.graphOutputs.has(cur)) return cur;
    const c = cons[0]!;
    if ((c.opType !== 'Relu' && c.opType !== 'Clip') || c.input![0] !== cur) return cur;
    cur = c.output![0]!;
  }
}

/** True when a model output is reachable from `t` without passing another weighted (compute) op. */
function feedsOutput(t: string, idx: GraphIndex): boolean {
  const seen = new Set<string>();
  const stack = [t];
  while (stack.length) {
    const cur = stack.pop()!;
    if (seen.has(cur)) continue;
    seen.add(cur);
    if (idx.graphOutputs.has(cur)) return true;
    for (const c of idx.consumersOf(cur)) if (!COMPUTE_OPS.has(c.opType ?? '')) stack.push(...(c.output ?? []).filter(Boolean));
  }
  return false;
}

export function planQuantization(idx: GraphIndex, opset: number, opts: PlanOptions = {}): Plan {
  const keep = new Set(opts.keepFloat ?? []);
  const nodes: PlannedNode[] = [];
  const float: FloatNode[] = [];
  const graphNodes = idx.graph.node ?? [];
  for (const n of graphNodes) {
    if (!COMPUTE_OPS.has(n.opType ?? '')) continue;
    const name = n.name || n.output![0]!;
    const why = unsupported(n, idx, opset);
    if (why) {
      float.push({ node: name, op: n.opType!, reason: why });
      continue;
    }
    const { root, chain } = rootOf(n.input![0]!, idx, opset);
    if (keep.has(name)) {
      float.push({ node: name, op: n.opType!, reason: 'kept float on request' });
      continue;
    }
    if (opts.skipFirst && idx.graphInputs.has(root)) {
      float.push({ node: name, op: n.opType!, reason: 'first layer, kept float' });
      continue;
    }
    if (opts.skipLast && feedsOutput(n.output![0]!, idx)) {
      float.push({ node: name, op: n.opType!, reason: 'last layer, kept float' });
      continue;
    }
    const end = activationEnd(n.output![0]!, idx);
    // Gemm and MatMul fuse without an output QuantizeLinear (QGemm, MatMulIntegerToFloat write float): a model output
    // they compute (class scores) stays float. QLinearConv needs one, so a conv's output is quantised regardless.
    const floatOut = n.opType !== 'Conv' && idx.graphOutputs.has(end);
    nodes.push({ node: n, root, chain, ...(floatOut ? {} : { outRoot: end }) });
  }
  const quantised = new Set(nodes.map((p) => p.node));
  const moved = new Set(nodes.flatMap((p) => p.chain));
  const rootSet = new Set<string>();
  for (const p of nodes) {
    rootSet.add(p.root);
    if (p.outRoot) rootSet.add(p.outRoot);
  }
  // What reads a quantised tensor in float, other than the ops handled here: the ops with no int8 path in graft.
  const handled = new Set(['Relu', 'Clip', 'QuantizeLinear', 'DequantizeLinear', 'Shape']);
  const reported = new Set<NodeProto>();
  for (const r of rootSet) {
    for (const c of idx.consumersOf(r)) {
      if (quantised.has(c) || moved.has(c) || handled.has(c.opType ?? '') || reported.has(c) || COMPUTE_OPS.has(c.opType ?? '')) continue;
      reported.add(c);
      float.push({ node: c.name || c.output![0]!, op: c.opType ?? '', reason: 'no int8 path: reads the dequantised tensor' });
    }
  }
  // Roots in graph order (deterministic, and the order a reader expects).
  const order = new Map<string, number>();
  [...idx.graphInputs].forEach((t, i) => order.set(t, -1 - i));
  graphNodes.forEach((n, i) => n.output?.forEach((o) => order.set(o, i)));
  const roots = [...rootSet].sort((a, b) => (order.get(a)! - order.get(b)!) || (a < b ? -1 : a > b ? 1 : 0));
  return { nodes, roots, float };
}
