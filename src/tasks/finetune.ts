import { createHash } from 'node:crypto';
import { z } from 'zod';
import { stat } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { augmentedViews, describeAugment, resolveAugmentOptions, type AugmentOptionsInput } from '../image/augment.js';
import type { DatasetItem } from '../data/index.js';
import { openTrainVal, runData, runInputs } from './train.js';
import type { BackboneOptions } from '../engine/backbone.js';
import { extractFeatures, type ExtractResult, type Skipped } from '../engine/extract.js';
import { defaultFeatureCacheDir, FeatureCache } from '../engine/feature-cache.js';
import { OrtModel } from '../engine/ort.js';
import { GraftError } from '../errors.js';
import { confusionMatrixPng, trainingCurvePng } from '../learn/charts.js';
import { cutForLastBlocks, type Block } from '../learn/blocks.js';
import { identityModel } from '../onnx/build.js';
import { replaceInitializers } from '../onnx/cut.js';
import { finetune, finetuneSettings, FinetuneSettingsSchema, lrFind, settingsOnly, type CutSet, type FinetuneOptions, type FinetuneSettingsInput, type LrFindOptions, type LrFindResult } from '../learn/finetune.js';
import { lrFinderPng } from '../learn/lr-chart.js';
import type { EpochLog, Head } from '../learn/heads.js';
import { evaluate, type Evaluation } from '../learn/metrics.js';
import { RUN_FILES, RUN_FORMAT, RUN_VERSION, runModelPaths, saveRun, type RunConfig } from '../learn/run.js';
import { topLossesPng } from '../learn/top-losses.js';
import { resolveModel } from '../models/resolve.js';
import { PreprocessSpecSchema } from '../image/spec.js';
import { readJsonFile } from '../util/json.js';
import type { LayoutName } from '../data/index.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/fs.js';
import { checkRunOut, commitRunFolder, withRunLock } from '../learn/run-folder.js';
import type { Reporter } from './reporter.js';

/** Files a fine-tuning run adds to the usual run folder. */
export const FINETUNE_FILES = {
  /** The backbone with the fine-tuned weights (same graph and outputs as the original); config.model points here. */
  model: 'model.onnx',
  /** The options the run was started with (what `--resume` reuses). */
  options: 'finetune-options.json',
  checkpoints: 'checkpoints',
} as const;

/** What fine-tuning and the LR finder need to get to the cut tensors. */
export interface FinetuneDataOptions {
  data: string;
  val?: string;
  model: string;
  /** How many of the last conv blocks to fine-tune, or 'all'. */
  blocks: number | 'all';
  layout?: LayoutName | 'auto';
  label?: 'breed' | 'species';
  valFraction?: number;
  seed?: number;
  backbone?: BackboneOptions;
  batchSize?: number;
  /** false: no cache; a string: cache root; undefined: the default cache. */
  cache?: string | false;
  /**
   * Augmentation: run the prefix over `views` augmented versions of every training image (random resized crop,
   * flip, colour jitter; seeded by the run's seed and each file's path relative to the data folder), cached like
   * plain rows; each epoch trains on one view per image. Validation images are never augmented.
   */
  augment?: { views: number; options?: AugmentOptionsInput };
  reporter?: Reporter;
}

export interface FinetuneRunOptions extends FinetuneDataOptions {
  out: string;
  finetune?: FinetuneOptions;
  topWrong?: number;
  /** Continue from <out>/checkpoints/last.ckpt. */
  resume?: boolean;
  /** Ctrl-C: the fine-tuning loop saves a checkpoint at the current step and throws InterruptedError. */
  signal?: AbortSignal;
}

export interface FinetuneRunResult {
  dir: string;
  head: Head;
  history: EpochLog[];
  bestEpoch: number;
  stoppedEarly: boolean;
  validation: Evaluation;
  skipped: Skipped[];
  counts: { train: number; val: number };
  cut: { tensor: string; shape: number[]; blocks: Block[] };
  weights: Record<string, Float32Array>;
  seconds: { prefix: number; training: number; perEpoch: number[]; steps: number[] };
  /** Validation loss/accuracy of the linear-probe head on the frozen backbone, before fine-tuning. */
  initial?: { valLoss: number; valAcc: number };
}

