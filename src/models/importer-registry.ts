/**
 * Importers: other model formats (TF.js, TFLite) to ONNX, registered at start-up (models/importers/index.ts) so
 * that the store and the model sources below it can convert without importing the converters themselves.
 */
import { GraftError } from '../errors.js';
import { writeFileAtomic } from '../util/fs.js';
import type { ModelFormat } from './catalog.js';
import { exists } from './store-files.js';


/** Turns a model file of another format (model.json, .tflite) into ONNX bytes. */
export type Importer = (modelFile: string) => Promise<Uint8Array>;

export const IMPORTERS = new Map<ModelFormat, { convert: Importer; version?: string }>();

/**
 * Make models of `format` usable for inference: pulled catalog models and local files of that format are converted
 * with `convert` (its output is cached per `version`; without a version it is converted at each load).
 */
export function registerImporter(format: Exclude<ModelFormat, 'onnx'>, convert: Importer, opts: { version?: string } = {}): void {
  IMPORTERS.set(format, { convert, version: opts.version });
}

/** Remove the importer of `format`; returns what was registered (to restore it later, e.g. in tests). */
export function unregisterImporter(format: ModelFormat): { convert: Importer; version?: string } | undefined {
  const prev = IMPORTERS.get(format);
  IMPORTERS.delete(format);
  return prev;
}

export function importerFor(format: ModelFormat): { convert: Importer; version?: string } | undefined {
  return IMPORTERS.get(format);
}

export function needsImporter(what: string, format: ModelFormat, where?: string): GraftError {
  return new GraftError(`${what}: format ${format} needs the importer (not yet available)${where ? `; its files are in ${where}` : ''}`);
}

export async function convertTo(out: string, format: ModelFormat, file: string, what: string, where?: string): Promise<string> {
  const imp = importerFor(format);
  if (!imp) throw needsImporter(what, format, where);
  if (imp.version && (await exists(out))) return out;
  const bytes = await imp.convert(file);
  await writeFileAtomic(out, bytes);
  return out;
}

