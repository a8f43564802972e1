/**
 * An editable view of an ONNX graph for the quantiser: who produces and who consumes each tensor, constant values
 * (initializers and Constant nodes), and helpers to add typed initializers and nodes. The rewrite passes edit the
 * node list and initializers in place, then `finish` orders the nodes topologically and drops dead ones.
 */
import onnxProto from 'onnx-proto';
import { DT, encodeAttr, type Attr } from '../grad/onnx-writer.js';

const { onnx } = onnxProto;
export type ModelProto = onnxProto.onnx.IModelProto;
export type GraphProto = onnxProto.onnx.IGraphProto;
export type NodeProto = onnxProto.onnx.INodeProto;
export type TensorProto = onnxProto.onnx.ITensorProto;
export { DT };

export function toNum(v: unknown): number {
  if (typeof v === 'number') return v;
  if (v && typeof (v as { toNumber?: () => number }).toNumber === 'function') return (v as { toNumber(): number }).toNumber();
  return Number(v ?? 0);
}

/** An attribute of a node as a number / numbers / string (undefined when absent). */
export function attrInt(n: NodeProto, name: string, dflt: number): number {
  const a = (n.attribute ?? []).find((x) => x.name === name);
  return a ? toNum(a.i) : dflt;
}
export function attrFloat(n: NodeProto, name: string, dflt: number): number {
  const a = (n.attribute ?? []).find((x) => x.name === name);
  return a ? (a.f ?? dflt) : dflt;
}
export function attrString(n: NodeProto, name: string, dflt: string): string {
  const a = (n.attribute ?? []).find((x) => x.name === name);
  return a?.s?.length ? new TextDecoder().decode(a.s) : dflt;
}

/** The numbers of a tensor proto (float, double, int8/16/32/64, uint8, bool), from raw or typed fields. */
export function tensorValues(t: TensorProto): Float64Array {
  const dt = t.dataType ?? DT.FLOAT;
  const raw = t.rawData && t.rawData.length ? t.rawData : undefined;
  if (raw) {
    const buf = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    switch (dt) {
      case DT.FLOAT: return Float64Array.from(new Float32Array(buf));
      case DT.DOUBLE: return new Float64Array(buf);
      case DT.INT32: return Float64Array.from(new Int32Array(buf));
      case DT.INT64: return Float64Array.from(new BigInt64Array(buf), Number);
      case DT.UINT8: case DT.BOOL: return Float64Array.from(new Uint8Array(buf));
      case DT.INT8: return Float64Array.from(new Int8Array(buf));
      default: throw new Error(`tensor '${t.name}' has element type ${dt}, which the quantiser does not read`);
    }
  }
  if (dt === DT.FLOAT) return Float64Array.from(t.floatData ?? []);
  if (dt === DT.DOUBLE) return Float64Array.from(t.doubleData ?? []);
  if (dt === DT.INT64) return Float64Array.from((t.int64Data ?? []).map(toNum));
  return Float64Array.from((t.int32Data ?? []).map(toNum));
}

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
    for (const n of graph.node ?? []) {
      for (const o of n.output ?? []) if (o) this.producer.set(o, n);
      for (const i of n.input ?? []) {
        if (!i) continue;
        let c = this.consumers.get(i);
        if (!c) this.consumers.set(i, (c = []));
        if (!c.includes(n)) c.push(n);
      }
    }
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
