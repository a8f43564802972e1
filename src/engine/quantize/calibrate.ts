/**
 * Calibration: the calibration images, preprocessed exactly as extraction does (same `loadInto`, same spec), run
 * through the float model with the tensors to calibrate added as graph outputs; per tensor, min/max and (for
 * percentile / entropy) a histogram of |x|.
 */
import { ImageError, InterruptedError } from '../../errors.js';
import { findImages } from '../../data/files.js';
import { loadInto, tensorLength } from '../../image/preprocess.js';
import type { PreprocessSpec } from '../../image/spec.js';
import type { LoadedOnnx } from '../../models/onnx-file.js';
import { OrtModel } from '../ort.js';
import { type CalibrationMethod, channelMeans, TensorStats, tensorRange } from './ranges.js';

export interface CalibrationImages {
  /** `n` preprocessed images, one after another. */
  data: Float32Array;
  n: number;
  /** One image's tensor shape (without the batch axis), e.g. [3, 224, 224]. */
  shape: number[];
  paths: string[];
  skipped: { path: string; reason: string }[];
}

/** Floats per image. */
export function sampleSize(images: CalibrationImages): number {
  return images.shape.reduce((a, b) => a * b, 1);
}

/** `n` of `files` spread evenly over the sorted list (files of a class-per-folder set come class by class). */
export function spreadPick<T>(files: T[], n: number): T[] {
  if (n >= files.length) return [...files];
  return Array.from({ length: n }, (_, i) => files[Math.floor((i * files.length) / n)]!);
}

/**
 * Up to `n` images from `dir` (recursively), decoded and preprocessed for `spec`. Unreadable images are skipped
 * and replaced by the next candidates, so a few bad files do not shrink the set.
 */
export async function loadCalibrationImages(dir: string, spec: PreprocessSpec, n: number, signal?: AbortSignal): Promise<CalibrationImages> {
  return loadCalibrationFiles((await findImages(dir)).files, spec, n, signal);
}

/** As loadCalibrationImages, from a list of image files (e.g. a run's training images, in dataset order). */
export async function loadCalibrationFiles(files: string[], spec: PreprocessSpec, n: number, signal?: AbortSignal): Promise<CalibrationImages> {
  const per = tensorLength(spec);
  // The evenly spread pick first, then the other files in order as replacements for unreadable ones.
  const wanted = spreadPick(files, n);
  const chosen = new Set(wanted);
  const candidates = [...wanted, ...files.filter((f) => !chosen.has(f))];
  const data = new Float32Array(Math.min(n, candidates.length) * per);
  const paths: string[] = [];
  const skipped: CalibrationImages['skipped'] = [];
  let next = 0;
  while (paths.length < n && next < candidates.length) {
    if (signal?.aborted) throw new InterruptedError('calibration interrupted');
    const take = candidates.slice(next, next + Math.min(16, n - paths.length));
    next += take.length;
    const loaded = await Promise.all(
      take.map(async (p) => {
        const tmp = new Float32Array(per);
        try {
          await loadInto(tmp, 0, p, spec, { name: p });
          return tmp;
        } catch (err) {
          return err instanceof ImageError ? err.reason : (err as Error).message;
        }
      }),
    );
    take.forEach((p, j) => {
      const t = loaded[j]!;
      if (typeof t === 'string') skipped.push({ path: p, reason: t });
      else if (paths.length < n) {
        data.set(t, paths.length * per);
        paths.push(p);
      }
    });
  }
  const [h, w] = spec.size;
  const shape = spec.layout === 'NCHW' ? [3, h, w] : [h, w, 3];
  return { data: data.subarray(0, paths.length * per), n: paths.length, shape, paths, skipped };
}

export interface CalibrateOptions {
  method: CalibrationMethod;
  /** For 'percentile': the percentile of |x| kept (default 99.99). */
  percentile?: number;
  threads?: number;
  batchSize?: number;
  signal?: AbortSignal;
}

export interface Calibration {
  ranges: Map<string, [number, number]>;
  /** Per-channel means (axis 1) of the 4-D tensors, for the weight bias correction. */
  means: Map<string, Float64Array>;
}

/**
 * Ranges of `tensors` over the images. The session runs with intra-op threads in this thread (not the worker pool):
 * each output of each batch is reduced into statistics right away, so the ~50 intermediate tensors of a batch
 * (about 12 MB per MobileNet image) are never copied between threads or kept.
 */
export async function calibrateRanges(
  model: LoadedOnnx,
  tensors: string[],
  images: CalibrationImages,
  opts: CalibrateOptions,
): Promise<Calibration> {
  const inputName = model.info.inputs[0]!.name;
  const stats = new Map(tensors.map((t) => [t, new TensorStats()]));
  const fetched = tensors.filter((t) => t !== inputName);
  const per = sampleSize(images);
  const batch = Math.max(1, opts.batchSize ?? 8);
  const shape = (k: number) => [k, ...images.shape];
  const runner = fetched.length ? await OrtModel.create(model, fetched, { threads: opts.threads, parallelism: 'intra-op' }) : undefined;
  try {
    const passes = opts.method === 'minmax' ? 1 : 2;
    for (let pass = 0; pass < passes; pass++) {
      for (let s = 0; s < images.n; s += batch) {
        if (opts.signal?.aborted) throw new InterruptedError('calibration interrupted');
        const k = Math.min(batch, images.n - s);
        const x = images.data.subarray(s * per, (s + k) * per);
        const add = (t: string, d: Float32Array, dims: number[]) => (pass === 0 ? stats.get(t)!.addMinMax(d, dims) : stats.get(t)!.addHistogram(d));
        if (stats.has(inputName)) add(inputName, x, shape(k));
        if (!runner) continue;
        const out = await runner.run(x, shape(k));
        for (const t of fetched) add(t, out[t]!.data, out[t]!.dims);
      }
    }
  } finally {
    await runner?.dispose();
  }
  const pct = opts.percentile ?? 99.99;
  const means = new Map<string, Float64Array>();
  for (const t of tensors) {
    const m = channelMeans(stats.get(t)!);
    if (m) means.set(t, m);
  }
  return { ranges: new Map(tensors.map((t) => [t, tensorRange(stats.get(t)!, opts.method, pct)])), means };
}

/**
 * Per-channel maxima (channel axis 1, NCHW) of `tensors` over the images: what channel equalisation needs. One pass.
 */
export async function channelMaxima(
  model: LoadedOnnx,
  tensors: string[],
  images: CalibrationImages,
  opts: { threads?: number; signal?: AbortSignal },
): Promise<Map<string, Float64Array>> {
  const out = new Map<string, Float64Array>();
  if (!tensors.length) return out;
  const per = sampleSize(images);
  const runner = await OrtModel.create(model, tensors, { threads: opts.threads, parallelism: 'intra-op' });
  try {
    for (let s = 0; s < images.n; s += 8) {
      if (opts.signal?.aborted) throw new InterruptedError('calibration interrupted');
      const k = Math.min(8, images.n - s);
      const res = await runner.run(images.data.subarray(s * per, (s + k) * per), [k, ...images.shape]);
      for (const t of tensors) {
        const { data, dims } = res[t]!;
        const c = dims[1] ?? 1;
        const inner = dims.slice(2).reduce((a, b) => a * b, 1);
        let m = out.get(t);
        if (!m) out.set(t, (m = new Float64Array(c).fill(-Infinity)));
        for (let i = 0; i < data.length; i++) {
          const ch = Math.floor(i / inner) % c;
          if (data[i]! > m[ch]!) m[ch] = data[i]!;
        }
      }
    }
  } finally {
    await runner.dispose();
  }
  return out;
}
