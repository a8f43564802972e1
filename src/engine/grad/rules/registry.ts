/**
 * Backward rules: one small handler per ONNX operator, each given the gradients of a node's outputs and writing
 * the nodes that compute the gradients of the inputs that need one. Rules are written for opset 17.
 */
import { GraftError } from '../../../errors.js';
import type { FwdNode } from '../forward.js';
import type { GraphWriter } from '../onnx-writer.js';

/** How the backward pass computes convolution gradients (chosen by measurement: docs/benchmarks.md). */
export interface ConvMethods {
  /**
   * Input gradient: a stride-1 Conv of the zero-upsampled gradient with the flipped kernel, or ConvTranspose; 'auto'
   * takes the Conv for stride 1 and ConvTranspose for strided convolutions (zero-upsampling costs more than it saves).
   */
  inputGrad: 'conv' | 'conv-transpose' | 'auto';
  /**
   * Depthwise filter gradient: one grouped Conv (the gradient as a huge kernel); per-tap strided Slice × Mul →
   * ReduceSum; an unfold (one-hot Conv) and a batched MatMul; or, at stride 1, shifted copies and a batched MatMul.
   */
  depthwiseFilterGrad: 'grouped-conv' | 'taps' | 'unfold' | 'shifted-matmul';
  /**
   * Filter gradient of an ungrouped convolution with few input taps (C·kh·kw ≤ 64, e.g. a network's stem): an
   * unfold (one Conv with constant one-hot weights) and a batched MatMul, or the general Conv formulation.
   */
  denseFilterGrad: 'unfold' | 'conv';
  /** 1×1 stride-1 filter gradient: batched MatMul, or the general Conv formulation. */
  pointwiseFilterGrad: 'matmul' | 'conv';
  /**
   * ReLU mask of a 4-D activation: a Cast comparison, or min(1, 2¹²⁶·y) written as depthwise 1×1 Convs and a Relu,
   * ops ONNX Runtime keeps in its blocked NCHWc layout (the comparison makes it reorder to NCHW and back). 'auto':
   * the Convs when every weight is a constant (ORT then runs the convolutions in NCHWc), the comparison when weights
   * are trained (graph inputs: ORT keeps NCHW, where grouped 1×1 Convs would only add work).
   */
  reluMask: 'cast' | 'conv' | 'auto';
}

export interface RuleCtx {
  w: GraphWriter;
  dims(t: string): number[];
  /** Numbers of a constant input (pads, axes, shapes, min/max), or undefined when it is not a known constant. */
  value(t: string): number[] | undefined;
  /** Whether input `i` of the node needs a gradient. */
  needs(i: number): boolean;
  /** Ask the forward node for an extra output (e.g. MaxPool's indices); returns its name. */
  extraOutput(n: FwdNode, index: number): string;
  conv: ConvMethods;
}

/** Gradients of the node's inputs (undefined: none), given those of its outputs (undefined: none flows back). */
export type Rule = (n: FwdNode, dys: (string | undefined)[], c: RuleCtx) => (string | undefined)[];

export const RULES: Record<string, Rule> = {};

export function register(rules: Record<string, Rule>): void {
  Object.assign(RULES, rules);
}

export const size = (d: number[]): number => d.reduce((a, b) => a * b, 1);

/** Sum `g` (shape gDims) down to `target` dims, undoing numpy broadcasting. */
export function unbroadcast(c: RuleCtx, g: string, gDims: number[], target: number[]): string {
  const lead = gDims.length - target.length;
  const axes: number[] = [];
  for (let i = 0; i < gDims.length; i++) {
    const t = i < lead ? 1 : target[i - lead]!;
    if (i < lead || (t === 1 && gDims[i] !== 1)) axes.push(i);
  }
  let out = g;
  if (axes.length) out = c.w.op('ReduceSum', [g, c.w.ints(axes)], { keepdims: 1 });
  if (lead > 0 || axes.length) out = c.w.op('Reshape', [out, c.w.ints(target)]);
  return out;
}

export function reshape(c: RuleCtx, t: string, dims: number[]): string {
  return c.w.op('Reshape', [t, c.w.ints(dims)]);
}

/** A zero tensor of the given shape. */
export function zeros(c: RuleCtx, dims: number[]): string {
  return c.w.op('ConstantOfShape', [c.w.ints(dims)]);
}

/** The value of a constant input, or an error naming the node: backward rules need such inputs to be constant. */
export function constValue(c: RuleCtx, n: FwdNode, i: number, what: string): number[] {
  const v = c.value(n.inputs[i]!);
  if (!v) throw new GraftError(`node '${n.name}' (${n.opType}): its ${what} must be a constant to take a gradient`);
  return v;
}
