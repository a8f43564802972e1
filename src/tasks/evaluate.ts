import { basename, dirname, join, resolve } from 'node:path';
import { openDataset, type LayoutName } from '../data/index.js';
import { Backbone, BackboneOptions, softmaxRows } from '../engine/backbone.js';
import type { Skipped } from '../engine/extract.js';
import { confusionMatrixPng } from '../learn/charts.js';
import { evaluate, type Evaluation } from '../learn/metrics.js';
import { topLossesPng } from '../learn/top-losses.js';
import { isRunDir, loadRun } from '../learn/run.js';
import { runBackbone } from '../learn/run-backbone.js';
import { GraftError } from '../errors.js';
import type { TtaKind } from '../image/tta.js';
import { writeJsonAtomic } from '../util/fs.js';
import { runExtraction } from './features.js';
import type { Reporter } from './reporter.js';
import { toFeatureSet } from './train.js';

export interface EvalRunOptions {
  layout?: LayoutName | 'auto';
  /** Where to write metrics.json and confusion.png; default <run>/eval/<data folder name>. */
  out?: string;
  batchSize?: number;
  cache?: string | false;
  topWrong?: number;
  backbone?: BackboneOptions;
  reporter?: Reporter;
  /** Test-time augmentation; default: what the run was trained with ('none' turns it off). */
  tta?: TtaKind | 'none';
}

/** The TTA to use: asked for, else the run's. */
export function ttaFor(asked: TtaKind | 'none' | undefined, run?: { config: { tta?: TtaKind } }): TtaKind | undefined {
  if (asked === 'none') return undefined;
  return asked ?? run?.config.tta;
}

export interface EvalRunResult { evaluation: Evaluation; skipped: Skipped[]; out: string }

/**
 * Evaluate a trained run (or a classifier model, e.g. one written by `graft export`, whose class names come from its
 * sidecar or metadata) on a labelled folder with the same classes.
 */
export async function evalRun(runDir: string, data: string, opts: EvalRunOptions = {}): Promise<EvalRunResult> {
  if (!(await isRunDir(runDir)) && /\.onnx$/i.test(runDir)) return evalModel(runDir, data, opts);
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
      tta: ttaFor(opts.tta, run),
    });
    const set = toFeatureSet(ds.items, res);
    const evaluation = evaluate(await run.head.predictProba(set.x, set.n), set.y, run.config.classes, set.items, opts.topWrong ?? 12);
    const out = opts.out ?? join(runDir, 'eval', basename(resolve(data)));
    const skipped = [...ds.skipped, ...res.skipped];
    await writeJsonAtomic(join(out, 'metrics.json'), { data: resolve(data), evaluation, skipped });
    await confusionMatrixPng(evaluation.confusion, run.config.classes, join(out, 'confusion.png'), basename(resolve(data)));
    await topLossesPng(evaluation.mostConfidentlyWrong, join(out, 'top-losses.png'), { title: `${basename(resolve(data))}: most confidently wrong` });
    return { evaluation, skipped, out };
  } finally {
    await backbone.dispose();
    await run.head.dispose();
  }
}

async function evalModel(modelPath: string, data: string, opts: EvalRunOptions): Promise<EvalRunResult> {
  const backbone = await Backbone.load(modelPath, opts.backbone);
  try {
    const { labels, logitsTensor, logitsAreProbabilities } = backbone.ref;
    if (!logitsTensor || !labels) throw new GraftError(`${modelPath}: not a classifier with class names (graft export writes them in a .onnx.json beside the model)`);
    const ds = await openDataset(data, { layout: opts.layout, classes: labels });
    const res = await runExtraction(backbone, ds.items.map((i) => i.path), { batchSize: opts.batchSize, cache: opts.cache, reporter: opts.reporter, task: 'predict', tensor: 'logits', tta: ttaFor(opts.tta) });
    const set = toFeatureSet(ds.items, res);
    const proba = logitsAreProbabilities ? set.x : set.n ? softmaxRows(set.x, set.n) : new Float32Array(0);
    const evaluation = evaluate(proba, set.y, labels, set.items, opts.topWrong ?? 12);
    const out = opts.out ?? join(dirname(resolve(modelPath)), `${basename(modelPath).replace(/\.onnx$/i, '')}-eval`, basename(resolve(data)));
    const skipped = [...ds.skipped, ...res.skipped];
    await writeJsonAtomic(join(out, 'metrics.json'), { model: resolve(modelPath), data: resolve(data), evaluation, skipped });
    await confusionMatrixPng(evaluation.confusion, labels, join(out, 'confusion.png'), basename(resolve(data)));
    await topLossesPng(evaluation.mostConfidentlyWrong, join(out, 'top-losses.png'), { title: `${basename(resolve(data))}: most confidently wrong` });
    return { evaluation, skipped, out };
  } finally {
    await backbone.dispose();
  }
}
