/**
 * Fine-tuning the top of a backbone together with a linear head.
 *
 * The graph is split at a "cut" tensor (the input of the first fine-tuned block): the frozen prefix is a pure function
 * of the image and runs on ONNX Runtime once per image (its output cached on disk, see tasks/finetune.ts); the
 * trainable suffix is rebuilt as its own ONNX graph whose input is the cut tensor (blocks.ts), and runs on the
 * differentiable TF.js executor. The suffix's convolution weights and biases train; batch norm runs in inference mode
 * (statistics frozen: the known Keras pitfall avoided by default). With `trainBn` its affine scale/shift train too,
 * and real BatchNormalization nodes run in training mode in the training steps (PyTorch's convention: normalise
 * with the batch mean and biased variance, gradients through both; running mean/var updated after each step with
 * the node's ONNX momentum m, running = m·running + (1−m)·batch, using the unbiased batch variance), while the
 * validation and feature passes use the running statistics. The statistics are checkpointed and exported with the
 * weights. Batch norm already folded into Mul/Add constants (PyTorch exports) has no statistics: only scale/shift.
 *
 * Training: linear head on the pooled features (initialised from a linear probe on the frozen features, trained like
 * `graft train`'s linear head, then trained jointly), dropout before it, softmax cross-entropy with label smoothing
 * and optional class weights, AdamW (decoupled weight decay on weights, not biases), discriminative learning rates
 * (backbone = head × backboneLrFactor), warmup + cosine or one-cycle schedule per step, gradient clipping by global
 * norm, early stopping on validation loss (best weights restored). With augmented views (K cut tensors per image),
 * each epoch draws one view per image. All randomness is derived from (seed, epoch, step), so a run resumed from
 * any checkpoint — end of an epoch (kill -9) or mid-epoch (Ctrl-C, `signal`) — equals an uninterrupted one.
 * Checkpoints (best, last) are written atomically; a NaN/Inf loss stops with a GraftError and leaves the last good
 * checkpoint in place.
 */
import { z } from 'zod';
import { GraftError, InterruptedError } from '../errors.js';
import type { LoadedOnnx } from '../models/onnx-file.js';
import { deriveSeed, mulberry32, shuffleInPlace } from '../util/random.js';
import { readCheckpoint, writeCheckpoint } from './checkpoint.js';
import { FinetuneSession } from './finetune-session.js';
import { scheduleAt } from './optim.js';
import { EarlyStopping, fit, progress, type Callback, type FitOptions, type FitState, type Problem, type StepOutcome } from './fit.js';
import type { EpochLog, Head } from './heads.js';
import { accuracyOf, logLoss } from './metrics.js';

export { classWeights } from './metrics.js';
export { adamwUpdate, scheduleAt, type AdamParam } from './optim.js';

export { bnAffineNames, bnStatNames, convWeightNames, cutForLastBlocks, listBlocks, type Block } from './blocks.js';
export { replaceInitializers, suffixModel } from '../onnx/cut.js';
export { readCheckpoint, writeCheckpoint } from './checkpoint.js';

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
function epochPlan(train: CutSet, seed: number, epoch: number): { order: Int32Array; viewOf?: Int32Array } {
  const order = shuffleInPlace(Int32Array.from({ length: train.n }, (_, i) => i), mulberry32(deriveSeed(seed, 1000 + epoch)));
  const K = train.views?.length ?? 0;
  if (!K) return { order };
  const rng = mulberry32(deriveSeed(seed, 9000 + epoch));
  return { order, viewOf: Int32Array.from(order, () => Math.floor(rng() * K)) };
}


/** The initial metrics as a checkpoint holds them (JSON writes NaN as null). */
const SavedInitialSchema = z.object({ valLoss: z.number().nullable(), valAcc: z.number().nullable() }).nullable();

/**
 * Fine-tune the suffix (cut → `featureTensor`, pooled [N, d]) with a linear head. `model` is the full original
 * model; `cut` and `cutShape` (without batch axis) say where the cached prefix output comes in.
 */
