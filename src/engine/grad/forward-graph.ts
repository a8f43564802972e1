/**
 * The forward graph's data types and node-attribute readers, below forward.ts: the passes forward.ts runs
 * (bn-train.ts, simplify.ts) need them, and importing them from forward.ts made an import circle.
 */
import { toNum } from '../../onnx/proto.js';
import type { AttributeProto, TensorProto } from './onnx-writer.js';

export { toNum };

export interface FwdNode {
  name: string;
  opType: string;
  inputs: string[];
  outputs: string[];
  attrs: Map<string, AttributeProto>;
}

export interface ForwardGraph {
  /** Data inputs (the image), at the batch size the graph was made for. */
  inputs: { name: string; dims: number[] }[];
  /** Trainable weights: graph inputs of the gradient graph, with their values in the model. */
  params: { name: string; dims: number[]; value: Float32Array }[];
  /** The model's outputs. */
  outputs: string[];
  /** Nodes that depend on an input or a parameter, in execution order, in opset-17 form. */
  nodes: FwdNode[];
  /** Constants those nodes read (original initializers and folded tensors). */
  initializers: TensorProto[];
  dims: Map<string, number[]>;
  /** ONNX element type of every tensor. */
  types: Map<string, number>;
  /** Values of small constant tensors (≤ 4096 elements), for rules that need numbers (pads, axes, min/max). */
  values: Map<string, number[]>;
  batch: number;
  opset: number;
  /** Batch statistics of the batch-norm nodes run in training mode. */
  bnStats: BnBatchStats[];
}

export interface BnBatchStats {
  /** Running-statistic initializers of the node. */
  mean: string;
  variance: string;
  /** Outputs holding this batch's mean and unbiased variance, [C]. */
  batchMean: string;
  batchVar: string;
  momentum: number;
}

export function attrInt(n: FwdNode, name: string, dflt: number): number {
  const a = n.attrs.get(name);
  return a ? toNum(a.i) : dflt;
}
export function attrInts(n: FwdNode, name: string): number[] | undefined {
  const a = n.attrs.get(name);
  return a ? (a.ints ?? []).map(toNum) : undefined;
}
export function attrFloat(n: FwdNode, name: string, dflt: number): number {
  const a = n.attrs.get(name);
  return a ? (a.f ?? dflt) : dflt;
}
export function attrString(n: FwdNode, name: string, dflt: string): string {
  const a = n.attrs.get(name);
  return a?.s ? new TextDecoder().decode(a.s) : dflt;
}

