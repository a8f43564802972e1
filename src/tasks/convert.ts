import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GraftError } from '../errors.js';
import { importTfjsGraph, isTfjsGraphModel } from '../models/importers/tfjs-graph.js';
import { importTfjsLayers, isTfjsLayersModel } from '../models/importers/tfjs-layers.js';
import { importTflite, isTfliteModel } from '../models/importers/tflite.js';
import { parseOnnx } from '../models/onnx-file.js';
import { parseTfjsModelJson } from '../models/store-checks.js';
import { writeFileAtomic } from '../util/fs.js';

export interface ConvertResult { input: string; format: 'tfjs-layers' | 'tfjs-graph' | 'tflite'; out: string; bytes: number; outputs: string[]; seconds: number }

/** Convert a model in another format to ONNX: TF.js layers and graph models (a model.json or its folder) and TFLite files. */
function fail(msg: string): never {
  throw new GraftError(msg);
}

export async function convertModel(input: string, out: string): Promise<ConvertResult> {
  const t0 = performance.now();
  let st;
  try {
    st = await stat(input);
  } catch {
    throw new GraftError(`model not found: ${input}`);
  }
  let format: ConvertResult['format'];
  let bytes: Uint8Array;
  const modelJson = st.isDirectory() ? join(input, 'model.json') : input;
  if (!st.isDirectory() && (/\.tflite$/i.test(input) || (await isTfliteModel(input)))) {
    format = 'tflite';
    bytes = await importTflite(input);
  } else if (await isTfjsGraphModel(modelJson)) {
    format = 'tfjs-graph';
    bytes = await importTfjsGraph(modelJson);
  } else if (await isTfjsLayersModel(modelJson)) {
    format = 'tfjs-layers';
    bytes = await importTfjsLayers(modelJson);
  } else {
    // A folder or a .json that is no TF.js model: say what is wrong with its model.json.
    if (st.isDirectory() || /\.json$/i.test(modelJson)) {
      const text = await readFile(modelJson, 'utf8').catch(() => fail(`${modelJson}: not found (a TF.js model folder holds a model.json)`));
      parseTfjsModelJson(text, modelJson);
    }
    throw new GraftError(`${input}: not a model graft can convert (supported: TF.js layers or graph model.json, TFLite .tflite)`);
  }
  const info = parseOnnx(bytes, out).info;
  await writeFileAtomic(out, bytes);
  return { input, format, out, bytes: bytes.length, outputs: info.outputs.map((o) => o.name), seconds: (performance.now() - t0) / 1000 };
}
