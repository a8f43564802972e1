import { registerImporter } from '../importer-registry.js';
import { importTfjsGraph } from './tfjs-graph.js';
import { importTfjsLayers } from './tfjs-layers.js';
import { importTflite } from './tflite.js';

/** Bump when an importer's output changes, so converted models cached in the store are converted again. */
const TFJS_LAYERS_VERSION = '1';
const TFLITE_VERSION = '1';
const TFJS_GRAPH_VERSION = '1';

/** Make the built-in importers available to resolveModel / the store (idempotent). */
export function registerBuiltinImporters(): void {
  registerImporter('tfjs-layers', importTfjsLayers, { version: TFJS_LAYERS_VERSION });
  registerImporter('tfjs-graph', importTfjsGraph, { version: TFJS_GRAPH_VERSION });
  registerImporter('tflite', (file) => importTflite(file), { version: TFLITE_VERSION });
}
