/** The parts of a TF.js layers model.json (a Keras model config) the importer reads. */
import { fail } from '../fail.js';

export interface KerasLayer {
  class_name: string;
  name?: string;
  config: Record<string, unknown> & { name: string };
  inbound_nodes: unknown[];
}

interface ModelJson {
  modelTopology: { model_config?: { class_name: string; config: unknown }; class_name?: string; config?: unknown };
  format?: string;
}

/** The layers in order, and whether the model is Sequential (each layer's input is the previous layer). */
export function readLayers(text: string, file: string): { layers: KerasLayer[]; sequential: boolean } {
  let json: ModelJson;
  try {
    json = JSON.parse(text);
  } catch (err) {
    fail(file, `not a TF.js model.json (${(err as Error).message})`);
  }
  const topo = json?.modelTopology;
  const cfg = topo?.model_config ?? topo;
  if (!cfg) fail(file, 'not a TF.js layers model (no modelTopology / weightsManifest)');
  const config = cfg.config as { layers?: KerasLayer[] } | KerasLayer[];
  const layers: KerasLayer[] = Array.isArray(config) ? config : config?.layers ?? fail(file, 'model topology has no layers');
  return { layers, sequential: cfg.class_name === 'Sequential' };
}

/** The names of the layers feeding `layer` (Keras 2 and Keras 3 inbound_nodes formats). */
export function inboundNames(layer: KerasLayer): string[] {
  const nodes = layer.inbound_nodes as unknown[];
  if (!nodes.length) return [];
  const first = nodes[0];
  // Keras 2 format: [[["name", 0, 0, {}], ...]]; newer: [{args: [{config: {keras_history: ["name", 0, 0]}}]}]
  if (Array.isArray(first)) return (first as unknown[][]).map((e) => String(e[0]));
  const args = (first as { args?: unknown[] }).args ?? [];
  const names: string[] = [];
  const visit = (a: unknown): void => {
    if (Array.isArray(a)) a.forEach(visit);
    else if (a && typeof a === 'object') {
      const hist = (a as { config?: { keras_history?: unknown[] } }).config?.keras_history;
      if (hist) names.push(String(hist[0]));
    }
  };
  visit(args);
  return names;
}

/** A Keras size argument (a number or a pair) as a pair. */
export const pair = (v: unknown, d: number): [number, number] => (Array.isArray(v) ? [Number(v[0]), Number(v[1] ?? v[0])] : [Number(v ?? d), Number(v ?? d)]);
