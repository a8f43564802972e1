import { resolveModel } from '../models/resolve.js';
import type { NodeInfo, TensorInfo } from '../models/onnx-file.js';
import type { PreprocessSpec } from '../image/spec.js';

/** Ops that only move constants or shapes around: not worth looking at or cutting at. */
const PLUMBING = new Set(['Constant', 'Shape', 'Gather', 'Unsqueeze', 'Squeeze', 'Concat', 'Reshape', 'Cast', 'Identity', 'ConstantOfShape', 'Range', 'Slice']);

export interface LayersResult {
  path: string;
  sha256: string;
  opset: number;
  nodeCount: number;
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  preprocess: PreprocessSpec;
  preprocessSource: string;
  featureTensor: string;
  logitsTensor?: string;
  nodes: NodeInfo[];
}

/** What a model offers: inputs, outputs, the preprocessing graft will use, and the nodes one can cut at. */
export async function layers(model: string, opts: { all?: boolean } = {}): Promise<LayersResult> {
  const ref = await resolveModel(model);
  const info = ref.onnx.info;
  return {
    path: ref.path,
    sha256: info.sha256,
    opset: info.opset,
    nodeCount: info.nodes.length,
    inputs: info.inputs,
    outputs: info.outputs,
    preprocess: ref.spec,
    preprocessSource: ref.specSource,
    featureTensor: ref.featureTensor,
    logitsTensor: ref.logitsTensor,
    nodes: opts.all ? info.nodes : info.nodes.filter((n) => !PLUMBING.has(n.opType)),
  };
}
