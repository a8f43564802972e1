import { z } from 'zod';
import { GraftError } from '../errors.js';
import { PreprocessSpec, PreprocessSpecSchema } from '../image/spec.js';
import type { DownloadProgress } from './download.js';
import { defaultLabels, labelsFromMetadata, readLabelsFile } from './labels.js';
import { findTensor, loadOnnx, LoadedOnnx, OnnxInfo } from './onnx-file.js';
import { producerIndex } from '../onnx/walk.js';
import { derivePreprocess } from './preprocess-from-model.js';
import { modelSourcePath } from './model-source.js';
import { registerBuiltinImporters } from './importers/index.js';
import { readJsonFileIfExists } from '../util/json.js';

registerBuiltinImporters();

/** A config file beside the model (`model.onnx.json`) saying what the model file cannot. */
export const SidecarSchema = z.object({
  preprocess: PreprocessSpecSchema.partial().optional(),
  labels: z.array(z.string()).optional(),
  featureOutput: z.string().optional(),
  logitsOutput: z.string().optional(),
});
export type Sidecar = z.infer<typeof SidecarSchema>;

/** A model resolved to a local ONNX file, with everything needed to feed it and read it. */
export interface ModelRef {
  /** What the user gave (path or URL). */
  source: string;
  path: string;
  onnx: LoadedOnnx;
  spec: PreprocessSpec;
  specSource: string;
  warnings: string[];
  /** Tensor holding the pooled features. */
  featureTensor: string;
  /** Tensor holding class scores, when the model is a classifier. */
  logitsTensor?: string;
  /** The class scores already went through a Softmax in the graph (so they are probabilities). */
  logitsAreProbabilities: boolean;
  labels?: string[];
}

export interface ResolveOptions {
  preprocess?: Partial<PreprocessSpec>;
  labelsFile?: string;
  featureNode?: string;
  logitsNode?: string;
  onDownload?: (p: DownloadProgress) => void;
}

/** `<model>.json` beside a model, if there is one; a damaged one is an error naming it and the field. */
async function readSidecar(path: string): Promise<Sidecar | undefined> {
  return readJsonFileIfExists(`${path}.json`, SidecarSchema, 'model sidecar');
}

function lastDim(info: OnnxInfo, tensor: string): number | undefined {
  const d = info.outputs.find((o) => o.name === tensor)?.shape.at(-1);
  return typeof d === 'number' ? d : undefined;
}

const PASS_THROUGH = new Set(['Softmax', 'Reshape', 'Flatten', 'Squeeze', 'Identity', 'Dropout', 'LogSoftmax']);

/** The classifier's input, walking back from the logits through reshapes to the Gemm/MatMul/Conv that makes them. */
function classifierInput(info: OnnxInfo, logits: string): string | undefined {
  const producer = producerIndex(info.nodes);
  let t = logits;
  for (let i = 0; i < 8; i++) {
    const p = producer.get(t);
    if (p === undefined) return undefined;
    const n = info.nodes[p]!;
    if (n.opType === 'Gemm' || n.opType === 'MatMul' || n.opType === 'Conv') return n.inputs[0];
    if (!PASS_THROUGH.has(n.opType)) return undefined;
    t = n.inputs[0];
  }
  return undefined;
}

function pickTensors(info: OnnxInfo, sidecar: Sidecar | undefined, opts: ResolveOptions): { feature: string; logits?: string } {
  const named = (wanted: string | undefined, what: string) => {
    if (!wanted) return undefined;
    const t = findTensor(info, wanted);
    if (!t) {
      const outs = info.outputs.map((o) => o.name).join(', ');
      throw new GraftError(`${info.path}: no output or node named '${wanted}' for the ${what} (outputs: ${outs}; see 'graft layers')`);
    }
    return t;
  };
  let logits = named(opts.logitsNode ?? sidecar?.logitsOutput, 'logits');
  if (!logits) {
    logits =
      info.outputs.find((o) => /logit|prob|score|predictions/i.test(o.name))?.name ??
      info.outputs.find((o) => [1000, 1001].includes(lastDim(info, o.name) ?? 0))?.name;
  }
  let feature = named(opts.featureNode ?? sidecar?.featureOutput, 'features');
  if (!feature) {
    feature =
      info.outputs.find((o) => /feature|embed|pool/i.test(o.name))?.name ??
      (logits ? classifierInput(info, logits) : undefined) ??
      info.outputs[info.outputs.length - 1]!.name;
  }
  if (logits === feature) logits = undefined;
  return { feature, logits };
}

/** Resolve "path | URL | catalog name" to a local ONNX model with its preprocessing, labels and feature/logits tensors. */
export async function resolveModel(source: string, opts: ResolveOptions = {}): Promise<ModelRef> {
  // A path, an http(s) URL or a catalog name (pulled into the store, converted to ONNX when it is not).
  const path = await modelSourcePath(source, { onProgress: opts.onDownload });
  const onnx = await loadOnnx(path);
  const sidecar = await readSidecar(path);
  const { spec, source: specSource, warnings } = derivePreprocess(onnx.info, sidecar?.preprocess, opts.preprocess);
  const { feature, logits } = pickTensors(onnx.info, sidecar, opts);
  // A model exported by graft carries its class names, so it keeps them even without its sidecar.
  let labels = opts.labelsFile ? await readLabelsFile(opts.labelsFile) : (sidecar?.labels ?? labelsFromMetadata(onnx.info.metadata));
  if (!labels && logits) {
    const n = lastDim(onnx.info, logits);
    if (n !== undefined) labels = await defaultLabels(n);
  }
  const producer = logits ? onnx.info.nodes.find((n) => n.outputs.includes(logits!)) : undefined;
  const logitsAreProbabilities = producer?.opType === 'Softmax';
  return { source, path, onnx, spec, specSource, warnings, featureTensor: feature, logitsTensor: logits, logitsAreProbabilities, labels };
}