export async function finetune(data: FinetuneData, opts: FinetuneOptions = {}): Promise<FinetuneResult> {
  const o = finetuneSettings(opts);
  const { train, val, classes, cut, cutShape } = data;
  const hasVal = !!val && val.n > 0;
  const sess = await FinetuneSession.create({ ...data, val: hasVal ? val : undefined }, o, opts.onInfo);
  try {
    const C = classes.length;
    const steps = Math.ceil(train.n / o.batchSize);
    const total = steps * o.epochs;
    const validate = async () => {
      if (!hasVal) return undefined;
      const p = await sess.proba(val!);
      return { valLoss: logLoss(p, val!.y, C), valAcc: accuracyOf(p, val!.y, C) };
    };

    let plan: { epoch: number; order: Int32Array; viewOf?: Int32Array } = { epoch: 0, order: new Int32Array(0) };
    const epochSeconds: number[] = [];
    const stepSeconds: number[] = [];
    let t0 = performance.now();
    const problem: Problem = {
      stepsPerEpoch: steps,
      async step(epoch, s, t) {
        if (plan.epoch !== epoch) plan = { epoch, ...epochPlan(train, o.seed, epoch) };
        const { lr, beta1 } = scheduleAt(o, total, t);
        return sess.trainStep(train, plan, epoch, s, lr, beta1, t);
      },
      async validate() {
        stepSeconds.push((performance.now() - t0) / 1000);
        return validate();
      },
      lrAt: (t) => scheduleAt(o, total, t).lr,
    };

    const early = new EarlyStopping(o.patience, () => sess.snapshot(false));
    const ckDir = opts.checkpointDir;
    const checkpoint = ckDir ? new FinetuneCheckpoint(ckDir, { cut, cutShape, trainable: sess.trainable, classes, settings: o, trainCount: train.n, views: train.views?.length ?? 0 }, sess, early) : undefined;
    if (opts.resume && !checkpoint) throw new GraftError('resume needs a checkpoint folder');
    const start = opts.resume ? await checkpoint!.resume(o.epochs) : undefined;
    let initial = start?.initial;
    if (hasVal && !start) {
      // Computed once, at the start of the run, on the probe head; checkpoints carry it so that a resumed run still
      // reports it (the weights have moved since: it cannot be computed again).
      initial = await validate();
      opts.onInitial?.(initial!);
    }
    if (checkpoint) checkpoint.initial = initial;
    opts.onStart?.();

    // Wall time of each epoch (steps, validation, checkpoints) and of its steps alone (timed up to validation).
    let clockEpoch = 0;
    const clockStart: Callback = {
      beforeStep: (state) => {
        if (clockEpoch !== state.epoch) (clockEpoch = state.epoch), (t0 = performance.now());
      },
    };
    const clockStop: Callback = { afterEpoch: () => void epochSeconds.push((performance.now() - t0) / 1000) };
    const callbacks: Callback[] = [
      ...(opts.signal ? [interrupt(opts.signal, checkpoint)] : []),
      clockStart,
      // Before the guard, so that a callback replacing a step's outcome (a test's loss hook) is guarded too.
      ...(opts.callbacks ?? []),
      nanGuard(checkpoint?.lastPath),
      early,
      ...(checkpoint ? [checkpoint] : []),
      clockStop,
      progress(opts.onEpoch),
    ];
    const state = await fit(problem, { epochs: o.epochs, start: start?.fit }, callbacks);
    if (early.best) sess.restore(early.best, false);
    const { weights, head } = sess.result({ bestEpoch: early.bestEpoch, ...o });
    const valProba = hasVal ? await sess.proba(val!) : undefined;
    return { weights, head, history: state.history, bestEpoch: early.bestEpoch, stoppedEarly: early.stoppedEarly, valProba, seconds: { perEpoch: epochSeconds, steps: stepSeconds }, initial };
  } finally {
    await sess.dispose();
  }
}

/** Fine-tuning stops at a non-finite loss or gradient, naming the step; the last good checkpoint stays. */
function nanGuard(lastPath: string | undefined): Callback {
  return {
    afterStep(state, r) {
      if (r.finite) return;
      const kept = lastPath && state.history.length ? `; the last good checkpoint (epoch ${state.history.length}) is kept in ${lastPath}` : '';
      throw new GraftError(`fine-tuning diverged: the loss is ${Number.isFinite(r.loss) ? 'finite but the gradients are not' : r.loss} at epoch ${state.epoch}, step ${state.step + 1}${kept}`);
    },
  };
}

