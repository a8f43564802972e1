import { datasetFromFiles } from '../data/index.js';
import { Backbone, BackboneOptions, Prediction, softmaxRows, topK } from '../engine/backbone.js';
import type { Skipped } from '../engine/extract.js';
import { GraftError } from '../errors.js';
import { isRunDir, loadRun } from '../learn/run.js';
import { runBackbone } from './evaluate.js';
import { runExtraction } from './features.js';
import type { Reporter } from './reporter.js';

export interface PredictOptions {
  top?: number;
  /** Labels file for a bare classifier (default: ImageNet-1k for 1000/1001 outputs). */
  labels?: string;
  batchSize?: number;
  cache?: string | false;
  backbone?: BackboneOptions;
  reporter?: Reporter;
}

export interface FilePrediction { path: string; top: Prediction[] }
export interface PredictResult { kind: 'run' | 'model'; predictions: FilePrediction[]; skipped: Skipped[] }

/** The top classes of each kept image, from rows of probabilities. */
function ranked(proba: Float32Array, kept: number[], paths: string[], labels: string[] | undefined, top: number): FilePrediction[] {
  const c = kept.length ? proba.length / kept.length : 0;
  return kept.map((idx, i) => ({ path: paths[idx]!, top: topK(proba.subarray(i * c, (i + 1) * c), labels, Math.min(top, c)) }));
}

/**
 * Classify image files (or folders of them) with a trained run directory or a bare classifier model (path or URL).
 */
export async function predict(target: string, inputs: string[], opts: PredictOptions = {}): Promise<PredictResult> {
  const top = opts.top ?? 5;
  const files = await datasetFromFiles(inputs);
  const paths = files.items.map((i) => i.path);
  const common = { batchSize: opts.batchSize, cache: opts.cache, reporter: opts.reporter, task: 'predict' };
  if (await isRunDir(target)) {
    const run = await loadRun(target);
    const backbone = await runBackbone(run, opts.backbone);
    try {
      const res = await runExtraction(backbone, paths, common);
      const proba = run.head.predictProba(res.features, res.kept.length);
      return { kind: 'run', predictions: ranked(proba, res.kept, paths, run.config.classes, top), skipped: [...files.skipped, ...res.skipped] };
    } finally {
      await backbone.dispose();
    }
  }
  const backbone = await Backbone.load(target, { ...opts.backbone, labelsFile: opts.labels });
  try {
    for (const w of backbone.ref.warnings) opts.reporter?.warn?.(w);
    if (!backbone.ref.logitsTensor) {
      throw new GraftError(`${target}: this model has no classifier output to predict with; train a head on it with 'graft train'`);
    }
    const res = await runExtraction(backbone, paths, { ...common, tensor: 'logits' });
    const n = res.kept.length;
    const proba = backbone.ref.logitsAreProbabilities ? res.features : n ? softmaxRows(res.features, n) : new Float32Array(0);
    return { kind: 'model', predictions: ranked(proba, res.kept, paths, backbone.ref.labels, top), skipped: [...files.skipped, ...res.skipped] };
  } finally {
    await backbone.dispose();
  }
}
