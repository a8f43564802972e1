/**
 * What a fine-tuning run is given and how it is set: the data (cut tensors), the settings (plain values, saved with
 * the run), the options a call brings at run time, the defaults measured for them, and each epoch's seeded order.
 */
import { z } from 'zod';
import type { LoadedOnnx } from '../models/onnx-file.js';
import { GraftError } from '../errors.js';
import { deriveSeed, mulberry32, shuffleInPlace } from '../util/random.js';
import type { Callback } from './fit.js';
import type { EpochLog, Head } from './heads.js';

export interface CutSet {
  /** n rows of prod(shape) floats: the cut tensor of each image (NCHW without the batch axis). */
  x: Float32Array;
  n: number;
  y: Int32Array;
  /** Augmented views for training: K arrays laid out like `x` (same rows, same order). */
  views?: Float32Array[];
}

/** Fine-tuning schedules (optim.ts also has 'constant', what frozen heads use). */
export type Schedule = 'cosine' | 'onecycle';

/** What fine-tuning trains on: the model, where it is cut, the cached cut tensors and the classes. */
export interface FinetuneData {
  /** The full original model. */
  model: LoadedOnnx;
  /** The pooled feature tensor ([N, d]) the head reads. */
  featureTensor: string;
  /** The tensor the trained suffix starts from (the cached prefix output), and its shape without the batch axis. */
  cut: string;
  cutShape: number[];
  train: CutSet;
  val?: CutSet;
  classes: string[];
}

/** The settings of a fine-tuning run: plain values, saved with the run and checked when read back. */
export interface FinetuneSettingsInput {
  /** Maximum epochs (default 5). */
  epochs?: number;
  /** Default 32. */
  batchSize?: number;
  /** Head learning rate (default 1e-4; the peak rate for one-cycle). */
  lr?: number;
  /** Backbone learning rate = lr × this (default 0.1: discriminative learning rates). */
  backboneLrFactor?: number;
  /** AdamW decoupled weight decay on weights, not biases (default 1e-4). */
  weightDecay?: number;
  /** 'cosine': linear warmup then cosine decay to 0 (default); 'onecycle': fastai's fit_one_cycle (lr and momentum). */
  schedule?: Schedule;
  /** Share of the steps spent warming up (default 0.1 for cosine, 0.25 for one-cycle). */
  warmup?: number;
  /** Default 0 (see DEFAULTS). */
  labelSmoothing?: number;
  /** The head: 'linear' (default) or 'mlp' (one hidden ReLU layer, as `graft train --head mlp`). */
  head?: 'linear' | 'mlp';
  /** Hidden units of an mlp head (default 256). */
  hidden?: number;
  /** Dropout before the head's last layer (default 0). */
  dropout?: number;
  /** Clip gradients to this global L2 norm (default 1; 0 = off). */
  clipNorm?: number;
  /** Early stopping patience on validation loss (default 3; Infinity = never stop early). */
  patience?: number;
  /** Weight each image's loss by n / (C · n_class), so rare classes count as much as common ones (default false). */
  balance?: boolean;
  /**
   * Also train batch-norm scale and shift, and run real BatchNormalization nodes in training mode (batch statistics,
   * running statistics updated; see the file comment). Default false: batch norm frozen, in inference mode.
   */
  trainBn?: boolean;
  seed?: number;
  /** Maximum epochs of the linear probe that initialises the head (default 100, early-stopped on validation loss like
   * `graft train`'s linear head; 0 = Glorot-like small random init). */
  probeEpochs?: number;
}

/** Settings, and what a call brings at run time: where checkpoints go, Ctrl-C, progress, extra callbacks. */
export interface FinetuneOptions extends FinetuneSettingsInput {
  /** Checkpoint folder: writes last.ckpt and best.ckpt there each epoch. */
  checkpointDir?: string;
  /** Resume from `checkpointDir`/last.ckpt. */
  resume?: boolean;
  /** When aborted, the current step finishes, a mid-epoch checkpoint is written and an InterruptedError thrown. */
  signal?: AbortSignal;
  /** One-line notes on how the settings apply to this model (e.g. what `trainBn` does here). */
  onInfo?: (message: string) => void;
  /** Called once training steps begin (after the probe and the initial validation pass). */
  onStart?: () => void;
  onEpoch?: (e: EpochLog) => void;
  /** Called before the first epoch with the validation loss and accuracy of the initial (linear-probe) head. */
  onInitial?: (e: { valLoss: number; valAcc: number }) => void;
  /** More callbacks of the training loop (fit.ts), run before the NaN guard (e.g. `stopAfter(n)` to test resume). */
  callbacks?: Callback[];
}

