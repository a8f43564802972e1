/**
 * `graft quantize`: a float ONNX model -> a static int8 QDQ model calibrated on a folder of images, written
 * atomically, with how it went (what was quantised, what stayed float, agreement with the float model).
 */
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { GraftError, UsageError } from '../errors.js';
import { compareModels, DEFAULT_METHOD, loadCalibrationImages, quantizeOnnx, type Agreement, type CalibrationMethod, type QuantizeOptions } from '../engine/quantize/index.js';
import type { FloatNode } from '../engine/quantize/plan.js';
import type { PreprocessSpec } from '../image/spec.js';
import { parseOnnx } from '../models/onnx-file.js';
import { resolveModel } from '../models/resolve.js';
import { writeFileAtomic } from '../util/fs.js';
import { silent, type Reporter } from './reporter.js';

export interface QuantizeTaskOptions extends Omit<QuantizeOptions, 'method'> {
  calibrate: string;
  out: string;
  images?: number;
  method?: CalibrationMethod;
  preprocess?: Partial<PreprocessSpec>;
  featureNode?: string;
  reporter?: Reporter;
}

export interface QuantizeTaskResult {
  model: string;
  out: string;
  quantized: boolean;
  /** Why the written model is the float one, when it is. */
  fallback?: string;
  method: CalibrationMethod;
  calibration: { dir: string; images: number; skipped: { path: string; reason: string }[]; seconds: number };
  nodes: { quantized: number; depthwise: number; byOp: Record<string, number> };
  float: FloatNode[];
  folded: { affine: number; pads: number };
  removedActivations: number;
  /** Float vs int8 outputs on the calibration images. */
  agreement: Agreement[];
  bytes: { before: number; after: number };
  seconds: number;
}

export async function quantizeTask(model: string, opts: QuantizeTaskOptions): Promise<QuantizeTaskResult> {
  const t0 = performance.now();
  const r = opts.reporter ?? silent;
  const method = opts.method ?? DEFAULT_METHOD;
  const n = opts.images ?? 100;
  if (resolve(opts.out) === resolve(model)) throw new UsageError(`--out ${opts.out} is the input model; write the int8 model to another file`);
  const st = await stat(opts.calibrate).catch(() => undefined);
  if (!st?.isDirectory()) throw new GraftError(`${opts.calibrate}: calibration folder not found`);
  const ref = await resolveModel(model, { preprocess: opts.preprocess, featureNode: opts.featureNode });
  for (const w of ref.warnings) r.warn?.(w);
  const images = await loadCalibrationImages(opts.calibrate, ref.spec, n, opts.signal);
  for (const s of images.skipped) r.warn?.(`${s.path}: ${s.reason} (skipped)`);
  if (images.n === 0) throw new GraftError(`${opts.calibrate}: no readable images to calibrate on`);
  if (images.n < n) r.info?.(`${opts.calibrate}: ${images.n} images (asked for ${n})`);
  r.info?.(`calibrating on ${images.n} images (${method})`);
  const res = await quantizeOnnx(ref.onnx, images, { ...opts, method });
  if (!res.quantized) r.warn?.(`${ref.path}: ${res.fallback}; writing the float model unchanged`);
  // The out model must parse before it replaces anything.
  const outModel = parseOnnx(res.bytes, opts.out);
  await writeFileAtomic(opts.out, res.bytes);
  // Preprocessing that lives beside the model (a sidecar) must travel with the int8 copy.
  const sidecar = `${ref.path}.json`;
  if (await stat(sidecar).then(() => true, () => false)) await writeFileAtomic(`${opts.out}.json`, await readFile(sidecar));
  const compare = [{ name: ref.featureTensor }, ...(ref.logitsTensor ? [{ name: ref.logitsTensor, scores: true }] : [])];
  const agreement = res.quantized ? await compareModels(ref.onnx, outModel, compare, images, opts.threads) : [];
  const byOp: Record<string, number> = {};
  for (const q of res.nodes) byOp[q.op] = (byOp[q.op] ?? 0) + 1;
  return {
    model: ref.path,
    out: opts.out,
    quantized: res.quantized,
    ...(res.fallback && { fallback: res.fallback }),
    method,
    calibration: { dir: opts.calibrate, images: images.n, skipped: images.skipped, seconds: res.calibrationSeconds },
    nodes: { quantized: res.nodes.length, depthwise: res.nodes.filter((q) => q.depthwise).length, byOp },
    float: res.float,
    folded: { affine: res.folded, pads: res.foldedPads },
    removedActivations: res.removedActivations,
    agreement,
    bytes: { before: ref.onnx.bytes.length, after: res.bytes.length },
    seconds: (performance.now() - t0) / 1000,
  };
}
