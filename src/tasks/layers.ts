import { resolveModel } from '../models/resolve.js';
import { tunableBlocks, type Block } from '../learn/blocks.js';
import type { NodeInfo, TensorInfo } from '../models/onnx-file.js';
import type { PreprocessSpec } from '../image/spec.js';
import { inputDims, runCut } from '../vision/featuremaps.js';

/** Ops that only move constants or shapes around: not worth looking at or cutting at. */
const PLUMBING = new Set(['Constant', 'Shape', 'Gather', 'Unsqueeze', 'Squeeze', 'Concat', 'Reshape', 'Cast', 'Identity', 'ConstantOfShape', 'Range', 'Slice']);

/** A node, with the shape of its (first) output for one image when shapes were computed. */
export interface LayerNode extends NodeInfo {
  /** Dims of the node's first output for a batch of one input image, e.g. [1, 48, 112, 112]. */
  shape?: number[];
}

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
  nodes: LayerNode[];
  /** Conv blocks from the input to the head, for `graft train --finetune N` (the last N are fine-tuned). */
  blocks: Block[];
  /** Why the shapes are missing, when they were asked for and could not be computed. */
  shapesError?: string;
}

export interface LayersOptions {
  /** Every node, not only those worth cutting at. */
  all?: boolean;
  /**
   * Output shapes of the listed nodes (default true): one forward pass of a zero image at the model's input size with
   * the graph cut at every listed node's output (~0.3 s on MobileNet v1). When the model cannot run, the nodes are
   * listed without shapes and `shapesError` says why.
   */
  shapes?: boolean;
  threads?: number;
}

/** What a model offers: inputs, outputs, the preprocessing graft will use, and the nodes one can cut at. */
export async function layers(model: string, opts: LayersOptions = {}): Promise<LayersResult> {
  const ref = await resolveModel(model);
  const info = ref.onnx.info;
  const nodes: LayerNode[] = (opts.all ? info.nodes : info.nodes.filter((n) => !PLUMBING.has(n.opType))).map((n) => ({ ...n }));
  let shapesError: string | undefined;
  if (opts.shapes ?? true) {
    const tensors = nodes.map((n) => n.outputs[0]).filter((t): t is string => !!t);
    try {
      const dims = inputDims(ref.spec);
      const { outputs } = await runCut(ref.onnx, tensors, { data: new Float32Array(dims.reduce((a, b) => a * b, 1)), dims }, { threads: opts.threads });
      for (const n of nodes) {
        const t = n.outputs[0] ? outputs[n.outputs[0]] : undefined;
        if (t) n.shape = t.dims;
      }
    } catch (err) {
      shapesError = String((err as Error)?.message ?? err);
    }
  }
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
    nodes,
    blocks: tunableBlocks(ref.onnx, ref.featureTensor),
    ...(shapesError !== undefined && { shapesError }),
  };
}
