import { resolve } from 'node:path';
import { openDataset, stratifiedSplit, type Dataset, type DatasetItem, type LayoutName } from '../data/index.js';
import { Backbone, BackboneOptions } from '../engine/backbone.js';
import type { ExtractResult, Skipped } from '../engine/extract.js';
import { confusionMatrixPng, trainingCurvePng } from '../learn/charts.js';
import { trainHead, type TrainOptions, type Head, type EpochLog } from '../learn/heads.js';
import { evaluate, type Evaluation } from '../learn/metrics.js';
import { topLossesPng } from '../learn/top-losses.js';
import { RUN_FILES, RUN_FORMAT, RUN_VERSION, runModelPaths, saveRun, type RunConfig } from '../learn/run.js';
import { writeJsonAtomic } from '../util/fs.js';
import { InterruptedError } from '../errors.js';
import type { TtaKind } from '../image/tta.js';
import { int8Model } from './int8.js';
import { checkRunOut, commitRunFolder, withRunLock } from '../learn/run-folder.js';
import { join } from 'node:path';
import { runExtraction } from './features.js';
import type { Reporter } from './reporter.js';
import type { QueueOptions } from '../queue/coordinator.js';

export interface TrainRunOptions {
  /** Training images folder. */
  data: string;
  /** Validation folder; without it, a seeded stratified split of `data` (valFraction) is used. */
  val?: string;
  model: string;
  out: string;
  layout?: LayoutName | 'auto';
  label?: 'breed' | 'species';
  valFraction?: number;
  seed?: number;
  head?: Partial<TrainOptions>;
  backbone?: BackboneOptions;
  batchSize?: number;
  cache?: string | false;
  topWrong?: number;
  reporter?: Reporter;
  /** Compute the features on a `graft worker` pool (see tasks/features.ts). */
  queue?: QueueOptions;
  /**
   * After early stopping on the seeded validation split has chosen the number of epochs, train the head again on
   * training + validation images for that many epochs (x1.25, for the 25% more data) and keep that head. Default:
   * on when the validation set is a split of `data` (no `val`) and the head is linear or MLP. The run's validation
   * metrics stay those of the head chosen before the refit, on images it never trained on.
   * Measured (tools/study-defaults.ts, 5 seeds): Oxford Pets held-out accuracy 81.0 -> 82.6 %, Cats vs Dogs
   * 98.46 -> 98.56 %.
   */
  refit?: boolean;
  /** Run an int8 version of the backbone (tasks/int8.ts), calibrated on the training images; exports are int8 too. */
  int8?: boolean;
  /** Test-time augmentation: every image's features averaged over fixed views (train and validation alike). */
  tta?: TtaKind;
  /** Cancel: stops between extraction batches and between epochs with InterruptedError; nothing is written. */
  signal?: AbortSignal;
  /** Each epoch's log as it ends (live curves). */
  onEpoch?: (e: EpochLog) => void;
}

export interface FeatureSet { x: Float32Array; n: number; d: number; y: Int32Array; items: DatasetItem[] }

export interface TrainRunResult {
  dir: string;
  /** The head saved in the run (refitted on training + validation images when `refit` applied). */
  head: Head;
  /** Set when the head was refitted on all images after the epoch count was chosen. */
  refit?: { epochs: number; images: number };
  history: EpochLog[];
  bestEpoch: number;
  stoppedEarly: boolean;
  validation: Evaluation;
  skipped: Skipped[];
  counts: { train: number; val: number };
  seconds: { features: number; training: number };
}

/** One validation image's outcome, kept in metrics.json (the page's confusion-matrix cells open these). */
export interface ValidationPrediction { path: string; true: number; predicted: number; probability: number; trueProbability: number }

