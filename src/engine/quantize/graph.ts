/**
 * An editable view of an ONNX graph for the quantiser: who produces and who consumes each tensor, constant values
 * (initializers and Constant nodes), and helpers to add typed initializers and nodes. The rewrite passes edit the
 * node list and initializers in place, then `finish` orders the nodes topologically and drops dead ones.
 */
import onnxProto from 'onnx-proto';
import { encodeAttr, type Attr } from '../../onnx/build.js';
import { DT, tensorValues, toNum } from '../../onnx/proto.js';
import { consumerIndex, producerIndex, protoNodes } from '../../onnx/walk.js';

const { onnx } = onnxProto;
export type ModelProto = onnxProto.onnx.IModelProto;
export type GraphProto = onnxProto.onnx.IGraphProto;
export type NodeProto = onnxProto.onnx.INodeProto;
export type TensorProto = onnxProto.onnx.ITensorProto;
export { DT, tensorValues };

export function dimsOf(t: TensorProto): number[] {
  return (t.dims ?? []).map(toNum);
}

function typedTensor(name: string, dims: number[], dataType: number, bytes: Uint8Array): TensorProto {
  return onnx.TensorProto.create({ name, dims, dataType, rawData: bytes });
}
export function floatInit(name: string, dims: number[], v: ArrayLike<number>): TensorProto {
  return typedTensor(name, dims, DT.FLOAT, new Uint8Array(Float32Array.from(v).buffer));
}
export function int8Init(name: string, dims: number[], v: ArrayLike<number>): TensorProto {
  return typedTensor(name, dims, DT.INT8, new Uint8Array(Int8Array.from(v).buffer));
}
export function uint8Init(name: string, dims: number[], v: ArrayLike<number>): TensorProto {
  return typedTensor(name, dims, DT.UINT8, Uint8Array.from(v));
}
export function int32Init(name: string, dims: number[], v: ArrayLike<number>): TensorProto {
  return typedTensor(name, dims, DT.INT32, new Uint8Array(Int32Array.from(v).buffer));
}

export function makeNode(op: string, inputs: string[], outputs: string[], name: string, attrs: Record<string, Attr> = {}): NodeProto {
  return onnx.NodeProto.create({
    opType: op,
    name,
    domain: '',
    input: inputs,
    output: outputs,
    attribute: Object.entries(attrs).map(([k, v]) => encodeAttr(k, v)),
  });
}

/** Producer/consumer maps and constants of a graph; rebuild (`new GraphIndex`) after structural edits. */
export class GraphIndex {
  readonly producer = new Map<string, NodeProto>();
  readonly consumers = new Map<string, NodeProto[]>();
  readonly inits = new Map<string, TensorProto>();
  readonly graphOutputs: Set<string>;
  readonly graphInputs: Set<string>;

  constructor(readonly graph: GraphProto) {
    for (const t of graph.initializer ?? []) this.inits.set(t.name ?? '', t);
    const nodes = graph.node ?? [];
    const io = protoNodes(nodes);
    for (const [t, i] of producerIndex(io)) this.producer.set(t, nodes[i]!);
    for (const [t, is] of consumerIndex(io)) this.consumers.set(t, is.map((i) => nodes[i]!));
    this.graphOutputs = new Set((graph.output ?? []).map((o) => o.name ?? ''));
    this.graphInputs = new Set((graph.input ?? []).map((o) => o.name ?? '').filter((n) => !this.inits.has(n)));
  }

  consumersOf(t: string): NodeProto[] {
    return this.consumers.get(t) ?? [];
  }

  /** The tensor proto of a constant: an initializer or a Constant node's `value` (undefined when not constant). */
  constant(name: string): TensorProto | undefined {
    if (!name) return undefined;
    const init = this.inits.get(name);
    if (init) return init;
    const p = this.producer.get(name);
    if (p?.opType === 'Constant') {
      const v = (p.attribute ?? []).find((a) => a.name === 'value');
      if (v?.t) return v.t as TensorProto;
    }
    return undefined;
  }

  constantValues(name: string): Float64Array | undefined {
    const t = this.constant(name);
    return t ? tensorValues(t) : undefined;
  }

  /** A float tensor that is computed (not a constant): graph input or a node's output. */
  isActivation(name: string): boolean {
    return !!name && !this.constant(name) && (this.graphInputs.has(name) || this.producer.has(name));
  }
}

/**
 * Order nodes topologically (stable: a node keeps its place unless an input comes later) and drop nodes none of
 * whose outputs is used (by a node or as a graph output), repeatedly: the rewrite leaves unused Dequantize nodes
 * and the float weights behind, and ONNX requires nodes in topological order.
 */
export function finishGraph(graph: GraphProto): void {
  const outputs = new Set((graph.output ?? []).map((o) => o.name ?? ''));
  let nodes = [...(graph.node ?? [])];
  for (;;) {
    const used = new Set<string>(outputs);
    for (const n of nodes) for (const i of n.input ?? []) used.add(i);
    const kept = nodes.filter((n) => (n.output ?? []).some((o) => o && used.has(o)));
    if (kept.length === nodes.length) break;
    nodes = kept;
  }
  const available = new Set<string>([...(graph.input ?? []).map((i) => i.name ?? ''), ...(graph.initializer ?? []).map((t) => t.name ?? ''), '']);
  const ordered: NodeProto[] = [];
  const pending = [...nodes];
  while (pending.length) {
    const k = pending.findIndex((n) => (n.input ?? []).every((i) => available.has(i)));
    if (k < 0) throw new Error(`internal: quantised graph has a cycle or a missing input at ${pending[0]!.name}`);
    const [n] = pending.splice(k, 1);
    ordered.push(n!);
    for (const o of n!.output ?? []) available.add(o);
  }
  graph.node = ordered;
  const usedNames = new Set<string>();
  for (const n of ordered) for (const i of n.input ?? []) usedNames.add(i);
  const before = new Set((graph.initializer ?? []).map((t) => t.name ?? ''));
  graph.initializer = (graph.initializer ?? []).filter((t) => usedNames.has(t.name ?? '') || outputs.has(t.name ?? ''));
  // Older exporters list initializers among the inputs too: an input for a dropped initializer would want a feed.
  const after = new Set(graph.initializer.map((t) => t.name ?? ''));
  graph.input = (graph.input ?? []).filter((i) => !before.has(i.name ?? '') || after.has(i.name ?? ''));
  const produced = new Set<string>(ordered.flatMap((n) => n.output ?? []));
  graph.valueInfo = (graph.valueInfo ?? []).filter((v) => produced.has(v.name ?? ''));
}
