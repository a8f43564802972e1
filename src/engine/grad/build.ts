/**
 * Reverse-mode differentiation of an ONNX graph into one ONNX graph made of standard operators: the forward nodes,
 * the loss, and the backward nodes of only what the requested gradients need (no filter gradients for an image
 * gradient, no image gradient for training). Gradients of a tensor used several times are summed. ONNX Runtime
 * then runs the whole step in one session and frees each forward activation after its last backward use.
 */
import onnxProto from 'onnx-proto';
import { GraftError } from '../../errors.js';
import { nodeProto, TARGET_OPSET, type ForwardGraph, type FwdNode } from './forward.js';
import { DT, GraphWriter, valueInfo } from './onnx-writer.js';
import { RULES, type ConvMethods, type RuleCtx } from './rules/registry.js';
import './rules/index.js';

const { onnx } = onnxProto;

/**
 * A term of the loss (the loss is their sum):
 * - `cross-entropy`: −Σ targets·log softmax(logits) over the batch and the classes (last axis). `targets` names a
 *   new graph input of the logits' shape: one-hot rows, smoothed labels, class weights and the 1/N of a mean all
 *   live in it, so one graph serves every such loss.
 * - `dot`: Σ weights·output, with `weights` a new graph input of the output's shape: a class logit, a channel of a
 *   layer, a neuron or a direction, each by choosing the weights.
 */
export type LossTerm =
  | { kind: 'cross-entropy'; logits: string; targets: string }
  | { kind: 'dot'; output: string; weights: string };

export interface GradSpec {
  /** Tensors to differentiate with respect to: data inputs and/or the forward graph's params. */
  wrt: string[];
  loss: LossTerm[];
  /** Forward tensors to return as well (e.g. the logits). */
  outputs?: string[];
  conv?: Partial<ConvMethods>;
}

export interface GradGraph {
  bytes: Uint8Array;
  /** Every graph input with its shape: data inputs, params, then the loss inputs. */
  inputs: { name: string; dims: number[] }[];
  /** Name of the scalar loss output. */
  loss: string;
  /** Output name of each wrt tensor's gradient. */
  grads: Record<string, string>;
  outputs: string[];
}

/** Measured on MobileNet v1 0.75, batch 1 and 16 (docs/benchmarks.md, `npm run bench:grad`). */
export const DEFAULT_CONV_METHODS: ConvMethods = { inputGrad: 'auto', depthwiseFilterGrad: 'grouped-conv', denseFilterGrad: 'unfold', pointwiseFilterGrad: 'matmul', reluMask: 'auto' };

export const LOSS_OUTPUT = 'loss';
export const gradName = (t: string): string => `${t}__grad`;