export interface FinetuneResult {
  /** Fine-tuned initializers of the original model, by name. */
  weights: Record<string, Float32Array>;
  head: Head;
  history: EpochLog[];
  bestEpoch: number;
  stoppedEarly: boolean;
  /** Validation class probabilities with the best weights (n × C). */
  valProba?: Float32Array;
  /** perEpoch: wall time of each epoch (training steps, validation pass, checkpoints); steps: the training steps alone. */
  seconds: { perEpoch: number[]; steps: number[] };
  /** Validation loss and accuracy before fine-tuning (the linear-probe head on the frozen backbone). */
  initial?: { valLoss: number; valAcc: number };
}

export interface FinetuneSettings {
  epochs: number;
  batchSize: number;
  lr: number;
  backboneLrFactor: number;
  weightDecay: number;
  schedule: Schedule;
  warmup: number;
  labelSmoothing: number;
  head: 'linear' | 'mlp';
  hidden: number;
  dropout: number;
  clipNorm: number;
  patience: number;
  balance: boolean;
  trainBn: boolean;
  seed: number;
  probeEpochs: number;
}

/**
 * Defaults, measured on Cats vs Dogs 2000/1000 with the shared MobileNet (linear probe alone: 0.988). The head
 * starts from a linear probe trained without dropout or smoothing, so label smoothing 0.1 + dropout 0.2 first pull it
 * away (val acc 0.970-0.979 after 1-3 epochs), and a head lr of 1e-3 is too high (0.986 then 0.971). With lr 1e-4,
 * no smoothing, no dropout: last block 0.989 (backbone factor 0.1) / 0.991 (factor 1); last 2 blocks 0.989
 * (factor 0.1) / 0.985 (factor 1: unstable). Hence backbone lr = head lr / 10.
 */
const DEFAULTS: Omit<FinetuneSettings, 'warmup'> = {
  epochs: 5,
  batchSize: 32,
  lr: 1e-4,
  backboneLrFactor: 0.1,
  weightDecay: 1e-4,
  schedule: 'cosine',
  labelSmoothing: 0,
  head: 'linear',
  hidden: 256,
  dropout: 0,
  clipNorm: 1,
  patience: 3,
  balance: false,
  trainBn: false,
  seed: 0,
  probeEpochs: 100,
};

/** Only the settings of `o` (no checkpoint folder, signal or callbacks): what a run saves. */
export function settingsOnly(o: FinetuneOptions | undefined): FinetuneSettingsInput {
  const keys = [...Object.keys(DEFAULTS), 'warmup'] as (keyof FinetuneSettingsInput)[];
  return Object.fromEntries(keys.filter((k) => o?.[k] !== undefined).map((k) => [k, o![k]])) as FinetuneSettingsInput;
}

export function finetuneSettings(o: FinetuneSettingsInput): FinetuneSettings {
  const pick = <K extends keyof FinetuneSettings>(k: K, d: FinetuneSettings[K]): FinetuneSettings[K] => (o[k] !== undefined ? (o[k] as FinetuneSettings[K]) : d);
  const schedule = pick('schedule', DEFAULTS.schedule);
  const s: FinetuneSettings = {
    epochs: pick('epochs', DEFAULTS.epochs),
    batchSize: pick('batchSize', DEFAULTS.batchSize),
    lr: pick('lr', DEFAULTS.lr),
    backboneLrFactor: pick('backboneLrFactor', DEFAULTS.backboneLrFactor),
    weightDecay: pick('weightDecay', DEFAULTS.weightDecay),
    schedule,
    warmup: pick('warmup', schedule === 'onecycle' ? 0.25 : 0.1),
    labelSmoothing: pick('labelSmoothing', DEFAULTS.labelSmoothing),
    head: pick('head', DEFAULTS.head),
    hidden: pick('hidden', DEFAULTS.hidden),
    dropout: pick('dropout', DEFAULTS.dropout),
    clipNorm: pick('clipNorm', DEFAULTS.clipNorm),
    patience: pick('patience', DEFAULTS.patience),
    balance: pick('balance', DEFAULTS.balance),
    trainBn: pick('trainBn', DEFAULTS.trainBn),
    seed: pick('seed', DEFAULTS.seed),
    probeEpochs: pick('probeEpochs', DEFAULTS.probeEpochs),
  };
  if (schedule !== 'cosine' && schedule !== 'onecycle') throw new GraftError(`schedule must be 'cosine' or 'onecycle' (got ${schedule})`);
  if (s.head !== 'linear' && s.head !== 'mlp') throw new GraftError(`a fine-tuned head is 'linear' or 'mlp' (got ${String(s.head)}; a kNN head has no gradient)`);
  if (!(Number.isInteger(s.hidden) && s.hidden >= 1)) throw new GraftError(`hidden units must be an integer >= 1 (got ${s.hidden})`);
  if (!(s.dropout >= 0 && s.dropout < 1)) throw new GraftError(`dropout must be in [0, 1) (got ${s.dropout})`);
  if (!(s.labelSmoothing >= 0 && s.labelSmoothing < 1)) throw new GraftError(`label smoothing must be in [0, 1) (got ${s.labelSmoothing})`);
  if (!(s.warmup >= 0 && s.warmup < 1)) throw new GraftError(`warmup must be in [0, 1) (got ${s.warmup})`);
  if (!(s.lr > 0)) throw new GraftError(`learning rate must be > 0 (got ${s.lr})`);
  if (!(Number.isInteger(s.epochs) && s.epochs >= 1)) throw new GraftError(`epochs must be an integer >= 1 (got ${s.epochs})`);
  if (!(Number.isInteger(s.batchSize) && s.batchSize >= 1)) throw new GraftError(`batch size must be an integer >= 1 (got ${s.batchSize})`);
  return s;
}

