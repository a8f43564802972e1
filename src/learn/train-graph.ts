/**
 * The graphs fine-tuning runs: the suffix of the backbone (cut tensor → pooled features) with the linear head
 * written as ONNX ops — standardise, optional dropout mask (a graph input, so masks stay seeded by step), Gemm.
 */
import onnxProto from 'onnx-proto';
import { encodeAttr, floatTensor, valueInfo } from '../engine/grad/onnx-writer.js';

const { onnx } = onnxProto;

export const HEAD = {
  W: 'head/W',
  b: 'head/b',
  mean: 'head/mean',
  std: 'head/std',
  mask: 'head/dropout_mask',
  logits: 'head/logits',
} as const;


export interface LinearHeadInit { W: Float32Array; b: Float32Array; mean: Float32Array; std: Float32Array }

/** `suffix` (outputs: the pooled feature tensor) with the head appended; outputs: features and logits. */
export function withLinearHead(suffix: Uint8Array, featureTensor: string, d: number, C: number, dropout: boolean, init: LinearHeadInit): Uint8Array {
  const model = onnx.ModelProto.decode(suffix);
  const g = model.graph!;
  const nodes = [
    onnx.NodeProto.create({ name: 'head/flatten', opType: 'Flatten', input: [featureTensor], output: ['head/f'], attribute: [encodeAttr('axis', 1)] }),
    onnx.NodeProto.create({ name: 'head/centre', opType: 'Sub', input: ['head/f', HEAD.mean], output: ['head/fc'] }),
    onnx.NodeProto.create({ name: 'head/scale', opType: 'Div', input: ['head/fc', HEAD.std], output: ['head/z'] }),
  ];
  let z = 'head/z';
  if (dropout) {
    nodes.push(onnx.NodeProto.create({ name: 'head/dropout', opType: 'Mul', input: [z, HEAD.mask], output: ['head/zd'] }));
    z = 'head/zd';
    g.input = [...(g.input ?? []), valueInfo(HEAD.mask, ['batch', d])];
  }
  nodes.push(onnx.NodeProto.create({ name: 'head/gemm', opType: 'Gemm', input: [z, HEAD.W, HEAD.b], output: [HEAD.logits], attribute: [encodeAttr('transB', 1)] }));
  g.node = [...(g.node ?? []), ...nodes];
  g.initializer = [
    ...(g.initializer ?? []),
    floatTensor(HEAD.W, [C, d], init.W),
    floatTensor(HEAD.b, [C], init.b),
    floatTensor(HEAD.mean, [1, d], init.mean),
    floatTensor(HEAD.std, [1, d], init.std),
  ];
  g.output = [valueInfo(featureTensor, ['batch', d]), valueInfo(HEAD.logits, ['batch', C])];
  return onnx.ModelProto.encode(model).finish();
}

/** A copy in which the named initializers are graph inputs instead (weights that change between runs). */
export function initializersAsInputs(bytes: Uint8Array, names: string[]): Uint8Array {
  const model = onnx.ModelProto.decode(bytes);
  const g = model.graph!;
  const set = new Set(names);
  const moved = (g.initializer ?? []).filter((t) => set.has(t.name ?? ''));
  g.initializer = (g.initializer ?? []).filter((t) => !set.has(t.name ?? ''));
  g.input = [...(g.input ?? []).filter((v) => !set.has(v.name ?? '')), ...moved.map((t) => valueInfo(t.name!, (t.dims ?? []).map(Number)))];
  return onnx.ModelProto.encode(model).finish();
}
