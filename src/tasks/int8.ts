/**
 * `--int8` on extract / train / predict / serve: the backbone quantised once (static QDQ, engine/quantize),
 * calibrated on the images at hand (a run's training images), and kept in graft's folder keyed by the float model's
 * hash, its preprocessing and the calibration images' contents — the same model and images reuse the same file.
 * Beside the int8 file, a sidecar carries the float model's preprocessing, labels and tensor names, so the int8
 * backbone is fed and read exactly like the float one. Measured on MobileNet v1 0.75 (docs/benchmarks.md): raw
 * forward 2.5x, end-to-end extraction 2.4x, features' cosine to float 0.997, Cats vs Dogs head accuracy -0.1 point.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { GraftError } from '../errors.js';
import { loadCalibrationFiles, quantizeOnnx, spreadPick } from '../engine/quantize/index.js';
import { resolveModel, type ResolveOptions } from '../models/resolve.js';
import { graftHome } from '../util/paths.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/fs.js';
import type { Reporter } from './reporter.js';

/** Images calibrated on: the quantiser's default; more changed nothing measurable on MobileNet (cosine 0.9973). */
export const INT8_CALIBRATION_IMAGES = 100;

const RecordSchema = z.object({
  format: z.literal('graft-int8'),
  version: z.literal(1),
  source: z.string(),
  floatSha256: z.string(),
  calibration: z.object({ images: z.number().int(), skipped: z.number().int() }),
  quantized: z.boolean(),
  fallback: z.string().optional(),
});

export interface Int8Model {
  /** The int8 ONNX file (its sidecar beside it). */
  path: string;
  /** The float model's SHA-256. */
  floatSha256: string;
  /** Whether the file was made now (false: reused). */
  made: boolean;
  calibration: { images: number; skipped: number };
}

export function int8Dir(): string {
  return join(graftHome(), 'int8');
}

/**
 * The int8 version of `model` (path, URL, catalog name) calibrated on `files`: made once, then reused. Throws when
 * the model could not be quantised at all (the float model should then be used as it is).
 */
export async function int8Model(model: string, files: string[], opts: { resolve?: ResolveOptions; reporter?: Reporter; images?: number; signal?: AbortSignal } = {}): Promise<Int8Model> {
  const r = opts.reporter;
  const ref = await resolveModel(model, opts.resolve);
  const n = opts.images ?? INT8_CALIBRATION_IMAGES;
  const picked = spreadPick([...files].sort(), n);
  if (picked.length === 0) throw new GraftError(`--int8: no images to calibrate ${model} on`);
  // The calibration set by content, not by path: a moved dataset reuses the file, an edited photo does not.
  const h = createHash('sha256').update(ref.onnx.info.sha256).update(JSON.stringify(ref.spec)).update(ref.featureTensor).update(ref.logitsTensor ?? '');
  for (const f of picked) h.update(createHash('sha256').update(await readFile(f).catch(() => Buffer.alloc(0))).digest());
  const key = h.digest('hex').slice(0, 32);
  const path = join(int8Dir(), `${key}.onnx`);
  const recordPath = join(int8Dir(), `${key}.json`);
  const known = await readFile(recordPath, 'utf8').then((t) => RecordSchema.safeParse(JSON.parse(t))).catch(() => undefined);
  if (known?.success && (await stat(path).catch(() => undefined))?.isFile()) {
    if (!known.data.quantized) throw new GraftError(`--int8: ${model} cannot be quantised (${known.data.fallback ?? 'no int8 path'}); drop --int8`);
    r?.info?.(`int8: reusing ${path} (calibrated on ${known.data.calibration.images} of these images)`);
    return { path, floatSha256: ref.onnx.info.sha256, made: false, calibration: known.data.calibration };
  }
  r?.info?.(`int8: quantising ${model}, calibrated on ${picked.length} of the images (once; kept in ${int8Dir()})`);
  const images = await loadCalibrationFiles(picked, ref.spec, n, opts.signal);
  if (images.n === 0) throw new GraftError(`--int8: none of the calibration images could be read`);
  const out = await quantizeOnnx(ref.onnx, images, { signal: opts.signal });
  const record = { format: 'graft-int8' as const, version: 1 as const, source: model, floatSha256: ref.onnx.info.sha256, calibration: { images: images.n, skipped: images.skipped.length }, quantized: out.quantized, ...(out.fallback && { fallback: out.fallback }) };
  if (!out.quantized) {
    await writeJsonAtomic(recordPath, record);
    throw new GraftError(`--int8: ${model} cannot be quantised (${out.fallback}); drop --int8`);
  }
  await writeFileAtomic(path, out.bytes);
  await writeJsonAtomic(`${path}.json`, { preprocess: ref.spec, featureOutput: ref.featureTensor, ...(ref.logitsTensor && { logitsOutput: ref.logitsTensor }), ...(ref.labels && { labels: ref.labels }) });
  await writeJsonAtomic(recordPath, record); // last: its presence says the pair above is complete
  if (out.float.length) r?.info?.(`int8: ${out.float.length} node(s) stay float (${[...new Set(out.float.map((f) => f.op))].join(', ')})`);
  return { path, floatSha256: ref.onnx.info.sha256, made: true, calibration: record.calibration };
}