/** Ctrl-C (an aborted signal): the step under way has finished; save a mid-epoch checkpoint and stop. */
function interrupt(signal: AbortSignal, checkpoint: FinetuneCheckpoint | undefined): Callback {
  return {
    async beforeStep(state) {
      if (!signal.aborted) return;
      if (!checkpoint) throw new InterruptedError('fine-tuning interrupted (no checkpoint folder: nothing saved)');
      await checkpoint.writePartial(state);
      throw new InterruptedError(`fine-tuning interrupted at epoch ${state.epoch}, step ${state.step} of ${checkpoint.steps}; saved ${checkpoint.lastPath} (continue with: graft train --resume ${checkpoint.dir.replace(/\/checkpoints$/, '')})`);
    },
  };
}

/** The checkpoint state as JSON keeps it (JSON writes NaN and Infinity as null). */
const ProgressSchema = z.object({
  identity: z.unknown(),
  history: z.array(z.object({ epoch: z.number(), trainLoss: z.number().nullable(), trainAcc: z.number().nullable(), valLoss: z.number().nullable().optional(), valAcc: z.number().nullable().optional(), lr: z.number() }).passthrough()),
  bestLoss: z.number().nullable(),
  bestEpoch: z.number().int().nonnegative(),
  sinceBest: z.number().int().nonnegative(),
  epoch: z.number().int().nonnegative(),
  stopped: z.boolean().optional(),
  partial: z.object({ epoch: z.number().int().positive(), step: z.number().int().nonnegative(), lossSum: z.number(), correct: z.number().int().nonnegative(), rows: z.number().int().nonnegative().optional() }).optional(),
});

/**
 * Checkpoints of a fine-tuning run: last.ckpt at every epoch end (and mid-epoch on Ctrl-C), best.ckpt when the
 * validation loss improves; `resume` reads them back so the run continues exactly where it stopped.
 */
class FinetuneCheckpoint implements Callback {
  readonly lastPath: string;
  readonly bestPath: string;
  initial: FinetuneResult['initial'];

  constructor(
    readonly dir: string,
    private readonly identity: Record<string, unknown>,
    private readonly sess: FinetuneSession,
    private readonly early: EarlyStopping<Record<string, Float32Array>>,
  ) {
    this.lastPath = `${dir}/last.ckpt`;
    this.bestPath = `${dir}/best.ckpt`;
  }

  /** Steps in an epoch (for messages). */
  get steps(): number {
    return Math.ceil((this.identity.trainCount as number) / (this.identity.settings as FinetuneSettings).batchSize);
  }

  private progress(history: EpochLog[]) {
    const e = this.early;
    return { identity: this.identity, history, bestLoss: Number.isFinite(e.bestLoss) ? e.bestLoss : null, bestEpoch: e.bestEpoch, sinceBest: e.sinceBest, initial: this.initial ?? null };
  }

  async writePartial(state: FitState): Promise<void> {
    await writeCheckpoint(this.lastPath, { ...this.progress(state.history), epoch: state.epoch - 1, partial: { epoch: state.epoch, step: state.step, lossSum: state.lossSum, correct: state.correct, rows: state.rows } }, this.sess.snapshot(true));
  }

  async afterEpoch(state: FitState): Promise<void> {
    if (this.early.improved) await writeCheckpoint(this.bestPath, { identity: this.identity, epoch: state.epoch }, this.early.best!);
    await writeCheckpoint(this.lastPath, { ...this.progress(state.history), epoch: state.epoch, stopped: this.early.stoppedEarly }, this.sess.snapshot(true));
  }

