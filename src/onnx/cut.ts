/**
 * Cutting an ONNX graph at a tensor. The prefix (image → tensor) is what extraction and feature maps run: the graph
 * with other outputs (`withOutputs`), or pruned to what they need (`pruneGraph`). The suffix (tensor → outputs) is
 * what fine-tuning trains (`suffixModel`). Also writing trained weights back (`replaceInitializers`).
 */
import { GraftError } from '../errors.js';
import { type LoadedOnnx, parseOnnx } from '../models/onnx-file.js';
import { valueInfo } from './build.js';
import { DT, type GraphProto, onnx } from './proto.js';
import { type Ancestry, ancestors, protoNodes } from './walk.js';

/**
 * A copy of the model whose outputs are exactly `names` (any inner tensors: ONNX Runtime then drops the nodes they
 * do not need, so a cut model also runs faster). Outputs the graph already has keep their declared type; new ones
 * get `elemType`, or no type at all when it is not given, so that ONNX Runtime infers it (int64 shape arithmetic
 * as well as float activations).
 */
export function withOutputs(bytes: Uint8Array, names: readonly string[], elemType?: number): Uint8Array {
  return setOutputs(bytes, () => names, elemType);
}

/** A copy of the model with `names` added to its outputs (those it has stay first, as they are). See withOutputs. */
export function addOutputs(bytes: Uint8Array, names: readonly string[], elemType?: number): Uint8Array {
  return names.length ? setOutputs(bytes, (existing) => [...existing, ...names], elemType) : bytes;
}

function setOutputs(bytes: Uint8Array, names: (existing: string[]) => readonly string[], elemType: number | undefined): Uint8Array {
  const copy = onnx.ModelProto.decode(bytes);
  const existing = new Map((copy.graph!.output ?? []).map((o) => [o.name ?? '', o]));
  copy.graph!.output = [...new Set(names([...existing.keys()]))].map(
    (name) => existing.get(name) ?? (elemType === undefined ? onnx.ValueInfoProto.create({ name }) : valueInfo(name, undefined, elemType)),
  );
  return onnx.ModelProto.encode(copy).finish();
}

/**
 * Keep only what `targets` depend on (in place): nodes, initializers, graph inputs and value infos. The graph's
 * outputs are left for the caller to set. Returns what was kept.
 */
export function pruneGraph(graph: GraphProto, targets: readonly string[]): Ancestry {
  const nodes = graph.node ?? [];
  const kept = ancestors(protoNodes(nodes), targets);
  graph.node = nodes.filter((_, i) => kept.nodes.has(i));
  graph.initializer = (graph.initializer ?? []).filter((t) => kept.tensors.has(t.name ?? ''));
  graph.input = (graph.input ?? []).filter((v) => kept.tensors.has(v.name ?? ''));
  graph.valueInfo = (graph.valueInfo ?? []).filter((v) => kept.tensors.has(v.name ?? ''));
  return kept;
}

/**
 * A model whose input is `cut` (shape [batch, ...cutShape]) and whose outputs are `outputs`: the nodes after the cut
 * that the outputs need. Fails when the outputs depend on the original input other than through the cut (a skip
 * connection across the cut, or shape arithmetic on an earlier tensor).
 */
export function suffixModel(model: LoadedOnnx, cut: string, cutShape: number[], outputs: string[]): LoadedOnnx {
  const copy = onnx.ModelProto.decode(model.bytes);
  const g = copy.graph!;
  const inits = new Set((g.initializer ?? []).map((t) => t.name ?? ''));
  const graphInputs = new Set(model.info.inputs.map((i) => i.name));
  const kept = ancestors(protoNodes(g.node ?? []), outputs, { stopAt: new Set([cut]) });
  for (const t of kept.leaves) {
    if (inits.has(t)) continue;
    if (graphInputs.has(t)) {
      throw new GraftError(`${model.info.path}: cannot cut at '${cut}': the layers after it also read the model input (skip connection or shape arithmetic across the cut)`);
    }
    throw new GraftError(`${model.info.path}: no node produces '${t}'`);
  }
  g.node = (g.node ?? []).filter((_, i) => kept.nodes.has(i));
  g.initializer = (g.initializer ?? []).filter((t) => kept.tensors.has(t.name ?? ''));
  g.input = [valueInfo(cut, ['batch', ...cutShape])];
  const oldOut = new Map((g.output ?? []).map((o) => [o.name, o]));
  g.output = outputs.map((o) => oldOut.get(o) ?? valueInfo(o, undefined, DT.FLOAT));
  g.valueInfo = [];
  return parseOnnx(onnx.ModelProto.encode(copy).finish(), `${model.info.path}#from:${cut}`);
}

/**
 * The original model with some float initializers replaced (the fine-tuned weights): same graph, same outputs, so it
 * runs anywhere the original does (ONNX Runtime, `graft predict` / `eval` through a run's config).
 */
export function replaceInitializers(model: LoadedOnnx, weights: Record<string, Float32Array>): Uint8Array {
  const copy = onnx.ModelProto.decode(model.bytes);
  const left = new Set(Object.keys(weights));
  for (const t of copy.graph!.initializer ?? []) {
    const w = weights[t.name ?? ''];
    if (!w) continue;
    const count = (t.dims ?? []).reduce((a: number, d) => a * Number(d), 1);
    if (count !== w.length) throw new GraftError(`${model.info.path}: initializer '${t.name}': ${w.length} values for ${count} elements`);
    t.floatData = [];
    t.rawData = new Uint8Array(Buffer.from(w.buffer, w.byteOffset, w.byteLength));
    t.dataType = DT.FLOAT;
    left.delete(t.name ?? '');
  }
  if (left.size) throw new GraftError(`no initializers named ${[...left].join(', ')} in ${model.info.path}`);
  return onnx.ModelProto.encode(copy).finish();
}
