/** Which nodes of a TF.js graph the outputs need, in dependency order. */
import { fail } from '../fail.js';
import type { GraphModelJson, GraphNode } from './model-json.js';

/** `node:index` → its parts (index 0 when absent). */
export const ref = (s: string): { node: string; index: number } => {
  const m = /^(.*?)(?::(\d+))?$/.exec(s)!;
  return { node: m[1]!, index: Number(m[2] ?? 0) };
};
/** A node's data inputs (control inputs, `^name`, only order execution). */
export const dataInputs = (n: GraphNode): string[] => (n.input ?? []).filter((s) => !s.startsWith('^'));
export const where = (n: GraphNode): string => `node '${n.name}' (op ${n.op})`;

export interface GraphOrder {
  byName: Map<string, GraphNode>;
  /** The graph's outputs (`node` or `node:index`): the signature's, else the nodes nothing consumes. */
  outRefs: string[];
  /** The nodes the outputs need, each after its inputs. */
  order: GraphNode[];
}

export function graphOrder(json: GraphModelJson, file: string): GraphOrder {
  const nodes = json.modelTopology.node!;
  if (json.modelTopology.library?.function?.length) fail(file, 'graph has functions (control flow); not supported');
  const byName = new Map<string, GraphNode>();
  for (const n of nodes) {
    if (byName.has(n.name)) fail(file, `two nodes are named '${n.name}'`);
    byName.set(n.name, n);
  }
  const sig = json.signature ?? json.userDefinedMetadata?.signature;
  let outRefs = Object.values(sig?.outputs ?? {}).map((o) => o?.name).filter((s): s is string => typeof s === 'string');
  if (outRefs.length && !outRefs.every((s) => byName.has(ref(s).node))) outRefs = [];
  if (!outRefs.length) {
    const used = new Set<string>();
    for (const n of nodes) for (const s of n.input ?? []) used.add(ref(s.replace(/^\^/, '')).node);
    outRefs = nodes.filter((n) => !used.has(n.name) && !['Const', 'NoOp', 'Placeholder'].includes(n.op)).map((n) => n.name);
  }
  if (!outRefs.length) fail(file, 'graph has no output');
  // Depth-first with an explicit stack: real graphs are deeper than the call stack allows.
  const order: GraphNode[] = [];
  const state = new Map<string, 1 | 2>();
  for (const o of outRefs) {
    const stack: [GraphNode, number][] = [[byName.get(ref(o).node)!, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const [n, i] = top;
      if (i === 0) {
        if (state.get(n.name) === 2) {
          stack.pop();
          continue;
        }
        state.set(n.name, 1);
      }
      const ins = dataInputs(n);
      if (i < ins.length) {
        top[1]++;
        const dep = byName.get(ref(ins[i]!).node) ?? fail(file, `${where(n)}: input '${ins[i]}' is not a node of the graph`);
        const s = state.get(dep.name);
        if (s === 1) fail(file, `${where(n)}: the graph has a cycle through '${dep.name}'`);
        if (s !== 2) stack.push([dep, 0]);
      } else {
        state.set(n.name, 2);
        order.push(n);
        stack.pop();
      }
    }
  }
  return { byName, outRefs, order };
}