  /** Restore the session and the early-stopping state from last.ckpt; the loop's start point. */
  async resume(epochs: number): Promise<{ fit: NonNullable<FitOptions['start']>; initial: FinetuneResult['initial'] }> {
    const ck = await readCheckpoint(this.lastPath);
    if (JSON.stringify(ck.meta.identity) !== JSON.stringify(this.identity)) {
      throw new GraftError(`${this.lastPath}: the checkpoint was made with other settings or data; cannot resume`);
    }
    const parsed = ProgressSchema.safeParse(ck.meta);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw new GraftError(`${this.lastPath}: damaged checkpoint (${i?.path.join('.') || 'metadata'}: ${i?.message ?? 'invalid'})`);
    }
    const m = parsed.data;
    // Absent from checkpoints written before it was kept, null without a validation set.
    const saved = SavedInitialSchema.optional().safeParse(ck.meta.initial);
    if (!saved.success) throw new GraftError(`${this.lastPath}: damaged checkpoint (initial metrics: ${saved.error.issues[0]?.message ?? 'invalid'})`);
    this.sess.restore(ck.tensors, true);
    const e = this.early;
    e.bestLoss = m.bestLoss ?? Infinity;
    e.bestEpoch = m.bestEpoch;
    e.sinceBest = m.sinceBest;
    e.stoppedEarly = !!m.stopped;
    if (e.bestEpoch > 0) e.best = (await readCheckpoint(this.bestPath)).tensors;
    const history = m.history.map((h) => ({ ...h, trainLoss: h.trainLoss ?? NaN, trainAcc: h.trainAcc ?? NaN, valLoss: h.valLoss ?? undefined, valAcc: h.valAcc ?? undefined })) as EpochLog[];
    for (const h of history) for (const k of ['valLoss', 'valAcc'] as const) if (h[k] === undefined) delete h[k];
    const p = m.partial;
    const fit = p
      ? { epoch: p.epoch, step: p.step, lossSum: p.lossSum, correct: p.correct, rows: p.rows ?? Math.min(p.step * (this.identity.settings as FinetuneSettings).batchSize, this.identity.trainCount as number), history }
      : { epoch: m.stopped ? epochs + 1 : m.epoch + 1, step: 0, lossSum: 0, correct: 0, rows: 0, history };
    const initial = saved.data ? { valLoss: saved.data.valLoss ?? NaN, valAcc: saved.data.valAcc ?? NaN } : undefined;
    return { fit, initial };
  }
}

export interface LrFindOptions extends Omit<FinetuneOptions, 'epochs' | 'schedule' | 'warmup' | 'patience' | 'checkpointDir' | 'resume' | 'onEpoch' | 'callbacks'> {
  /** First learning rate of the sweep (default 1e-7). */
  minLr?: number;
  /** Last learning rate of the sweep (default 1). */
  maxLr?: number;
  /** Number of steps (default 100; the training data is cycled if it has fewer batches). */
  steps?: number;
  /** Stop when the smoothed loss exceeds this × its minimum (default 4). */
  divergeFactor?: number;
  onStep?: (i: number, lr: number, loss: number) => void;
}

export interface LrFindResult {
  /** The head learning rate of each step (the backbone's is this × backboneLrFactor). */
  lrs: number[];
  /** Raw batch losses. */
  losses: number[];
  /** Exponentially smoothed losses (bias-corrected, beta 0.98), what the picture and suggestions use. */
  smoothed: number[];
  /** Steps before the smoothed loss is trusted (it averages too few batches before). */
  settle: number;
  /** One tenth of the rate at the lowest smoothed loss (the classic rule of thumb). */
  minimumOver10: number;
  /** The rate where the smoothed loss falls fastest (per log-lr). */
  steepest: number;
  /** What we suggest for --lr: minimumOver10 (steepest is shown beside it; it is noisier on small data). */
  suggested: number;
  stoppedEarly: boolean;
}

/**
 * Learning-rate finder (Smith 2015, fastai's lr_find): train the same suffix + head as `finetune` would, from the
 * same starting point, for a few steps while the learning rate grows exponentially; record the loss. Nothing is kept.
 */
