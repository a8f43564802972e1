import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { writeFileAtomic } from '../util/fs.js';
import { datasetFromFiles } from '../data/index.js';
import { REASON_EMPTY } from '../data/files.js';
import { Backbone, BackboneOptions, Prediction, softmaxRows, topK } from '../engine/backbone.js';
import type { Skipped } from '../engine/extract.js';
import { GraftError, UsageError } from '../errors.js';
import { isRunDir, loadRun } from '../learn/run.js';
import { runBackbone } from '../learn/run-backbone.js';
import { ttaFor } from './evaluate.js';
import type { TtaKind } from '../image/tta.js';
import { int8Model } from './int8.js';
import { runExtraction } from './features.js';
import type { Reporter } from './reporter.js';
import type { QueueOptions } from '../queue/coordinator.js';

export interface PredictOptions {
  top?: number;
  /** Labels file for a bare classifier (default: ImageNet-1k for 1000/1001 outputs). */
  labels?: string;
  batchSize?: number;
  cache?: string | false;
  backbone?: BackboneOptions;
  reporter?: Reporter;
  /** Compute the rows on a `graft worker` pool first (see tasks/features.ts). */
  queue?: QueueOptions;
  /** A bare model: predict with an int8 version of it calibrated on the input images (a run uses what it was trained with). */
  int8?: boolean;
  /** Test-time augmentation; for a run, default: what it was trained with ('none' turns it off). */
  tta?: TtaKind | 'none';
  /** Also write the predictions to this file, one JSON line per image (atomically, once all are done). */
  out?: string;
}

export interface FilePrediction { path: string; top: Prediction[] }
export interface PredictResult {
  kind: 'run' | 'model';
  predictions: FilePrediction[];
  skipped: Skipped[];
  /**
   * How many of `skipped` are failures (the CLI then exits 1): an input named as such that is missing or gave no
   * prediction, or an image found in a folder that could not be read or decoded. What a folder walk leaves out by
   * choice (files of other types, the same file twice, links not followed) is only reported.
   */
  failed: number;
}

/**
 * Reasons (prefixes) the folder walk (data/files.ts findImages) gives for what it could not read. Its other reasons
 * are choices, not failures: files of other types, the same file met twice, links not followed, run folders.
 */
const UNREADABLE_IN_FOLDER = [REASON_EMPTY, 'cannot read', 'cannot follow', 'broken symbolic link'];

/** See PredictResult.failed: `found` are the skips of finding the inputs, `decoded` those of decoding the images. */
function countFailures(inputs: string[], found: Skipped[], decoded: Skipped[]): number {
  const named = new Set(inputs.map((p) => resolve(p)));
  const failed = found.filter((s) => named.has(s.path) || UNREADABLE_IN_FOLDER.some((r) => s.reason.startsWith(r)));
  return failed.length + decoded.length;
}

/** The top classes of each kept image, from rows of probabilities. */
function ranked(proba: Float32Array, kept: number[], paths: string[], labels: string[] | undefined, top: number): FilePrediction[] {
  const c = kept.length ? proba.length / kept.length : 0;
  return kept.map((idx, i) => ({ path: paths[idx]!, top: topK(proba.subarray(i * c, (i + 1) * c), labels, Math.min(top, c)) }));
}

/**
 * Classify image files (or folders of them) with a trained run directory or a bare classifier model (path or URL).
 */
export async function predict(target: string, inputs: string[], opts: PredictOptions = {}): Promise<PredictResult> {
  if (opts.out && (await stat(opts.out).catch(() => undefined))?.isDirectory()) {
    throw new UsageError(`--out ${opts.out} is a folder; give the file to write the predictions to (e.g. preds.jsonl)`);
  }
  const res = await predictAll(target, inputs, opts);
  if (opts.out) {
    // One line per classified image, in input order: what a batch job downstream reads line by line.
    const lines = res.predictions.map((p) => JSON.stringify({ path: p.path, top: p.top.map((t) => ({ label: t.label, index: t.index, probability: t.probability })) }));
    await writeFileAtomic(opts.out, lines.length ? lines.join('\n') + '\n' : '');
  }
  return res;
}

async function predictAll(target: string, inputs: string[], opts: PredictOptions): Promise<PredictResult> {
  const top = opts.top ?? 5;
  const files = await datasetFromFiles(inputs);
  const paths = files.items.map((i) => i.path);
  const common = { batchSize: opts.batchSize, cache: opts.cache, reporter: opts.reporter, task: 'predict', queue: opts.queue };
  if (await isRunDir(target)) {
    const run = await loadRun(target);
    if (opts.int8 && !run.config.int8) opts.reporter?.warn?.(`--int8: ${target} was trained on the float backbone and is used as trained (retrain with --int8 for an int8 run)`);
    const backbone = await runBackbone(run, opts.backbone);
    try {
      const res = await runExtraction(backbone, paths, { ...common, tta: ttaFor(opts.tta, run) });
      const proba = await run.head.predictProba(res.features, res.kept.length);
      const failed = countFailures(inputs, files.skipped, res.skipped);
      return { kind: 'run', predictions: ranked(proba, res.kept, paths, run.config.classes, top), skipped: [...files.skipped, ...res.skipped], failed };
    } finally {
      await backbone.dispose();
      await run.head.dispose();
    }
  }
  const q = opts.int8 && paths.length ? await int8Model(target, paths, { resolve: { ...opts.backbone, labelsFile: opts.labels }, reporter: opts.reporter }) : undefined;
  const backbone = await Backbone.load(q ? q.path : target, { ...opts.backbone, labelsFile: opts.labels });
  try {
    for (const w of backbone.ref.warnings) opts.reporter?.warn?.(w);
    if (!backbone.ref.logitsTensor) {
      throw new GraftError(`${target}: this model has no classifier output to predict with; train a head on it with 'graft train'`);
    }
    const res = await runExtraction(backbone, paths, { ...common, tensor: 'logits', tta: ttaFor(opts.tta) });
    const n = res.kept.length;
    const proba = backbone.ref.logitsAreProbabilities ? res.features : n ? softmaxRows(res.features, n) : new Float32Array(0);
    const failed = countFailures(inputs, files.skipped, res.skipped);
    return { kind: 'model', predictions: ranked(proba, res.kept, paths, backbone.ref.labels, top), skipped: [...files.skipped, ...res.skipped], failed };
  } finally {
    await backbone.dispose();
  }
}
