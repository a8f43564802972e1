import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from './fail.js';
import { checkedTfjsFolder, readTfjsWeights } from './tfjs-weights.js';
import { readLayers } from './tfjs-layers/model-json.js';
import { LAYER_HANDLERS } from './tfjs-layers/layers/index.js';
import { translate } from './tfjs-layers/translate.js';

/**
 * TF.js layers models (Keras exports) → ONNX. The files are checked and read by the TF.js weight decoder
 * (./tfjs-weights.ts), which opens nothing outside the model's folder; each layer is translated by the handler of
 * its class (./tfjs-layers/layers/*.ts). The graph is written NCHW (ONNX convention): the input is [N, 3, H, W] and
 * every 4-D tensor stays NCHW; layers whose meaning depends on the layout (Flatten, Reshape, Dense after them,
 * channel axes) are translated. Outputs: `features` (the global pooling output, when there is one), `logits` (the
 * input of a final softmax, flattened to [N, classes]) and the model's own last output.
 */

/** The Keras layer classes this importer translates (besides InputLayer): those with a handler. */
export const SUPPORTED_KERAS_LAYERS: readonly string[] = [...LAYER_HANDLERS.keys()];

/** Import a TF.js layers model (model.json + shards) as ONNX bytes. */
export async function importTfjsLayers(modelJsonPath: string): Promise<Uint8Array> {
  try {
    await stat(modelJsonPath);
  } catch {
    fail(modelJsonPath, 'not found');
  }
  const folder = await checkedTfjsFolder(modelJsonPath);
  if (folder.checked.kind !== 'tfjs-layers') fail(modelJsonPath, 'a TF.js graph model, not a layers model (use the tfjs-graph importer)');
  const { layers, sequential } = readLayers(folder.text, modelJsonPath);
  return translate(layers, sequential, await readTfjsWeights(folder), modelJsonPath);
}

export async function isTfjsLayersModel(path: string): Promise<boolean> {
  try {
    const p = (await stat(path)).isDirectory() ? join(path, 'model.json') : path;
    const j = JSON.parse(await readFile(p, 'utf8'));
    return Boolean(j.modelTopology && j.weightsManifest) && j.format !== 'graph-model';
  } catch {
    return false;
  }
}
