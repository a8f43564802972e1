/**
 * One ONNX graph for a trained run: the backbone pruned to what its feature tensor needs, then the head as plain
 * ONNX ops (Flatten, Sub/Div standardisation, Gemm [+ Relu + Gemm], Softmax). Anything that runs ONNX can then
 * classify with the run, without graft.
 */
import onnxProto from 'onnx-proto';
import { GraftError } from '../errors.js';
import { valueInfo } from '../engine/grad/onnx-writer.js';
import type { LoadedOnnx } from '../models/onnx-file.js';
import { denseParams, headGraph, type DenseHeadValues } from './head-graph.js';
import { pruneGraph } from '../onnx/cut.js';
import { defaultOpset } from '../onnx/proto.js';
import { decodeFloat32, type HeadJson } from './heads.js';

const { onnx } = onnxProto;
type GraphProto = InstanceType<typeof onnx.GraphProto>;

/** Output names of an exported graph, in the order they are listed. */
export const EXPORT_OUTPUTS = { probabilities: 'probabilities', logits: 'logits', features: 'features' } as const;

const RESERVED = new Set<string>(Object.values(EXPORT_OUTPUTS));

export interface ExportGraphOptions {
  /** The backbone tensor the head was trained on (run config's model.featureTensor). */
  featureTensor: string;
  head: HeadJson;
  /** Added to (and overriding) the backbone's metadata_props. */
  metadata?: Record<string, string>;
  docString?: string;
}

export interface ExportedGraph {
  bytes: Uint8Array;
  outputs: { name: string; shape: (number | string)[] }[];
  /** Backbone nodes kept (those the feature tensor depends on) and dropped (e.g. the original classifier). */
  nodes: { kept: number; dropped: number; head: number };
}

/**
 * Rename backbone tensors whose names the head's outputs need (a backbone usually already has `features` and
 * `logits`), so the exported graph's output names mean what the sidecar says.
 */
function renameClashes(graph: GraphProto, tensors: Set<string>): Map<string, string> {
  const inputs = new Set((graph.input ?? []).map((v) => v.name ?? ''));
  const renames = new Map<string, string>();
  for (const t of tensors) {
    if (!RESERVED.has(t)) continue;
    if (inputs.has(t)) throw new GraftError(`the backbone's input is named '${t}', which the exported graph needs for an output; rename it first`);
    let name = `backbone/${t}`;
    for (let i = 1; tensors.has(name); i++) name = `backbone/${t}_${i}`;
    renames.set(t, name);
  }
  if (renames.size === 0) return renames;
  const r = (s: string) => renames.get(s) ?? s;
  for (const n of graph.node ?? []) {
    n.input = (n.input ?? []).map(r);
    n.output = (n.output ?? []).map(r);
  }
  for (const init of graph.initializer ?? []) init.name = r(init.name ?? '');
  for (const v of graph.valueInfo ?? []) v.name = r(v.name ?? '');
  return renames;
}

/**
 * A prefix for the head's tensor and node names that no backbone name starts with (exporting a run trained on an
 * exported model meets the previous head's names).
 */
function headPrefix(graph: GraphProto): string {
  const names = (graph.node ?? []).flatMap((n) => [n.name ?? '', ...(n.output ?? [])]).concat((graph.initializer ?? []).map((t) => t.name ?? ''));
  let prefix = 'graft_head/';
  for (let i = 2; names.some((n) => n.startsWith(prefix)); i++) prefix = `graft_head${i}/`;
  return prefix;
}

