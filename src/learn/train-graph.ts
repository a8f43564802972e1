/**
 * The graphs fine-tuning runs: the suffix of the backbone (cut tensor → pooled features) with the head appended
 * (head-graph.ts: the one definition of graft's dense heads), its dropout mask a graph input so masks stay seeded
 * by step.
 */
import onnxProto from 'onnx-proto';
import { valueInfo } from '../engine/grad/onnx-writer.js';
import { headGraph, type DenseHeadValues, type HeadGraph } from './head-graph.js';

const { onnx } = onnxProto;

/** Prefix of the head's names in fine-tuning graphs (checkpoints key the weights as `head:<short name>`). */
export const HEAD_PREFIX = 'head/';

/** `suffix` (outputs: the pooled feature tensor) with the head appended; outputs: features and logits. */
export function withHead(suffix: Uint8Array, featureTensor: string, head: DenseHeadValues, dropout: boolean): { bytes: Uint8Array; head: HeadGraph } {
  const model = onnx.ModelProto.decode(suffix);
  const g = model.graph!;
  const h = headGraph(featureTensor, head, { prefix: HEAD_PREFIX }, { dropout });
  g.node = [...(g.node ?? []), ...h.nodes];
  g.initializer = [...(g.initializer ?? []), ...h.initializers];
  g.input = [...(g.input ?? []), ...h.inputs];
  g.output = [valueInfo(featureTensor, ['batch', head.d]), valueInfo(h.logits, ['batch', head.C])];
  return { bytes: onnx.ModelProto.encode(model).finish(), head: h };
}

/** A copy in which the named initializers are graph inputs instead (weights that change between runs). */
export function initializersAsInputs(bytes: Uint8Array, names: string[]): Uint8Array {
  const model = onnx.ModelProto.decode(bytes);
  const g = model.graph!;
  const set = new Set(names);
  const moved = (g.initializer ?? []).filter((t) => set.has(t.name ?? ''));
  g.initializer = (g.initializer ?? []).filter((t) => !set.has(t.name ?? ''));
  g.input = [...(g.input ?? []).filter((v) => !set.has(v.name ?? '')), ...moved.map((t) => valueInfo(t.name!, (t.dims ?? []).map(Number)))];
  return onnx.ModelProto.encode(model).finish();
}
