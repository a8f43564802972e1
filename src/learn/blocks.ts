/**
 * The conv blocks of a CNN for fine-tuning (found from the graph), the cut tensor for "the last N blocks", and which
 * initializers train. Cutting the graph there and writing the trained weights back are src/onnx/cut.ts.
 */
import { GraftError } from '../errors.js';
import type { LoadedOnnx } from '../models/onnx-file.js';
import { intAttr } from '../onnx/proto.js';
import { ancestors, consumerIndex, producerIndex, protoNodes } from '../onnx/walk.js';

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

/**
 * The conv blocks of a (sequential) CNN, found from the graph: each Conv with its batch-norm/activation chain; a
 * depthwise conv (group > 1) and the conv right after it form one block (MobileNet's depthwise-separable pair).
 */
export function listBlocks(model: LoadedOnnx): Block[] {
  const nodes = model.info.nodes;
  const producer = producerIndex(nodes);
  const consumers = consumerIndex(nodes);
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
    const group = intAttr(model.proto.graph!.node![i]!, 'group', 1);
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
  const nodes = model.info.nodes;
  const feeding = new Set([...ancestors(nodes, [featureTensor]).nodes].map((i) => nodes[i]!.name));
  return listBlocks(model)
    .filter((b) => b.convs.every((c) => feeding.has(c)))
    .map((b, index) => ({ ...b, index }));
}

// ---------------------------------------------------------------------------------------------------------------
// Weights to train

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
  const consumers = consumerIndex(protoNodes(nodes));
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
