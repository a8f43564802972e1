/**
 * Graph surgery for fine-tuning: the conv blocks of a CNN (found from the graph), the cut tensor for "the last N
 * blocks", the suffix graph that starts at the cut (what trains on the differentiable executor), which initializers
 * train, and writing trained weights back into the original model.
 */
import onnxProto from 'onnx-proto';
import { valueInfo } from '../engine/grad/onnx-writer.js';
import { GraftError } from '../errors.js';
import { type LoadedOnnx, parseOnnx } from '../models/onnx-file.js';

const { onnx } = onnxProto;

// ---------------------------------------------------------------------------------------------------------------
// Blocks and cut points

export interface Block {
  /** 0-based, in graph order. */
  index: number;
  /** Conv node names in the block (a depthwise conv and the pointwise conv after it, or a single conv). */
  convs: string[];
  /** The tensor the block reads (before any Pad): cutting here fine-tunes this block and all after it. */
  input: string;
  /** The block's output (after its batch-norm / activation chain). */
  output: string;
}

const CHAIN_OPS = new Set(['Mul', 'Add', 'Relu', 'Clip', 'BatchNormalization', 'Sigmoid', 'HardSigmoid', 'HardSwish', 'LeakyRelu']);

function intAttr(model: LoadedOnnx, nodeIndex: number, name: string): number | undefined {
  const a = model.proto.graph!.node![nodeIndex]!.attribute?.find((x) => x.name === name);
  if (!a) return undefined;
  const v = a.i as unknown;
  return typeof v === 'number' ? v : Number((v as { toString(): string }).toString());
}

/**
 * The conv blocks of a (sequential) CNN, found from the graph: each Conv with its batch-norm/activation chain; a
 * depthwise conv (group > 1) and the conv right after it form one block (MobileNet's depthwise-separable pair).
 */
export function listBlocks(model: LoadedOnnx): Block[] {
  const nodes = model.info.nodes;
  const producer = new Map<string, number>();
  const consumers = new Map<string, number[]>();
  nodes.forEach((n, i) => {
    for (const o of n.outputs) producer.set(o, i);
    for (const x of n.inputs) if (x) consumers.set(x, [...(consumers.get(x) ?? []), i]);
  });
  const inputOf = (i: number): string => {
    let t = nodes[i]!.inputs[0]!;
    for (;;) {
      const p = producer.get(t);
      if (p === undefined || nodes[p]!.opType !== 'Pad') return t;
      t = nodes[p]!.inputs[0]!;
    }
  };
  const outputOf = (i: number): string => {
    let t = nodes[i]!.outputs[0]!;
    for (;;) {
      const c = consumers.get(t) ?? [];
      if (c.length !== 1 || !CHAIN_OPS.has(nodes[c[0]!]!.opType) || nodes[c[0]!]!.inputs[0] !== t) return t;
      t = nodes[c[0]!]!.outputs[0]!;
    }
  };
  const convs = nodes.map((n, i) => (n.opType === 'Conv' ? i : -1)).filter((i) => i >= 0);
  const blocks: Block[] = [];
  for (let k = 0; k < convs.length; k++) {
    const i = convs[k]!;
    const group = intAttr(model, i, 'group') ?? 1;
    const next = convs[k + 1];
    if (group > 1 && next !== undefined && inputOf(next) === outputOf(i)) {
      blocks.push({ index: blocks.length, convs: [nodes[i]!.name, nodes[next]!.name], input: inputOf(i), output: outputOf(next) });
      k++;
    } else {
      blocks.push({ index: blocks.length, convs: [nodes[i]!.name], input: inputOf(i), output: outputOf(i) });
    }
  }
  return blocks;
}

/**
 * The cut for fine-tuning the last `n` blocks ('all': every block). With `featureTensor`, only blocks that feed it
 * count: a classifier written as a 1x1 conv after the pooled features (Keras/TF.js MobileNet) is not a block to tune.
 */
export function cutForLastBlocks(model: LoadedOnnx, n: number | 'all', featureTensor?: string): { cut: string; blocks: Block[] } {
  const blocks = featureTensor ? tunableBlocks(model, featureTensor) : listBlocks(model);
  if (blocks.length === 0) throw new GraftError(`${model.info.path}: no convolution blocks found to fine-tune`);
  const k = n === 'all' ? blocks.length : n;
  if (!Number.isInteger(k) || k < 1 || k > blocks.length) {
    throw new GraftError(`--finetune must be 'all' or a number of blocks from 1 to ${blocks.length} (got ${n})`);
  }
  const tuned = blocks.slice(blocks.length - k);
  return { cut: tuned[0]!.input, blocks: tuned };
}

/** The blocks that feed `featureTensor` (what `--finetune N` counts from the top). */
export function tunableBlocks(model: LoadedOnnx, featureTensor: string): Block[] {
  const feeding = ancestorNodes(model, featureTensor);
  return listBlocks(model)
    .filter((b) => b.convs.every((c) => feeding.has(c)))
    .map((b, index) => ({ ...b, index }));
}

/** Names of the nodes `tensor` depends on. */
function ancestorNodes(model: LoadedOnnx, tensor: string): Set<string> {
  const producer = new Map<string, (typeof model.info.nodes)[number]>();
  for (const node of model.info.nodes) for (const o of node.outputs) producer.set(o, node);
  const seen = new Set<string>();
  const stack = [tensor];
  while (stack.length) {
    const p = producer.get(stack.pop()!);
    if (!p || seen.has(p.name)) continue;
    seen.add(p.name);
    stack.push(...p.inputs.filter(Boolean));
  }
  return seen;
}