export async function lrFind(data: FinetuneData, opts: LrFindOptions = {}): Promise<LrFindResult> {
  const { train, val } = data;
  const o = finetuneSettings({ ...opts, schedule: 'cosine' });
  const minLr = opts.minLr ?? 1e-7;
  const maxLr = opts.maxLr ?? 1;
  const n = opts.steps ?? 100;
  const divergeFactor = opts.divergeFactor ?? 4;
  if (!(minLr > 0 && maxLr > minLr)) throw new GraftError(`the sweep needs 0 < min lr < max lr (got ${minLr}, ${maxLr})`);
  if (!(Number.isInteger(n) && n >= 5)) throw new GraftError(`the sweep needs at least 5 steps (got ${n})`);
  const sess = await FinetuneSession.create({ ...data, val: val && val.n > 0 ? val : undefined }, o);
  try {
    const steps = Math.ceil(train.n / o.batchSize);
    const lrAt = (t: number) => minLr * (maxLr / minLr) ** (t / (n - 1));
    let plan: { epoch: number; order: Int32Array; viewOf?: Int32Array } = { epoch: 0, order: new Int32Array(0) };
    const problem: Problem = {
      stepsPerEpoch: steps,
      step(epoch, s, t) {
        if (plan.epoch !== epoch) plan = { epoch, ...epochPlan(train, o.seed, epoch) };
        return sess.trainStep(train, plan, epoch, s, lrAt(t), 0.9, t);
      },
      lrAt,
    };
    // The smoothed loss is a mean of only a few noisy batches at first: not trusted (for the minimum, the divergence
    // test and the suggestions) before this many steps.
    const settle = Math.max(5, Math.floor(n / 10));
    const finder = lrFinder(n, settle, divergeFactor, lrAt, opts.onStep);
    const interrupted: Callback = {
      beforeStep: () => {
        if (opts.signal?.aborted) throw new InterruptedError('learning-rate sweep interrupted');
      },
    };
    await fit(problem, { epochs: Math.ceil(n / steps) }, [interrupted, finder]);
    const { lrs, smoothed, losses, stoppedEarly } = finder;
    if (lrs.length <= settle) throw new GraftError(`the loss diverged within ${lrs.length} steps; try a lower --min-lr`);
    let iMin = settle;
    for (let i = settle; i < smoothed.length; i++) if (smoothed[i]! < smoothed[iMin]!) iMin = i;
    // Steepest descent per log-lr, looked for before the minimum (after it the loss is on its way up).
    let iSteep = settle;
    let slope = Infinity;
    for (let i = settle + 1; i <= iMin; i++) {
      const g = (smoothed[i]! - smoothed[i - 1]!) / Math.log(lrs[i]! / lrs[i - 1]!);
      if (g < slope) {
        slope = g;
        iSteep = i;
      }
    }
    const minimumOver10 = lrs[iMin]! / 10;
    const steepest = lrs[iSteep]!;
    return { lrs, losses, smoothed, settle, minimumOver10, steepest, suggested: minimumOver10, stoppedEarly };
  } finally {
    await sess.dispose();
  }
}

/**
 * The learning-rate finder as a callback: records each step's rate and loss, smooths the loss (bias-corrected EMA,
 * beta 0.98), and ends training after `n` steps, at a non-finite loss, or when the smoothed loss exceeds
 * `divergeFactor` × its minimum (counted after `settle` steps).
 */
function lrFinder(n: number, settle: number, divergeFactor: number, lrAt: (t: number) => number, onStep?: (i: number, lr: number, loss: number) => void) {
  let avg = 0;
  let minSmoothed = Infinity;
  const f = {
    lrs: [] as number[],
    losses: [] as number[],
    smoothed: [] as number[],
    stoppedEarly: false,
    afterStep(state: FitState, r: StepOutcome): void {
      const i = f.lrs.length;
      if (!r.finite) {
        f.stoppedEarly = state.stop = true;
        return;
      }
      avg = 0.98 * avg + 0.02 * r.loss;
      const sm = avg / (1 - 0.98 ** (i + 1));
      const lr = lrAt(i);
      f.lrs.push(lr);
      f.losses.push(r.loss);
      f.smoothed.push(sm);
      onStep?.(i, lr, r.loss);
      if (i >= settle) minSmoothed = Math.min(minSmoothed, sm);
      if (i > settle && sm > divergeFactor * minSmoothed) f.stoppedEarly = state.stop = true;
      if (i + 1 >= n) state.stop = true;
    },
  };
  return f;
}
