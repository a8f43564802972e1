import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from './fail.js';
import { checkedTfjsFolder, readTfjsWeights } from './tfjs-weights.js';
import { readModelJson } from './tfjs-graph/model-json.js';
import { OP_HANDLERS } from './tfjs-graph/ops/index.js';
import { translate } from './tfjs-graph/translate.js';

/**
 * TF.js graph models (`format: "graph-model"`: a TensorFlow GraphDef in JSON, as written by tensorflowjs_converter,
 * e.g. the TF Hub TF.js releases) → ONNX (opset 13).
 *
 * - The files are untrusted: the folder is checked and read by the TF.js weight decoder (./tfjs-weights.ts), which
 *   opens nothing outside the model's folder.
 * - Weights are the Const nodes' values: float32 / int32 / bool from the manifest, quantised ones (uint8 / uint16 with
 *   scale and min, float16) dequantised to float32, and small values written inline in the node (`attr.value.tensor`).
 * - Only the nodes the outputs need are translated, in dependency order, each by the handler of its op
 *   (./tfjs-graph/ops/*.ts). The graph is NCHW: the input is `input` [N, 3, H, W] and every 4-D tensor stays NCHW.
 *   TF is NHWC (`data_format` NCHW graphs are refused), so conv weights are transposed (HWIO → OIHW; depthwise
 *   HW·C·M → (C·M)·1·HW with group = C), constants broadcast against 4-D tensors are laid out NCHW, and the ops whose
 *   meaning depends on the layout (reshape, squeeze, mean, pad, concat, softmax axes) are translated. TF SAME padding
 *   is ONNX auto_pad SAME_UPPER; EXPLICIT padding becomes `pads`.
 * - Outputs: `features` (the last global pooling, a mean over H and W or a pool whose window covers the whole map,
 *   flattened to [N, C]); `logits` (a classifier's output after that pooling, or the input of a final Softmax);
 *   the graph's own outputs as `output`, `output_1`, … when they are neither (4-D ones NCHW).
 * - Preprocessing is written as Windows ML image metadata: RGB, Image.NominalPixelRange Normalized_0_1 (TF Hub image
 *   models take RGB in [0, 1]; a graph scaling its input itself, like the TF Hub ones, does so inside the graph).
 * - An op without a handler (or an attribute value this importer cannot honour) is a GraftError naming the op and
 *   the node, before anything is written.
 */

/** The TF ops this importer translates: those with a handler. */
export const SUPPORTED_TFJS_GRAPH_OPS: readonly string[] = [...OP_HANDLERS.keys()];

/** Import a TF.js graph model (model.json + shards, or the folder holding them) as ONNX bytes. */
export async function importTfjsGraph(modelJsonPath: string): Promise<Uint8Array> {
  let st;
  try {
    st = await stat(modelJsonPath);
  } catch {
    fail(modelJsonPath, 'not found');
  }
  const file = st.isDirectory() ? join(modelJsonPath, 'model.json') : modelJsonPath;
  const folder = await checkedTfjsFolder(file);
  if (folder.checked.kind !== 'tfjs-graph') fail(file, 'a TF.js layers model, not a graph model (use the tfjs-layers importer)');
  const json = readModelJson(folder.text, file);
  return translate(json, await readTfjsWeights(folder), file);
}

/** Whether `path` (a model.json or its folder) is a TF.js graph model. */
export async function isTfjsGraphModel(path: string): Promise<boolean> {
  try {
    const p = (await stat(path)).isDirectory() ? join(path, 'model.json') : path;
    const j = JSON.parse(await readFile(p, 'utf8'));
    return Boolean(j && j.modelTopology && j.weightsManifest) && (j.format === 'graph-model' || Array.isArray(j.modelTopology.node));
  } catch {
    return false;
  }
}