/** The epoch's order of training rows and, with augmented views, which view each position uses. */
export function epochPlan(train: CutSet, seed: number, epoch: number): { order: Int32Array; viewOf?: Int32Array } {
  const order = shuffleInPlace(Int32Array.from({ length: train.n }, (_, i) => i), mulberry32(deriveSeed(seed, 1000 + epoch)));
  const K = train.views?.length ?? 0;
  if (!K) return { order };
  const rng = mulberry32(deriveSeed(seed, 9000 + epoch));
  return { order, viewOf: Int32Array.from(order, () => Math.floor(rng() * K)) };
}

/** JSON writes Infinity (patience: never stop early) as null: read back as Infinity. */
const patience = z
  .number()
  .nonnegative()
  .nullable()
  .transform((v) => v ?? Infinity);

/** The resolved settings of a fine-tuning run, as files hold them (finetuneSettings checks each value). */
export const FinetuneSettingsSchema = z.object({
  epochs: z.number().int().positive(),
  batchSize: z.number().int().positive(),
  lr: z.number().positive(),
  backboneLrFactor: z.number().nonnegative(),
  weightDecay: z.number().nonnegative(),
  schedule: z.enum(['cosine', 'onecycle']),
  warmup: z.number().min(0).lt(1),
  labelSmoothing: z.number().min(0).lt(1),
  head: z.enum(['linear', 'mlp']),
  hidden: z.number().int().positive(),
  dropout: z.number().min(0).lt(1),
  clipNorm: z.number().nonnegative(),
  patience,
  balance: z.boolean(),
  trainBn: z.boolean(),
  seed: z.number().int(),
  probeEpochs: z.number().int().nonnegative(),
}) satisfies z.ZodType<FinetuneSettings, unknown>;

/** One epoch of the history (EpochLog), as a checkpoint holds it. */
const EpochLogSchema = z.object({
  epoch: z.number().int().positive(),
  trainLoss: z.number(),
  trainAcc: z.number(),
  valLoss: z.number().optional(),
  valAcc: z.number().optional(),
  lr: z.number(),
});

/** The initial metrics as a checkpoint holds them (JSON writes NaN as null); absent in checkpoints older than them. */
const SavedInitialSchema = z.object({ valLoss: z.number().nullable(), valAcc: z.number().nullable() }).nullable().optional();

/**
 * The meta of last.ckpt: where training stands. `identity` (settings, data, cut) is compared whole with the run's
 * own, so it is only required to be there.
 */
export const ProgressMetaSchema = z.object({
  identity: z.unknown().refine((v) => v !== undefined, 'missing'),
  history: z.array(EpochLogSchema),
  /** null: no validation loss yet (JSON has no Infinity). */
  bestLoss: z.number().nullable(),
  bestEpoch: z.number().int().nonnegative(),
  sinceBest: z.number().int().nonnegative(),
  epoch: z.number().int().nonnegative(),
  /** Written by an interrupted epoch: the step to continue from and the sums so far (rows: absent before it was kept). */
  partial: z.object({ epoch: z.number().int().positive(), step: z.number().int().nonnegative(), lossSum: z.number(), correct: z.number().nonnegative(), rows: z.number().int().nonnegative().optional() }).optional(),
  stopped: z.boolean().optional(),
  initial: SavedInitialSchema,
});