function predictionsOf(proba: Float32Array, set: FeatureSet, C: number): ValidationPrediction[] {
  return set.items.map((it, i) => {
    let p = 0;
    for (let c = 1; c < C; c++) if (proba[i * C + c]! > proba[i * C + p]!) p = c;
    return { path: it.path, true: set.y[i]!, predicted: p, probability: proba[i * C + p]!, trueProbability: proba[i * C + set.y[i]!]! };
  });
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Features of dataset items, keeping only the images that decoded (labels follow). */
export function toFeatureSet(items: DatasetItem[], res: ExtractResult): FeatureSet {
  const kept = res.kept.map((i) => items[i]!);
  return { x: res.features, n: kept.length, d: res.dim, y: Int32Array.from(kept, (it) => it.label), items: kept };
}

/** The training and validation items: `val` as given, else a seeded stratified split of `data`. */
/** The `data` block of a run's config: where the images came from and how they were split. */
export function runData(
  opts: { data: string; val?: string; label?: 'breed' | 'species' },
  layout: string,
  valFraction: number,
  seed: number,
  counts: { train: number; val: number },
): RunConfig['data'] {
  return {
    train: resolve(opts.data),
    val: opts.val ? resolve(opts.val) : undefined,
    layout,
    label: opts.label,
    valFraction: opts.val ? undefined : valFraction,
    splitSeed: opts.val ? undefined : seed,
    trainCount: counts.train,
    valCount: counts.val,
  };
}

export async function openTrainVal(
  opts: { data: string; val?: string; layout?: LayoutName | 'auto'; label?: 'breed' | 'species'; valFraction?: number },
  seed: number,
  r?: Reporter,
): Promise<{ trainSet: Dataset; valSet?: Dataset; trainItems: DatasetItem[]; valItems: DatasetItem[]; valFraction: number; classes: string[] }> {
  const trainSet = await openDataset(opts.data, { layout: opts.layout, label: opts.label });
  const valFraction = opts.valFraction ?? 0.2;
  if (opts.val) {
    const valSet = await openDataset(opts.val, { layout: opts.layout, label: opts.label, classes: trainSet.classes });
    return { trainSet, valSet, trainItems: trainSet.items, valItems: valSet.items, valFraction, classes: trainSet.classes };
  }
  const split = stratifiedSplit(trainSet.items, valFraction, seed);
  r?.info?.(`validation: a seeded stratified split of the training images (${Math.round(valFraction * 100)}%, seed ${seed}; give a validation folder to use your own)`);
  return { trainSet, trainItems: split.train, valItems: split.val, valFraction, classes: trainSet.classes };
}

/**
 * Transfer learning by feature extraction, end to end: open the data, run the frozen backbone (cached), train a
 * head on the pooled features, evaluate on the validation set and write a run directory.
 */
export async function trainRun(opts: TrainRunOptions): Promise<TrainRunResult> {
  const out = await checkRunOut(opts.out, runInputs(opts));
  return withRunLock(out, () => trainRunLocked(opts));
}

/** The folders a run reads, which its `--out` must not be inside of (nor hold). */
export function runInputs(opts: { data: string; val?: string }): { flag: string; path: string }[] {
  return [{ flag: 'dataset', path: opts.data }, ...(opts.val ? [{ flag: '--val', path: opts.val }] : [])];
}

async function trainRunLocked(opts: TrainRunOptions): Promise<TrainRunResult> {
  const r = opts.reporter;
  const seed = opts.seed ?? 0;
  const { trainSet, valSet, trainItems, valItems, valFraction, classes } = await openTrainVal(opts, seed, r);

  const q = opts.int8 ? await int8Model(opts.model, trainItems.map((i) => i.path), { resolve: opts.backbone, reporter: r, signal: opts.signal }) : undefined;
  const backbone = await Backbone.load(q ? q.path : opts.model, opts.backbone);
  for (const w of backbone.ref.warnings) r?.warn?.(w);
  try {
    const t0 = performance.now();
    const common = { batchSize: opts.batchSize, cache: opts.cache, reporter: r, queue: opts.queue, signal: opts.signal, tta: opts.tta };
    const trainRes = await runExtraction(backbone, trainItems.map((i) => i.path), { ...common, task: 'train features' });
    const valRes = await runExtraction(backbone, valItems.map((i) => i.path), { ...common, task: 'val features' });
    const tFeat = (performance.now() - t0) / 1000;
    const train = toFeatureSet(trainItems, trainRes);
    const val = toFeatureSet(valItems, valRes);
    const skipped = [...trainSet.skipped, ...(valSet?.skipped ?? []), ...trainRes.skipped, ...valRes.skipped];
    if (skipped.length) r?.warn?.(`${skipped.length} files skipped (unreadable); see ${join(opts.out, RUN_FILES.skipped)}`);

    const t1 = performance.now();
    const headOpts: Partial<TrainOptions> = { seed, ...opts.head };
    r?.start?.('training', headOpts.epochs ?? 100, 'epoch');
    const trained = await trainHead(train, val.n > 0 ? val : undefined, classes, {
      ...headOpts,
      onEpoch: (e) => {
        if (opts.signal?.aborted) throw new InterruptedError('training interrupted');
        opts.onEpoch?.(e);
        r?.update?.('training', e.epoch, e.valAcc !== undefined ? `val acc ${e.valAcc.toFixed(4)}` : undefined);
      },
    } as TrainOptions);
    r?.end?.('training');
    const tTrain = (performance.now() - t1) / 1000;

    const proba = await trained.head.predictProba(val.x, val.n);
    const validation = evaluate(proba, val.y, classes, val.items, opts.topWrong ?? 12);
    const validationPredictions = predictionsOf(proba, val, classes.length);

    const kind = trained.head.kind;
    const refit = (opts.refit ?? !opts.val) && kind !== 'knn' && val.n > 0;
    let head = trained.head;
    let refitInfo: { epochs: number; images: number } | undefined;
    if (refit) {
      // At least 10 epochs: on a split of a few images the best epoch is noise (24 Cats vs Dogs photos, seed 0: best
      // epoch 1 of 4 validation images, a 1-epoch refit scored 0.675 on the 1000 validation photos, 10 epochs 0.90).
      const epochs = Math.min(Math.max(10, Math.round(trained.bestEpoch * 1.25)), Math.max(headOpts.epochs ?? 100, trained.bestEpoch));
      const all: FeatureSet = { x: concat(train.x, val.x), n: train.n + val.n, d: train.d, y: Int32Array.from([...train.y, ...val.y]), items: [...train.items, ...val.items] };
      if (opts.signal?.aborted) throw new InterruptedError('training interrupted');
      head = (await trainHead(all, undefined, classes, { ...headOpts, epochs } as TrainOptions)).head;
      await trained.head.dispose();
      refitInfo = { epochs, images: all.n };
      r?.info?.(`refitted the head on all ${all.n} images for ${epochs} epochs (the validation numbers are those of the head chosen before, on images it did not train on)`);
    }

    const info = backbone.ref.onnx.info;
    const config: RunConfig = {
      format: RUN_FORMAT,
      version: RUN_VERSION,
      createdAt: new Date().toISOString(),
      model: { source: opts.model, ...runModelPaths(opts.out, backbone.ref.path), sha256: info.sha256, featureTensor: backbone.ref.featureTensor },
      preprocess: backbone.spec,
      classes,
      data: runData(opts, trainSet.layout, valFraction, seed, { train: train.n, val: val.n }),
      head: { ...headOpts, kind: trained.head.kind, bestEpoch: trained.bestEpoch, stoppedEarly: trained.stoppedEarly, ...(refitInfo && { refit: refitInfo }) },
      ...(opts.tta && { tta: opts.tta }),
      ...(q && { int8: { floatSha256: q.floatSha256, calibrationImages: q.calibration.images } }),
    };
    await commitRunFolder(opts.out, async (dir) => {
      await writeJsonAtomic(join(dir, RUN_FILES.metrics), { validation, bestEpoch: trained.bestEpoch, ...(refitInfo && { refit: refitInfo }), seconds: { features: tFeat, training: tTrain }, validationPredictions });
      await writeJsonAtomic(join(dir, RUN_FILES.history), trained.history);
      await writeJsonAtomic(join(dir, RUN_FILES.skipped), skipped);
      await confusionMatrixPng(validation.confusion, classes, join(dir, RUN_FILES.confusion), 'validation');
      if (trained.history.length > 0) await trainingCurvePng(trained.history, join(dir, RUN_FILES.curves));
      await topLossesPng(validation.mostConfidentlyWrong, join(dir, RUN_FILES.topLosses), { title: 'validation: most confidently wrong' });
      await saveRun(dir, config, head); // config last
    });
    return {
      dir: opts.out,
      head,
      ...(refitInfo && { refit: refitInfo }),
      history: trained.history,
      bestEpoch: trained.bestEpoch,
      stoppedEarly: trained.stoppedEarly,
      validation,
      skipped,
      counts: { train: train.n, val: val.n },
      seconds: { features: tFeat, training: tTrain },
    };
  } finally {
    await backbone.dispose();
  }
}