function toCutSet(items: DatasetItem[], res: ExtractResult): CutSet & { items: DatasetItem[] } {
  const kept = res.kept.map((i) => items[i]!);
  return { x: res.features, n: kept.length, y: Int32Array.from(kept, (it) => it.label), items: kept };
}

const pair = z.tuple([z.number(), z.number()]);

/** The backbone options a run was started with (ResolveOptions + OrtOptions without callbacks). */
const SavedBackboneSchema = z.object({
  preprocess: PreprocessSpecSchema.partial().optional(),
  labelsFile: z.string().optional(),
  featureNode: z.string().optional(),
  logitsNode: z.string().optional(),
  threads: z.number().int().positive().optional(),
  parallelism: z.enum(['workers', 'intra-op']).optional(),
  spinning: z.boolean().optional(),
});

/**
 * finetune-options.json as read back by --resume, every field checked (a hand-edited or truncated file is named with
 * the field that is wrong); the settings then go on to `finetuneSettings`.
 */
const SavedOptionsSchema = z.object({
  data: z.string(),
  val: z.string().optional(),
  model: z.string(),
  blocks: z.union([z.number().int().positive(), z.literal('all')]),
  layout: z.enum(['auto', 'folder', 'oxford-pets', 'petimages']).optional(),
  label: z.enum(['breed', 'species']).optional(),
  valFraction: z.number().optional(),
  seed: z.number().int().optional(),
  batchSize: z.number().int().positive().optional(),
  cache: z.union([z.string(), z.literal(false)]).optional(),
  augment: z
    .object({
      views: z.number().int().nonnegative(),
      options: z
        .object({
          crop: z.union([z.boolean(), z.object({ scale: pair.optional(), ratio: pair.optional() })]).optional(),
          flip: z.number().optional(),
          brightness: z.number().optional(),
          contrast: z.number().optional(),
          saturation: z.number().optional(),
        })
        .optional(),
    })
    .optional(),
  backbone: SavedBackboneSchema.optional(),
  topWrong: z.number().int().nonnegative().optional(),
  finetune: FinetuneSettingsSchema.partial().optional(),
});

type SavedOptions = Omit<FinetuneRunOptions, 'reporter' | 'resume' | 'finetune' | 'signal'> & { finetune?: FinetuneSettingsInput };

/**
 * Fine-tune the last blocks of a backbone with a linear head, end to end: open the data; run the frozen prefix on
 * ONNX Runtime up to the cut (cached on disk per image, keyed by model hash + cut tensor + preprocessing + file);
 * train the suffix and the head on ONNX Runtime (learn/finetune.ts); write a run folder whose `model.onnx` is the backbone
 * with the fine-tuned weights, so `graft predict` / `graft eval` use it like any run.
 */
interface Prepared {
  ref: Awaited<ReturnType<typeof resolveModel>>;
  cut: string;
  blocks: Block[];
  cutShape: number[];
  train: ReturnType<typeof toCutSet>;
  val: ReturnType<typeof toCutSet>;
  classes: string[];
  trainSet: Awaited<ReturnType<typeof openTrainVal>>['trainSet'];
  valSet: Awaited<ReturnType<typeof openTrainVal>>['valSet'];
  valFraction: number;
  skipped: Skipped[];
  tPrefix: number;
}

/**
 * Open the data and run the frozen prefix (ONNX Runtime) over it, up to the cut; rows are cached on disk per image,
 * keyed by model hash + cut tensor + preprocessing + file.
 */
