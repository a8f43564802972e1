/**
 * Who produces and who reads each tensor of a graph, and what a tensor depends on. Works on any node list with
 * `inputs`/`outputs` (OnnxInfo's nodes are such; `protoNodes` makes NodeProtos so), by node index, so callers
 * index back into whichever node list they hold.
 */
import type onnxProto from 'onnx-proto';

export interface NodeIO {
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
}

/**
 * Tensor names a node reads: its inputs and what its subgraphs (If/Loop/Scan bodies) take from the enclosing scope,
 * which ONNX does not list among the node's inputs. Names a subgraph makes itself are not reads.
 */
export function readsOf(node: onnxProto.onnx.INodeProto): string[] {
  const names = (node.input ?? []).filter(Boolean);
  for (const a of node.attribute ?? []) {
    for (const g of [a.g, ...(a.graphs ?? [])]) {
      if (!g) continue;
      const local = new Set<string>([
        ...(g.input ?? []).map((v) => v.name ?? ''),
        ...(g.initializer ?? []).map((t) => t.name ?? ''),
        ...(g.node ?? []).flatMap((n) => n.output ?? []),
      ]);
      for (const n of g.node ?? []) for (const r of readsOf(n)) if (!local.has(r)) names.push(r);
    }
  }
  return names;
}

/** NodeProtos as NodeIO, their inputs including what their subgraphs read (see readsOf). */
export function protoNodes(nodes: readonly onnxProto.onnx.INodeProto[]): NodeIO[] {
  return nodes.map((n) => ({ inputs: readsOf(n), outputs: (n.output ?? []).filter(Boolean) }));
}

/** Tensor name → index of the node that produces it. Graph inputs and initializers have no producer. */
export function producerIndex(nodes: readonly NodeIO[]): Map<string, number> {
  const m = new Map<string, number>();
  nodes.forEach((n, i) => n.outputs.forEach((o) => o && m.set(o, i)));
  return m;
}

/** Tensor name → indices of the nodes that read it, in graph order, each node once (Mul(x, x) reads x once). */
export function consumerIndex(nodes: readonly NodeIO[]): Map<string, number[]> {
  const m = new Map<string, number[]>();
  nodes.forEach((n, i) => {
    for (const t of n.inputs) {
      if (!t) continue;
      const c = m.get(t);
      if (!c) m.set(t, [i]);
      else if (c.at(-1) !== i) c.push(i);
    }
  });
  return m;
}

export interface Ancestry {
  /** Indices of the nodes the targets depend on. */
  nodes: Set<number>;
  /** Every tensor on the way: the targets, what the kept nodes read (graph inputs, initializers) and all they output. */
  tensors: Set<string>;
  /** Tensors reached that no node produces and that are not in `stopAt`: graph inputs, initializers, or missing. */
  leaves: Set<string>;
}

/**
 * What `targets` depend on, walking back from them through producers. The walk does not go past a tensor in
 * `stopAt` (a cut: that tensor is listed, its producer is not).
 */
export function ancestors(nodes: readonly NodeIO[], targets: readonly string[], opts: { stopAt?: ReadonlySet<string> } = {}): Ancestry {
  const producer = producerIndex(nodes);
  const out: Ancestry = { nodes: new Set(), tensors: new Set(), leaves: new Set() };
  const stack = [...targets];
  while (stack.length) {
    const t = stack.pop()!;
    if (!t || out.tensors.has(t)) continue;
    out.tensors.add(t);
    if (opts.stopAt?.has(t)) continue;
    const i = producer.get(t);
    if (i === undefined) {
      out.leaves.add(t);
      continue;
    }
    if (out.nodes.has(i)) continue;
    out.nodes.add(i);
    for (const o of nodes[i]!.outputs) out.tensors.add(o);
    stack.push(...nodes[i]!.inputs);
  }
  return out;
}