/** The head's values from its JSON (checked against its shapes). */
export function denseHeadValues(head: HeadJson, src: string): DenseHeadValues {
  const d = head.dim;
  const C = head.classes.length;
  const mean = decodeFloat32(head.mean, [d], 'mean', src);
  const std = decodeFloat32(head.std, [d], 'std', src);
  if (head.kind === 'linear') {
    return { kind: 'linear', d, C, H: 0, mean, std, params: [decodeFloat32(head.params.W, [C, d], 'params.W', src), decodeFloat32(head.params.b, [C], 'params.b', src)] };
  }
  if (head.kind === 'mlp') {
    const H = head.params.W1.shape[0]!;
    const params = denseParams('mlp', d, H, C).map((q) => decodeFloat32(head.params[q.name as 'W1' | 'b1' | 'W2' | 'b2'], q.dims, `params.${q.name}`, src));
    return { kind: 'mlp', d, C, H, mean, std, params };
  }
  throw knnRefusal(src);
}

export function knnRefusal(src: string): GraftError {
  return new GraftError(
    `${src}: kNN heads cannot be exported: a kNN head keeps its training examples and votes among the nearest ones, ` +
      `so it has no logits to put in an ONNX graph; train a linear or mlp head (--head linear|mlp) to export`,
  );
}

/**
 * The backbone cut at `featureTensor` with the head spliced on. The backbone keeps its opset, IR version and
 * metadata; only the nodes the features depend on are kept, so the original classifier's weights are dropped.
 */
export function buildExportGraph(backbone: LoadedOnnx, opts: ExportGraphOptions): ExportedGraph {
  const src = backbone.info.path;
  if (opts.head.kind === 'knn') throw knnRefusal(src);
  const opset = defaultOpset(backbone.proto);
  // Sub/Div broadcasting and Softmax with an axis need opset 7 or later.
  if (opset < 7) throw new GraftError(`${src}: ONNX opset ${opset} is too old to export (need 7 or later)`);

  const model = onnx.ModelProto.decode(backbone.bytes);
  const graph = model.graph as GraphProto;
  const backboneNodes = graph.node?.length ?? 0;
  if (!backbone.info.nodes.some((n) => n.outputs.includes(opts.featureTensor))) {
    throw new GraftError(`${src}: no node produces the run's feature tensor '${opts.featureTensor}'`);
  }
  const { nodes: keep, tensors } = pruneGraph(graph, [opts.featureTensor]);
  const imageInput = backbone.info.inputs[0]!;
  if (!tensors.has(imageInput.name)) throw new GraftError(`${src}: the feature tensor '${opts.featureTensor}' does not depend on the input '${imageInput.name}'`);

  const renames = renameClashes(graph, tensors);
  const feature = renames.get(opts.featureTensor) ?? opts.featureTensor;

  const head = headGraph(feature, denseHeadValues(opts.head, src), { prefix: headPrefix(graph), features: EXPORT_OUTPUTS.features, logits: EXPORT_OUTPUTS.logits, probabilities: EXPORT_OUTPUTS.probabilities });
  const batch = imageInput.shape[0] ?? 'batch';
  const batchDim = typeof batch === 'number' && batch > 0 ? batch : typeof batch === 'string' && batch !== '?' ? batch : 'batch';
  const C = opts.head.classes.length;
  const outputs = [
    { name: EXPORT_OUTPUTS.probabilities, shape: [batchDim, C] },
    { name: EXPORT_OUTPUTS.logits, shape: [batchDim, C] },
    { name: EXPORT_OUTPUTS.features, shape: [batchDim, opts.head.dim] },
  ];
  graph.node = [...graph.node, ...head.nodes];
  graph.initializer = [...graph.initializer, ...head.initializers];
  graph.output = outputs.map((o) => valueInfo(o.name, o.shape));

  const meta = new Map((model.metadataProps ?? []).map((p) => [p.key ?? '', p.value ?? '']));
  for (const [k, v] of Object.entries(opts.metadata ?? {})) meta.set(k, v);
  model.metadataProps = [...meta].map(([key, value]) => onnx.StringStringEntryProto.create({ key, value }));
  model.producerName = 'graft export';
  if (opts.docString) model.docString = opts.docString;
  return {
    bytes: onnx.ModelProto.encode(model).finish(),
    outputs,
    nodes: { kept: keep.size, dropped: backboneNodes - keep.size, head: head.nodes.length },
  };
}