async function prepare(opts: FinetuneDataOptions, seed: number): Promise<Prepared> {
  const r = opts.reporter;
  const { trainSet, valSet, trainItems, valItems, valFraction, classes } = await openTrainVal(opts, seed, r);
  const ref = await resolveModel(opts.model, opts.backbone);
  for (const w of ref.warnings) r?.warn?.(w);
  const { cut, blocks } = cutForLastBlocks(ref.onnx, opts.blocks, ref.featureTensor);
  const input = ref.onnx.info.inputs[0]!;
  // Cutting at the graph input ('all'): the "prefix" is the identity (the cache then holds preprocessed images).
  const prefixModel =
    cut === input.name
      ? identityModel({ name: cut, shape: input.shape }, 'prefix_out', ref.path)
      : ref.onnx;
  const prefixTensor = cut === input.name ? 'prefix_out' : cut;
  const t0 = performance.now();
  const runner = await OrtModel.create(prefixModel, [prefixTensor], opts.backbone);
  let train: ReturnType<typeof toCutSet>;
  let val: ReturnType<typeof toCutSet>;
  let cutShape: number[];
  const extraSkipped: Skipped[] = [];
  try {
    const [h, w] = ref.spec.size;
    const probe = await runner.run(new Float32Array(3 * h * w), ref.spec.layout === 'NCHW' ? [1, 3, h, w] : [1, h, w, 3]);
    cutShape = probe[prefixTensor]!.dims.slice(1);
    if (cutShape.length !== 3) throw new GraftError(`${ref.path}: the cut tensor '${cut}' has shape [${probe[prefixTensor]!.dims}], expected [N, C, H, W]`);
    const cache = opts.cache === false ? undefined : new FeatureCache(opts.cache ?? defaultFeatureCacheDir(), ref.onnx.info.sha256, `cut:${cut}`, ref.spec);
    if (cache) cache.onWriteError = (m) => r?.warn?.(m);
    // The probe gave the row length: cached rows of another length are recomputed (no second probe).
    const per = cutShape.reduce((a, b) => a * b, 1);
    const extract = async (items: DatasetItem[], task: string) => {
      r?.start?.(task, items.length, 'img');
      const res = await extractFeatures(runner, prefixTensor, ref.spec, items.map((i) => i.path), {
        batchSize: opts.batchSize,
        cache,
        dim: per,
        onProgress: (p) => r?.update?.(task, p.done, p.fromCache ? `${p.fromCache} from cache` : undefined),
      });
      r?.end?.(task);
      if (res.fromCache) r?.info?.(`${task}: ${res.fromCache} of ${items.length} images served from the cache (${cache?.dir})`);
      extraSkipped.push(...res.skipped);
      return toCutSet(items, res);
    };
    train = await extract(trainItems, 'train prefix');
    val = await extract(valItems, 'val prefix');
    const K = opts.augment?.views ?? 0;
    if (K > 0) {
      const aug = resolveAugmentOptions(opts.augment?.options);
      r?.info?.(`augmentation: ${K} view(s) of each training image: ${describeAugment(aug)}`);
      const root = resolve(opts.data);
      const keys = train.items.map((it) => relative(root, resolve(it.path)));
      const params = augmentedViews(keys, K, seed, aug);
      train.views = [];
      for (let k = 0; k < K; k++) {
        const task = `train view ${k + 1}/${K}`;
        r?.start?.(task, train.n, 'img');
        const res = await extractFeatures(runner, prefixTensor, ref.spec, train.items.map((i) => i.path), {
          batchSize: opts.batchSize,
          cache,
          dim: per,
          augment: params.map((p) => p[k]!),
          onProgress: (p) => r?.update?.(task, p.done, p.fromCache ? `${p.fromCache} from cache` : undefined),
        });
        r?.end?.(task);
        // A file that decoded once decodes again; should a view still fail, that image trains on its plain row.
        const rows = train.x.slice();
        res.kept.forEach((i, j) => rows.set(res.features.subarray(j * per, (j + 1) * per), i * per));
        train.views.push(rows);
      }
    }
  } finally {
    await runner.dispose();
  }
  const skipped = [...trainSet.skipped, ...(valSet?.skipped ?? []), ...extraSkipped];
  if (train.n === 0) throw new GraftError(`${opts.data}: no readable training images`);
  return { ref, cut, blocks, cutShape, train, val, classes, trainSet, valSet, valFraction, skipped, tPrefix: (performance.now() - t0) / 1000 };
}

export async function finetuneRun(opts: FinetuneRunOptions): Promise<FinetuneRunResult> {
  const out = await checkRunOut(opts.out, runInputs(opts));
  return withRunLock(out, () => finetuneRunLocked(opts));
}