export function buildGradient(fwd: ForwardGraph, spec: GradSpec): GradGraph {
  const w = new GraphWriter('g/');
  const conv = { ...DEFAULT_CONV_METHODS, ...spec.conv };
  // ResNet-50 input gradient, one process, alternated: 329.5 ms with the comparison masks, 270.6 ms with the NCHWc
  // ones (forward 157 ms: 2.10x → 1.72x), the gradients bit-identical.
  if (conv.reluMask === 'auto') conv.reluMask = fwd.params.length === 0 ? 'conv' : 'cast';
  const known = new Set([...fwd.inputs.map((i) => i.name), ...fwd.params.map((p) => p.name)]);
  for (const t of spec.wrt) if (!known.has(t)) throw new GraftError(`cannot differentiate with respect to '${t}': not an input or a trained weight of the graph`);

  // Tensors that depend on what is differentiated.
  const live = new Set(spec.wrt);
  for (const n of fwd.nodes) if (n.inputs.some((i) => live.has(i))) for (const o of n.outputs) if (o) live.add(o);

  // Loss terms and the seeds they give their tensors.
  const contributions = new Map<string, string[]>();
  const add = (t: string, g: string) => contributions.set(t, [...(contributions.get(t) ?? []), g]);
  const lossInputs: { name: string; dims: number[] }[] = [];
  const terms: string[] = [];
  for (const term of spec.loss) {
    const target = term.kind === 'cross-entropy' ? term.logits : term.output;
    const dims = fwd.dims.get(target);
    if (!dims) throw new GraftError(`loss on '${target}': no such tensor in the graph`);
    if (term.kind === 'cross-entropy') {
      lossInputs.push({ name: term.targets, dims });
      const logp = w.op('LogSoftmax', [term.logits], { axis: -1 });
      terms.push(w.op('Neg', [w.op('ReduceSum', [w.op('Mul', [term.targets, logp])], { keepdims: 0 })]));
      const mass = w.op('ReduceSum', [term.targets, w.ints([-1])], { keepdims: 1 });
      add(term.logits, w.op('Sub', [w.op('Mul', [w.op('Exp', [logp]), mass]), term.targets]));
    } else {
      lossInputs.push({ name: term.weights, dims });
      terms.push(w.op('ReduceSum', [w.op('Mul', [term.weights, term.output])], { keepdims: 0 }));
      add(term.output, term.weights);
    }
  }
  if (terms.length === 0) throw new GraftError('a gradient graph needs at least one loss term');
  const lossOut = terms.length === 1 ? terms[0]! : w.op('Sum', terms);

  const gradOf = (t: string): string | undefined => {
    const parts = contributions.get(t);
    if (!parts?.length) return undefined;
    if (parts.length === 1) return parts[0];
    const s = w.op('Sum', parts);
    contributions.set(t, [s]);
    return s;
  };

  const extra = new Map<FwdNode, Map<number, string>>();
  const ctxFor = (n: FwdNode): RuleCtx => ({
    w,
    dims: (t) => {
      const d = fwd.dims.get(t);
      if (!d) throw new Error(`internal: no shape for '${t}'`);
      return d;
    },
    value: (t) => fwd.values.get(t),
    needs: (i) => !!n.inputs[i] && live.has(n.inputs[i]!) && (fwd.types.get(n.inputs[i]!) ?? DT.FLOAT) === DT.FLOAT || isQuantized(fwd, n, i, live),
    extraOutput: (node, index) => {
      const m = extra.get(node) ?? new Map<number, string>();
      extra.set(node, m);
      if (!m.has(index)) m.set(index, node.outputs[index] || `${node.outputs[0]}__out${index}`);
      return m.get(index)!;
    },
    conv,
  });

  for (let k = fwd.nodes.length - 1; k >= 0; k--) {
    const n = fwd.nodes[k]!;
    if (!n.inputs.some((i) => live.has(i))) continue;
    const dys = n.outputs.map((o) => (o ? gradOf(o) : undefined));
    if (dys.every((d) => !d)) continue;
    const rule = RULES[n.opType];
    if (!rule) throw new GraftError(`node '${n.name}': operator ${n.opType} has no gradient rule`);
    let grads: (string | undefined)[];
    try {
      grads = rule(n, dys, ctxFor(n));
    } catch (err) {
      if (err instanceof GraftError) throw err;
      throw new GraftError(`node '${n.name}' (${n.opType}): ${(err as Error).message}`);
    }
    grads.forEach((g, i) => {
      if (g && n.inputs[i] && live.has(n.inputs[i]!)) add(n.inputs[i]!, g);
    });
  }

  for (const [node, outs] of extra) for (const [i, name] of outs) node.outputs[i] = name;

  const grads: Record<string, string> = {};
  for (const t of spec.wrt) {
    const g = gradOf(t);
    const out = gradName(t);
    if (g) w.nodes.push(onnx.NodeProto.create({ name: out, opType: 'Identity', input: [g], output: [out] }));
    else w.nodes.push(onnx.NodeProto.create({ name: out, opType: 'ConstantOfShape', input: [w.ints(fwd.dims.get(t)!)], output: [out] }));
    grads[t] = out;
  }
  w.nodes.push(onnx.NodeProto.create({ name: LOSS_OUTPUT, opType: 'Identity', input: [lossOut], output: [LOSS_OUTPUT] }));

  // Forward nodes that something reads: the loss, the backward pass, the requested outputs.
  const outputs = spec.outputs ?? [];
  const needed = new Set<string>([...outputs, ...w.nodes.flatMap((n) => n.input ?? [])]);
  const fwdNodes: FwdNode[] = [];
  for (let k = fwd.nodes.length - 1; k >= 0; k--) {
    const n = fwd.nodes[k]!;
    if (!n.outputs.some((o) => needed.has(o))) continue;
    fwdNodes.push(n);
    for (const i of n.inputs) needed.add(i);
  }
  fwdNodes.reverse();

  const inputs = [...fwd.inputs, ...fwd.params.map((p) => ({ name: p.name, dims: p.dims })), ...lossInputs];
  const usedInits = fwd.initializers.filter((t) => needed.has(t.name!));
  const graph = onnx.GraphProto.create({
    name: 'graft-gradient',
    node: [...fwdNodes.map(nodeProto), ...w.nodes],
    initializer: [...usedInits, ...w.initializers],
    input: inputs.map((i) => valueInfo(i.name, i.dims)),
    output: [
      valueInfo(LOSS_OUTPUT, []),
      ...outputs.map((o) => valueInfo(o, fwd.dims.get(o) ?? [])),
      ...spec.wrt.map((t) => valueInfo(grads[t]!, fwd.dims.get(t)!)),
    ],
  });
  const model = onnx.ModelProto.create({ irVersion: 8, producerName: 'graft-grad', opsetImport: [{ domain: '', version: TARGET_OPSET }], graph });
  return { bytes: onnx.ModelProto.encode(model).finish(), inputs, loss: LOSS_OUTPUT, grads, outputs };
}

/** A quantised (int) input of a Dequantize/Quantize chain carries a straight-through gradient. */
function isQuantized(fwd: ForwardGraph, n: FwdNode, i: number, live: Set<string>): boolean {
  return n.opType === 'DequantizeLinear' && i === 0 && live.has(n.inputs[0]!);
}

