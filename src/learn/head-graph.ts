/**
 * graft's dense heads, defined once, as ONNX ops appended at a feature tensor:
 *
 *   features → Flatten → (x − mean) / std → [× dropout mask] → Gemm                      (linear)
 *   features → Flatten → (x − mean) / std → Gemm → Relu → [× dropout mask] → Gemm        (mlp)
 *
 * The same nodes train (frozen heads on features, fine-tuning on a backbone's suffix: a gradient program of this
 * graph), predict, are exported, and are what dream/attack/explain differentiate through on a run. Dropout is a
 * graph input (a mask drawn from the seeded stream of its step, so resume stays exact) before the last layer, and
 * only exists in training graphs. Weights are in nn.Linear layout (out × in), as the head's JSON keeps them.
 */
import onnxProto from 'onnx-proto';
import { encodeAttr, floatTensor, valueInfo } from '../engine/grad/onnx-writer.js';

const { onnx } = onnxProto;
type NodeProto = InstanceType<typeof onnx.NodeProto>;
type TensorProto = InstanceType<typeof onnx.TensorProto>;
type ValueInfoProto = ReturnType<typeof valueInfo>;

export type DenseKind = 'linear' | 'mlp';

/** Parameter names in order, with their nn.Linear shapes. */
export function denseParams(kind: DenseKind, d: number, H: number, C: number): { name: string; dims: number[]; matrix: boolean }[] {
  return kind === 'linear'
    ? [{ name: 'W', dims: [C, d], matrix: true }, { name: 'b', dims: [C], matrix: false }]
    : [
        { name: 'W1', dims: [H, d], matrix: true },
        { name: 'b1', dims: [H], matrix: false },
        { name: 'W2', dims: [C, H], matrix: true },
        { name: 'b2', dims: [C], matrix: false },
      ];
}

/** The values of a dense head: standardisation and parameters (in denseParams order). */
export interface DenseHeadValues {
  kind: DenseKind;
  /** Feature dimension, classes, hidden units (mlp). */
  d: number;
  C: number;
  H: number;
  mean: Float32Array;
  std: Float32Array;
  params: Float32Array[];
}

export interface HeadGraphNames {
  /** Prefix of every node, weight and inner tensor name (pick one no backbone name starts with). */
  prefix: string;
  /** Name of the flattened feature tensor (default prefix + 'features'). */
  features?: string;
  /** Name of the logits (default prefix + 'logits'). */
  logits?: string;
  /** Also a Softmax to this name. */
  probabilities?: string;
}

export interface HeadGraph {
  nodes: NodeProto[];
  initializers: TensorProto[];
  /** Graph inputs the head adds: the dropout mask when asked for. */
  inputs: ValueInfoProto[];
  /** Full names: weights by their short name (W, b, W1, …, mean, std), the mask, features and logits. */
  weight: (short: string) => string;
  mask?: string;
  features: string;
  logits: string;
}

/** The head's nodes reading `input` ([N, …] features), with its values as initializers. */
export function headGraph(input: string, head: DenseHeadValues, names: HeadGraphNames, o: { dropout?: boolean } = {}): HeadGraph {
  const p = (s: string) => names.prefix + s;
  const { d, C, H } = head;
  const features = names.features ?? p('features');
  const logits = names.logits ?? p('logits');
  const nodes: NodeProto[] = [];
  const node = (op: string, inputs: string[], output: string, attrs: Record<string, number> = {}) => {
    const attribute = Object.entries(attrs).map(([k, v]) => encodeAttr(k, v));
    nodes.push(onnx.NodeProto.create({ name: p(`${op.toLowerCase()}_${nodes.length}`), opType: op, input: inputs, output: [output], attribute }));
    return output;
  };
  node('Flatten', [input], features, { axis: 1 });
  // Sub/Div rather than folded into the first Gemm: the same float operations, in the same order, everywhere.
  let x = node('Div', [node('Sub', [features, p('mean')], p('centred')), p('std')], p('standardised'));
  const mask = o.dropout ? p('dropout_mask') : undefined;
  const drop = (t: string) => (mask ? node('Mul', [t, mask], p('dropped')) : t);
  if (head.kind === 'linear') {
    node('Gemm', [drop(x), p('W'), p('b')], logits, { transB: 1 });
  } else {
    x = node('Relu', [node('Gemm', [x, p('W1'), p('b1')], p('hidden_pre'), { transB: 1 })], p('hidden'));
    node('Gemm', [drop(x), p('W2'), p('b2')], logits, { transB: 1 });
  }
  if (names.probabilities) node('Softmax', [logits], names.probabilities, { axis: 1 });
  const initializers = [floatTensor(p('mean'), [1, d], head.mean), floatTensor(p('std'), [1, d], head.std)];
  denseParams(head.kind, d, H, C).forEach((q, i) => initializers.push(floatTensor(p(q.name), q.dims, head.params[i]!)));
  const inputs = mask ? [valueInfo(mask, ['batch', head.kind === 'linear' ? d : H])] : [];
  return { nodes, initializers, inputs, weight: p, mask, features, logits };
}

/**
 * A model that is the head alone: input `features` [batch, d] (and the dropout mask when asked for), outputs the
 * logits, and with `probabilities` also `probabilities`.
 */
export function headModel(head: DenseHeadValues, o: { dropout?: boolean; probabilities?: boolean } = {}): { bytes: Uint8Array; graph: HeadGraph; input: string } {
  const input = 'features';
  const g = headGraph(input, head, { prefix: 'head/', probabilities: o.probabilities ? 'probabilities' : undefined }, o);
  const graph = onnx.GraphProto.create({
    name: 'graft-head',
    node: g.nodes,
    initializer: g.initializers,
    input: [valueInfo(input, ['batch', head.d]), ...g.inputs],
    output: [valueInfo(g.logits, ['batch', head.C]), ...(o.probabilities ? [valueInfo('probabilities', ['batch', head.C])] : [])],
  });
  const model = onnx.ModelProto.create({ irVersion: 8, producerName: 'graft', opsetImport: [{ domain: '', version: 17 }], graph });
  return { bytes: onnx.ModelProto.encode(model).finish(), graph: g, input };
}