async function finetuneRunLocked(opts: FinetuneRunOptions): Promise<FinetuneRunResult> {
  const r = opts.reporter;
  const seed = opts.seed ?? 0;
  const settings = finetuneSettings({ seed, ...opts.finetune }); // bad settings fail before any image is read
  const { ref, cut, blocks, cutShape, train, val, classes, trainSet, valFraction, skipped, tPrefix } = await prepare(opts, seed);
  // Written once the data is known to be usable, so a failed start leaves no half-made run folder.
  if (!opts.resume) {
    const { reporter: _r, resume: _s, signal: _sig, finetune: ft, ...rest } = opts;
    const saved: SavedOptions = { ...rest, finetune: settingsOnly(ft) };
    await writeJsonAtomic(join(opts.out, FINETUNE_FILES.options), saved);
  }
  if (skipped.length) r?.warn?.(`${skipped.length} files skipped (unreadable); see ${join(opts.out, RUN_FILES.skipped)}`);
  opts.signal?.throwIfAborted?.();

  const t1 = performance.now();
  r?.start?.('fine-tuning', settings.epochs, 'epoch');
  const res = await finetune({ model: ref.onnx, featureTensor: ref.featureTensor, cut, cutShape, train, val: val.n > 0 ? val : undefined, classes }, {
    ...opts.finetune,
    seed: settings.seed,
    checkpointDir: join(opts.out, FINETUNE_FILES.checkpoints),
    resume: opts.resume,
    signal: opts.signal,
    onInfo: (m) => {
      r?.info?.(m);
      opts.finetune?.onInfo?.(m);
    },
    onInitial: (e) => {
      r?.info?.(`before fine-tuning (linear probe on frozen features): val acc ${e.valAcc.toFixed(4)}, val loss ${e.valLoss.toFixed(4)}`);
      opts.finetune?.onInitial?.(e);
    },
    onEpoch: (e) => {
      r?.update?.('fine-tuning', e.epoch, e.valAcc !== undefined ? `val acc ${e.valAcc.toFixed(4)}, val loss ${e.valLoss!.toFixed(4)}` : undefined);
      opts.finetune?.onEpoch?.(e);
    },
  });
  r?.end?.('fine-tuning');
  const tTrain = (performance.now() - t1) / 1000;

  const proba = res.valProba ?? new Float32Array(0);
  const validation = evaluate(proba, val.y, classes, val.items, opts.topWrong ?? 12);

  const bytes = replaceInitializers(ref.onnx, res.weights);
  const modelPath = resolve(opts.out, FINETUNE_FILES.model);
  const config: RunConfig = {
    format: RUN_FORMAT,
    version: RUN_VERSION,
    createdAt: new Date().toISOString(),
    model: { source: opts.model, ...runModelPaths(opts.out, modelPath), sha256: createHash('sha256').update(bytes).digest('hex'), featureTensor: ref.featureTensor },
    preprocess: ref.spec,
    classes,
    data: runData(opts, trainSet.layout, valFraction, seed, { train: train.n, val: val.n }),
    head: {
      kind: settings.head,
      bestEpoch: res.bestEpoch,
      stoppedEarly: res.stoppedEarly,
      finetune: {
        blocks: opts.blocks,
        cut,
        cutShape,
        convs: blocks.flatMap((b) => b.convs),
        trained: Object.keys(res.weights),
        baseModel: { path: resolve(ref.path), sha256: ref.onnx.info.sha256 },
        augment: opts.augment?.views ? { views: opts.augment.views, ...resolveAugmentOptions(opts.augment.options) } : null,
        ...settings,
      },
    },
  };
  // Everything is written into a staging folder and put in place at once, the checkpoints carried over: a full disk
  // while writing the PNGs leaves the folder as it was (resumable), not a config.json without pictures.
  await commitRunFolder(opts.out, async (dir) => {
    await writeFileAtomic(join(dir, FINETUNE_FILES.model), bytes);
    await writeJsonAtomic(join(dir, RUN_FILES.metrics), {
      validation,
      bestEpoch: res.bestEpoch,
      initial: res.initial,
      seconds: { prefix: tPrefix, training: tTrain, perEpoch: res.seconds.perEpoch, steps: res.seconds.steps },
    });
    await writeJsonAtomic(join(dir, RUN_FILES.history), res.history);
    await writeJsonAtomic(join(dir, RUN_FILES.skipped), skipped);
    if (val.n > 0) {
      await confusionMatrixPng(validation.confusion, classes, join(dir, RUN_FILES.confusion), 'validation');
      await topLossesPng(validation.mostConfidentlyWrong, join(dir, RUN_FILES.topLosses), { title: 'validation: most confidently wrong' });
    }
    if (res.history.length > 0) await trainingCurvePng(res.history, join(dir, RUN_FILES.curves));
    await saveRun(dir, config, res.head); // config last
  }, [FINETUNE_FILES.checkpoints, FINETUNE_FILES.options]);
  return {
    dir: opts.out,
    head: res.head,
    history: res.history,
    bestEpoch: res.bestEpoch,
    stoppedEarly: res.stoppedEarly,
    validation,
    skipped,
    counts: { train: train.n, val: val.n },
    cut: { tensor: cut, shape: cutShape, blocks },
    weights: res.weights,
    seconds: { prefix: tPrefix, training: tTrain, perEpoch: res.seconds.perEpoch, steps: res.seconds.steps },
    initial: res.initial,
  };
}