// ---------------------------------------------------------------------------------------------------------------
// Suffix graph


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
  const producer = new Map<string, number>();
  (g.node ?? []).forEach((n, i) => (n.output ?? []).forEach((o) => producer.set(o, i)));
  const keep = new Set<number>();
  const stack = [...outputs];
  const seen = new Set<string>();
  while (stack.length) {
    const t = stack.pop()!;
    if (!t || seen.has(t) || t === cut || inits.has(t)) continue;
    seen.add(t);
    if (graphInputs.has(t)) {
      throw new GraftError(`${model.info.path}: cannot cut at '${cut}': the layers after it also read the model input (skip connection or shape arithmetic across the cut)`);
    }
    const p = producer.get(t);
    if (p === undefined) throw new GraftError(`${model.info.path}: no node produces '${t}'`);
    if (keep.has(p)) continue;
    keep.add(p);
    for (const x of g.node![p]!.input ?? []) stack.push(x);
  }
  g.node = (g.node ?? []).filter((_, i) => keep.has(i));
  const used = new Set<string>();
  for (const n of g.node) for (const x of n.input ?? []) used.add(x);
  g.initializer = (g.initializer ?? []).filter((t) => used.has(t.name ?? ''));
  g.input = [valueInfo(cut, ['batch', ...cutShape])];
  const oldOut = new Map((g.output ?? []).map((o) => [o.name, o]));
  g.output = outputs.map((o) => oldOut.get(o) ?? onnx.ValueInfoProto.create({ name: o, type: onnx.TypeProto.create({ tensorType: onnx.TypeProto.Tensor.create({ elemType: 1 }) }) }));
  g.valueInfo = [];
  return parseOnnx(onnx.ModelProto.encode(copy).finish(), `${model.info.path}#from:${cut}`);
}

/** Float initializers read by the Conv nodes of a model (weights and biases): what fine-tuning trains. */
export function convWeightNames(model: LoadedOnnx): string[] {
  const g = model.proto.graph!;
  const floats = new Set((g.initializer ?? []).filter((t) => (t.dataType ?? 1) === 1).map((t) => t.name ?? ''));
  const names: string[] = [];
  for (const n of g.node ?? []) if (n.opType === 'Conv') for (const x of (n.input ?? []).slice(1)) if (floats.has(x) && !names.includes(x)) names.push(x);
  return names;
}

/**
 * The running statistics (mean, variance: inputs 3 and 4, float initializers) of a model's BatchNormalization nodes.
 * With `--train-bn` these are updated during fine-tuning (batch norm in training mode); models whose batch norm is
 * folded into Mul/Add constants have none.
 */
export function bnStatNames(model: LoadedOnnx): string[] {
  const g = model.proto.graph!;
  const floats = new Set((g.initializer ?? []).filter((t) => (t.dataType ?? 1) === 1).map((t) => t.name ?? ''));
  const names: string[] = [];
  for (const n of g.node ?? []) {
    if (n.opType !== 'BatchNormalization') continue;
    const [mean, variance] = [n.input?.[3], n.input?.[4]];
    if (!mean || !variance || !floats.has(mean) || !floats.has(variance)) continue;
    for (const x of [mean, variance]) if (!names.includes(x)) names.push(x);
  }
  return names;
}

/**
 * The batch-norm affine parameters of a model: `scale` and `B` of BatchNormalization nodes, and the per-channel
 * constants of the Mul/Add pairs that exporters fold batch norm into (a Conv followed by Mul then Add). These train
 * with `--train-bn`; the running statistics of real BatchNormalization nodes are then updated too (`bnStatNames`),
 * while folded ones have none (already folded into these constants).
 */
export function bnAffineNames(model: LoadedOnnx): string[] {
  const g = model.proto.graph!;
  const floats = new Map((g.initializer ?? []).filter((t) => (t.dataType ?? 1) === 1).map((t) => [t.name ?? '', t]));
  const perChannel = (x: string) => {
    const t = floats.get(x);
    if (!t) return false;
    const dims = (t.dims ?? []).map(Number);
    return dims.filter((d) => d > 1).length === 1;
  };
  const nodes = g.node ?? [];
  const consumers = new Map<string, number[]>();
  nodes.forEach((n, i) => (n.input ?? []).forEach((x) => consumers.set(x, [...(consumers.get(x) ?? []), i])));
  const only = (t: string) => {
    const c = consumers.get(t) ?? [];
    return c.length === 1 ? nodes[c[0]!]! : undefined;
  };
  const names: string[] = [];
  const add = (x: string | undefined) => {
    if (x && perChannel(x) && !names.includes(x)) names.push(x);
  };
  for (const n of nodes) {
    if (n.opType === 'BatchNormalization') {
      add(n.input?.[1]);
      add(n.input?.[2]);
    } else if (n.opType === 'Conv') {
      const mul = only(n.output![0]!);
      if (mul?.opType !== 'Mul') continue;
      const addNode = only(mul.output![0]!);
      if (addNode?.opType !== 'Add') continue;
      const other = (node: typeof mul) => (node.input ?? []).find((x) => x !== n.output![0] && x !== mul.output![0]);
      add(other(mul));
      add(other(addNode));
    }
  }
  return names;
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
    if (count !== w.length) throw new GraftError(`initializer '${t.name}': ${w.length} values for ${count} elements`);
    t.floatData = [];
    t.rawData = new Uint8Array(Buffer.from(w.buffer, w.byteOffset, w.byteLength));
    t.dataType = 1;
    left.delete(t.name ?? '');
  }
  if (left.size) throw new GraftError(`no initializers named ${[...left].join(', ')} in ${model.info.path}`);
  return onnx.ModelProto.encode(copy).finish();
}

