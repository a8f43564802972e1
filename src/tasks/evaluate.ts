import { basename, join, resolve } from 'node:path';
import { openDataset, type LayoutName } from '../data/index.js';
import { Backbone, BackboneOptions } from '../engine/backbone.js';
import type { Skipped } from '../engine/extract.js';
import { confusionMatrixPng } from '../learn/charts.js';
import { evaluate, type Evaluation } from '../learn/metrics.js';
import { topLossesPng } from '../learn/top-losses.js';
import { loadRun, type LoadedRun } from '../learn/run.js';
import { GraftError } from '../errors.js';
import { writeJsonAtomic } from '../util/fs.js';
import { runExtraction } from './features.js';
import type { Reporter } from './reporter.js';
import { toFeatureSet } from './train.js';

/** The backbone a run was trained on, checked to be the same bytes. */
export async function runBackbone(run: LoadedRun, opts: BackboneOptions = {}): Promise<Backbone> {
  const m = run.config.model;
  const backbone = await Backbone.load(m.path, { ...opts, preprocess: run.config.preprocess, featureNode: m.featureTensor });
  if (backbone.ref.onnx.info.sha256 !== m.sha256) {
    await backbone.dispose();
    throw new GraftError(`${m.path}: this model file changed since the run in ${run.dir} was trained (SHA-256 differs)`);
  }
  return backbone;
}

export interface EvalRunOptions {
  layout?: LayoutName | 'auto';
  /** Where to write metrics.json and confusion.png; default <run>/eval/<data folder name>. */
  out?: string;
  batchSize?: number;
  cache?: string | false;
  topWrong?: number;
  backbone?: BackboneOptions;
  reporter?: Reporter;
}

export interface EvalRunResult { evaluation: Evaluation; skipped: Skipped[]; out: string }

/** Evaluate a trained run on a labelled folder (same classes as the run). */
export async function evalRun(runDir: string, data: string, opts: EvalRunOptions = {}): Promise<EvalRunResult> {
  const run = await loadRun(runDir);
  const label = run.config.data.label as 'breed' | 'species' | undefined;
  const ds = await openDataset(data, { layout: opts.layout, label, classes: run.config.classes });
  const backbone = await runBackbone(run, opts.backbone);
  try {
    const res = await runExtraction(backbone, ds.items.map((i) => i.path), {
      batchSize: opts.batchSize,
      cache: opts.cache,
      reporter: opts.reporter,
      task: 'features',
    });
    const set = toFeatureSet(ds.items, res);
    const evaluation = evaluate(run.head.predictProba(set.x, set.n), set.y, run.config.classes, set.items, opts.topWrong ?? 12);
    const out = opts.out ?? join(runDir, 'eval', basename(resolve(data)));
    const skipped = [...ds.skipped, ...res.skipped];
    await writeJsonAtomic(join(out, 'metrics.json'), { data: resolve(data), evaluation, skipped });
    await confusionMatrixPng(evaluation.confusion, run.config.classes, join(out, 'confusion.png'), basename(resolve(data)));
    await topLossesPng(evaluation.mostConfidentlyWrong, join(out, 'top-losses.png'), { title: `${basename(resolve(data))}: most confidently wrong` });
    return { evaluation, skipped, out };
  } finally {
    await backbone.dispose();
  }
}