/** Continue a fine-tuning run from its last checkpoint, with the options it was started with. */
export async function resumeFinetuneRun(dir: string, extra: Pick<FinetuneRunOptions, 'reporter' | 'signal'> & { finetune?: Pick<FinetuneOptions, 'onEpoch' | 'callbacks' | 'onStart'> } = {}): Promise<FinetuneRunResult> {
  const p = join(dir, FINETUNE_FILES.options);
  if (!(await stat(p).catch(() => undefined))) throw new GraftError(`${dir}: not a fine-tuning run to resume (${FINETUNE_FILES.options} missing)`);
  const saved = await readJsonFile(p, SavedOptionsSchema, 'fine-tuning options file');
  return finetuneRun({ ...saved, out: dir, reporter: extra.reporter, signal: extra.signal, resume: true, finetune: { ...saved.finetune, ...extra.finetune } });
}

export interface LrFindRunOptions extends FinetuneDataOptions {
  /** PNG of loss against learning rate. */
  out: string;
  sweep?: LrFindOptions;
  signal?: AbortSignal;
}

export interface LrFindRunResult extends LrFindResult {
  png: string;
  counts: { train: number; val: number };
  cut: { tensor: string; shape: number[]; blocks: number };
}

/**
 * `graft lr-find`: the same data, cut and starting head as `graft train --finetune N` would use, a short training
 * run with an exponentially growing learning rate, and the picture of loss against learning rate.
 */
export async function lrFindRun(opts: LrFindRunOptions): Promise<LrFindRunResult> {
  const r = opts.reporter;
  const seed = opts.seed ?? 0;
  const p = await prepare(opts, seed);
  if (p.skipped.length) r?.warn?.(`${p.skipped.length} files skipped (unreadable)`);
  const steps = opts.sweep?.steps ?? 100;
  r?.start?.('lr sweep', steps, 'step');
  const res = await lrFind({ model: p.ref.onnx, featureTensor: p.ref.featureTensor, cut: p.cut, cutShape: p.cutShape, train: p.train, val: p.val.n > 0 ? p.val : undefined, classes: p.classes }, {
    seed,
    ...opts.sweep,
    signal: opts.signal,
    onStep: (i, lr, loss) => {
      r?.update?.('lr sweep', i + 1, `lr ${lr.toExponential(1)} loss ${loss.toFixed(3)}`);
      opts.sweep?.onStep?.(i, lr, loss);
    },
  });
  r?.end?.('lr sweep');
  await lrFinderPng(res, opts.out, `learning-rate finder: last ${p.blocks.length} block(s) + linear head, ${p.train.n} images`);
  return { ...res, png: opts.out, counts: { train: p.train.n, val: p.val.n }, cut: { tensor: p.cut, shape: p.cutShape, blocks: p.blocks.length } };
}
