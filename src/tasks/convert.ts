import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GraftError } from '../errors.js';
import { importTfjsLayers, isTfjsLayersModel } from '../models/importers/tfjs-layers.js';
import { parseOnnx } from '../models/onnx-file.js';
import { writeFileAtomic } from '../util/fs.js';

export interface ConvertResult { input: string; format: 'tfjs-layers'; out: string; bytes: number; outputs: string[]; seconds: number }

/** Convert a model in another format to ONNX (today: TF.js layers models, a model.json or its folder). */
export async function convertModel(input: string, out: string): Promise<ConvertResult> {
  const t0 = performance.now();
  let st;
  try {
    st = await stat(input);
  } catch {
    throw new GraftError(`model not found: ${input}`);
  }
  const modelJson = st.isDirectory() ? join(input, 'model.json') : input;
  if (!(await isTfjsLayersModel(modelJson))) {
    throw new GraftError(`${input}: not a model graft can convert (supported: TF.js layers model.json)`);
  }
  const bytes = await importTfjsLayers(modelJson);
  const info = parseOnnx(bytes, out).info;
  await writeFileAtomic(out, bytes);
  return { input, format: 'tfjs-layers', out, bytes: bytes.length, outputs: info.outputs.map((o) => o.name), seconds: (performance.now() - t0) / 1000 };
}
