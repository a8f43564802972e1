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
import type { EpochLog, Head } from './heads.js';
import { accuracyOf, logLoss } from './metrics.js';

export { classWeights } from './metrics.js';
export { adamwUpdate, type AdamParam } from './finetune-session.js';

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

export type Schedule = 'cosine' | 'onecycle';

export interface FinetuneOptions {
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
  /** Dropout before the head (default 0). */
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
  /** Checkpoint folder: writes last.ckpt and best.ckpt there each epoch. */
  checkpointDir?: string;
  /** Resume from `checkpointDir`/last.ckpt. */
  resume?: boolean;
  /** Stop after this many epochs in this call (testing resume; the schedule still uses `epochs`). */
  stopAfter?: number;
  /** When aborted, the current step finishes, a mid-epoch checkpoint is written and an InterruptedError thrown. */
  signal?: AbortSignal;
  /** One-line notes on how the settings apply to this model (e.g. what `trainBn` does here). */
  onInfo?: (message: string) => void;
  /** Called once training steps begin (after the probe and the initial validation pass). */
  onStart?: () => void;
  onEpoch?: (e: EpochLog) => void;
  /** Called before the first epoch with the validation loss and accuracy of the initial (linear-probe) head. */
  onInitial?: (e: { valLoss: number; valAcc: number }) => void;
  /** Testing: called with the loss of each step; may return a replacement (e.g. NaN) to test the guard. */
  lossHook?: (epoch: number, step: number, loss: number) => number;
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
  dropout: 0,
  clipNorm: 1,
  patience: 3,
  balance: false,
  trainBn: false,
  seed: 0,
  probeEpochs: 100,
};

export function finetuneSettings(o: FinetuneOptions): FinetuneSettings {
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
    dropout: pick('dropout', DEFAULTS.dropout),
    clipNorm: pick('clipNorm', DEFAULTS.clipNorm),
    patience: pick('patience', DEFAULTS.patience),
    balance: pick('balance', DEFAULTS.balance),
    trainBn: pick('trainBn', DEFAULTS.trainBn),
    seed: pick('seed', DEFAULTS.seed),
    probeEpochs: pick('probeEpochs', DEFAULTS.probeEpochs),
  };
  if (schedule !== 'cosine' && schedule !== 'onecycle') throw new GraftError(`schedule must be 'cosine' or 'onecycle' (got ${schedule})`);
  if (!(s.dropout >= 0 && s.dropout < 1)) throw new GraftError(`dropout must be in [0, 1) (got ${s.dropout})`);
  if (!(s.labelSmoothing >= 0 && s.labelSmoothing < 1)) throw new GraftError(`label smoothing must be in [0, 1) (got ${s.labelSmoothing})`);
  if (!(s.warmup >= 0 && s.warmup < 1)) throw new GraftError(`warmup must be in [0, 1) (got ${s.warmup})`);
  if (!(s.lr > 0)) throw new GraftError(`learning rate must be > 0 (got ${s.lr})`);
  if (!(Number.isInteger(s.epochs) && s.epochs >= 1)) throw new GraftError(`epochs must be an integer >= 1 (got ${s.epochs})`);
  if (!(Number.isInteger(s.batchSize) && s.batchSize >= 1)) throw new GraftError(`batch size must be an integer >= 1 (got ${s.batchSize})`);
  return s;
}

const annealCos = (from: number, to: number, pos: number) => to + ((from - to) / 2) * (1 + Math.cos(Math.PI * Math.min(1, Math.max(0, pos))));

/**
 * Learning rate and Adam beta1 at step t of `total`. Cosine: linear warmup to lr, cosine decay to 0, beta1 0.9.
 * One-cycle (Smith; fastai's fit_one_cycle defaults): lr from lr/25 up to lr (cosine) while beta1 goes 0.95 → 0.85,
 * then lr down to lr/1e5 while beta1 returns to 0.95.
 */
export function scheduleAt(s: Pick<FinetuneSettings, 'lr' | 'warmup' | 'schedule'>, total: number, t: number): { lr: number; beta1: number } {
  const up = Math.max(1, Math.round(s.warmup * total));
  if (s.schedule === 'onecycle') {
    if (t < up) {
      const pos = t / up;
      return { lr: annealCos(s.lr / 25, s.lr, pos), beta1: annealCos(0.95, 0.85, pos) };
    }
    const pos = (t - up) / Math.max(1, total - up);
    return { lr: annealCos(s.lr, s.lr / 1e5, pos), beta1: annealCos(0.85, 0.95, pos) };
  }
  if (t < up) return { lr: (s.lr * (t + 1)) / up, beta1: 0.9 };
  return { lr: s.lr * 0.5 * (1 + Math.cos((Math.PI * (t - up)) / Math.max(1, total - up))), beta1: 0.9 };
}


/** The epoch's order of training rows and, with augmented views, which view each position uses. */
function epochPlan(train: CutSet, seed: number, epoch: number): { order: Int32Array; viewOf?: Int32Array } {
  const order = shuffleInPlace(Int32Array.from({ length: train.n }, (_, i) => i), mulberry32(deriveSeed(seed, 1000 + epoch)));
  const K = train.views?.length ?? 0;
  if (!K) return { order };
  const rng = mulberry32(deriveSeed(seed, 9000 + epoch));
  return { order, viewOf: Int32Array.from(order, () => Math.floor(rng() * K)) };
}

/**
 * A training step awaits only promises that settle in the microtask queue (TF.js reads on wasm/cpu), so without this
 * a whole epoch (or sweep) would run without timers or signal handlers getting a turn: Ctrl-C (the abort signal)
 * would only be seen at the end of the epoch. setImmediate lets the event loop poll once per step.
 */
const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The initial metrics as a checkpoint holds them (JSON writes NaN as null). */
const SavedInitialSchema = z.object({ valLoss: z.number().nullable(), valAcc: z.number().nullable() }).nullable();

/**
 * Fine-tune the suffix (cut → `featureTensor`, pooled [N, d]) with a linear head. `model` is the full original
 * model; `cut` and `cutShape` (without batch axis) say where the cached prefix output comes in.
 */
export async function finetune(
  model: LoadedOnnx,
  featureTensor: string,
  cut: string,
  cutShape: number[],
  train: CutSet,
  val: CutSet | undefined,
  classes: string[],
  opts: FinetuneOptions = {},
): Promise<FinetuneResult> {
  const o = finetuneSettings(opts);
  const hasVal = !!val && val.n > 0;
  const sess = await FinetuneSession.create(model, featureTensor, cut, cutShape, train, hasVal ? val : undefined, classes, o, opts.onInfo);
  try {
    const C = classes.length;
    const steps = Math.ceil(train.n / o.batchSize);
    const total = steps * o.epochs;

    let history: EpochLog[] = [];
    let bestLoss = Infinity;
    let bestEpoch = 0;
    let best: Record<string, Float32Array> | undefined;
    let startEpoch = 1;
    let startStep = 0;
    let partialSums = { lossSum: 0, correct: 0 };
    let sinceBest = 0;
    // Computed once, at the start of the run, on the linear-probe head; checkpoints carry it so that a resumed run
    // still reports it (the weights have moved since: it cannot be computed again).
    let initial: FinetuneResult['initial'];
    const ckDir = opts.checkpointDir;
    const lastPath = ckDir ? `${ckDir}/last.ckpt` : undefined;
    const bestPath = ckDir ? `${ckDir}/best.ckpt` : undefined;
    const identity = { cut, cutShape, trainable: sess.trainable, classes, settings: o, trainCount: train.n, views: train.views?.length ?? 0 };
    const progress = () => ({ identity, history, bestLoss: Number.isFinite(bestLoss) ? bestLoss : null, bestEpoch, sinceBest, initial: initial ?? null });
    if (opts.resume) {
      if (!lastPath) throw new GraftError('resume needs a checkpoint folder');
      const ck = await readCheckpoint(lastPath);
      if (JSON.stringify(ck.meta.identity) !== JSON.stringify(identity)) {
        throw new GraftError(`${lastPath}: the checkpoint was made with other settings or data; cannot resume`);
      }
      sess.restore(ck.tensors, true);
      history = ck.meta.history as EpochLog[];
      bestLoss = (ck.meta.bestLoss as number | null) ?? Infinity;
      bestEpoch = ck.meta.bestEpoch as number;
      sinceBest = ck.meta.sinceBest as number;
      startEpoch = (ck.meta.epoch as number) + 1;
      const partial = ck.meta.partial as { epoch: number; step: number; lossSum: number; correct: number } | undefined;
      if (partial) {
        startEpoch = partial.epoch;
        startStep = partial.step;
        partialSums = { lossSum: partial.lossSum, correct: partial.correct };
      }
      if (bestPath && bestEpoch > 0) best = (await readCheckpoint(bestPath)).tensors;
      if (ck.meta.stopped) startEpoch = o.epochs + 1;
      // Absent from checkpoints written before it was kept, null without a validation set.
      const saved = SavedInitialSchema.optional().safeParse(ck.meta.initial);
      if (!saved.success) throw new GraftError(`${lastPath}: damaged checkpoint (initial metrics: ${saved.error.issues[0]?.message ?? 'invalid'})`);
      if (saved.data) initial = { valLoss: saved.data.valLoss ?? NaN, valAcc: saved.data.valAcc ?? NaN };
    }

    if (hasVal && startEpoch === 1 && startStep === 0) {
      const p = await sess.proba(val!);
      initial = { valLoss: logLoss(p, val!.y, C), valAcc: accuracyOf(p, val!.y, C) };
      opts.onInitial?.(initial);
    }
    opts.onStart?.();
    const perEpoch: number[] = [];
    const stepSeconds: number[] = [];
    let stoppedEarly = false;
    let ran = 0;
    for (let epoch = startEpoch; epoch <= o.epochs; epoch++) {
      if (opts.stopAfter !== undefined && ran >= opts.stopAfter) break;
      const t0 = performance.now();
      const { order, viewOf } = epochPlan(train, o.seed, epoch);
      let { lossSum, correct } = epoch === startEpoch ? partialSums : { lossSum: 0, correct: 0 };
      for (let s = epoch === startEpoch ? startStep : 0; s < steps; s++) {
        await yieldToEventLoop(); // the steps themselves never leave the microtask queue: let Ctrl-C (a signal) in
        if (opts.signal?.aborted) {
          if (!lastPath) throw new InterruptedError('fine-tuning interrupted (no checkpoint folder: nothing saved)');
          await writeCheckpoint(lastPath, { ...progress(), epoch: epoch - 1, partial: { epoch, step: s, lossSum, correct } }, sess.snapshot(true));
          throw new InterruptedError(`fine-tuning interrupted at epoch ${epoch}, step ${s} of ${steps}; saved ${lastPath} (continue with: graft train --resume ${ckDir!.replace(/\/checkpoints$/, '')})`);
        }
        const t = (epoch - 1) * steps + s;
        const { lr, beta1 } = scheduleAt(o, total, t);
        const hook = opts.lossHook;
        const r = await sess.trainStep(train, { order, viewOf }, epoch, s, lr, beta1, t, hook ? (l) => hook(epoch, s + 1, l) : undefined);
        if (!r.finite) {
          const kept = lastPath && history.length ? `; the last good checkpoint (epoch ${history.length}) is kept in ${lastPath}` : '';
          throw new GraftError(`fine-tuning diverged: the loss is ${Number.isFinite(r.loss) ? 'finite but the gradients are not' : r.loss} at epoch ${epoch}, step ${s + 1} (learning rate ${lr.toExponential(2)} too high?)${kept}`);
        }
        lossSum += r.loss * r.rows;
        correct += r.correct;
      }
      stepSeconds.push((performance.now() - t0) / 1000);
      const log: EpochLog = { epoch, trainLoss: lossSum / train.n, trainAcc: correct / train.n, lr: scheduleAt(o, total, epoch * steps - 1).lr };
      if (hasVal) {
        const p = await sess.proba(val!);
        log.valLoss = logLoss(p, val!.y, C);
        log.valAcc = accuracyOf(p, val!.y, C);
      }
      history.push(log);
      let improved = false;
      if (hasVal) {
        if (log.valLoss! < bestLoss) {
          bestLoss = log.valLoss!;
          bestEpoch = epoch;
          sinceBest = 0;
          improved = true;
        } else sinceBest++;
      } else {
        bestEpoch = epoch;
        improved = true;
      }
      const stop = hasVal && sinceBest >= o.patience;
      if (improved) best = sess.snapshot(false);
      if (ckDir) {
        if (improved) await writeCheckpoint(bestPath!, { identity, epoch }, best!);
        await writeCheckpoint(lastPath!, { ...progress(), epoch, stopped: !!stop }, sess.snapshot(true));
      }
      perEpoch.push((performance.now() - t0) / 1000);
      opts.onEpoch?.(log);
      ran++;
      if (stop) {
        stoppedEarly = true;
        break;
      }
    }
    if (best) sess.restore(best, false);
    const { weights, head } = sess.result({ bestEpoch, ...o });
    const valProba = hasVal ? await sess.proba(val!) : undefined;
    return { weights, head, history, bestEpoch, stoppedEarly, valProba, seconds: { perEpoch, steps: stepSeconds }, initial };
  } finally {
    await sess.dispose();
  }
}

export interface LrFindOptions extends Omit<FinetuneOptions, 'epochs' | 'schedule' | 'warmup' | 'patience' | 'checkpointDir' | 'resume' | 'stopAfter' | 'onEpoch' | 'lossHook'> {
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
export async function lrFind(
  model: LoadedOnnx,
  featureTensor: string,
  cut: string,
  cutShape: number[],
  train: CutSet,
  val: CutSet | undefined,
  classes: string[],
  opts: LrFindOptions = {},
): Promise<LrFindResult> {
  const o = finetuneSettings({ ...opts, schedule: 'cosine' });
  const minLr = opts.minLr ?? 1e-7;
  const maxLr = opts.maxLr ?? 1;
  const n = opts.steps ?? 100;
  const divergeFactor = opts.divergeFactor ?? 4;
  if (!(minLr > 0 && maxLr > minLr)) throw new GraftError(`the sweep needs 0 < min lr < max lr (got ${minLr}, ${maxLr})`);
  if (!(Number.isInteger(n) && n >= 5)) throw new GraftError(`the sweep needs at least 5 steps (got ${n})`);
  const sess = await FinetuneSession.create(model, featureTensor, cut, cutShape, train, val && val.n > 0 ? val : undefined, classes, o);
  try {
    const steps = Math.ceil(train.n / o.batchSize);
    const lrs: number[] = [];
    const losses: number[] = [];
    const smoothed: number[] = [];
    let avg = 0;
    let minSmoothed = Infinity;
    let stoppedEarly = false;
    // The smoothed loss is a mean of only a few noisy batches at first: not trusted (for the minimum, the divergence
    // test and the suggestions) before this many steps.
    const settle = Math.max(5, Math.floor(n / 10));
    let plan = epochPlan(train, o.seed, 1);
    for (let i = 0; i < n; i++) {
      await yieldToEventLoop();
      if (opts.signal?.aborted) throw new InterruptedError('learning-rate sweep interrupted');
      const epoch = 1 + Math.floor(i / steps);
      const s = i % steps;
      if (s === 0 && i > 0) plan = epochPlan(train, o.seed, epoch);
      const lr = minLr * (maxLr / minLr) ** (i / (n - 1));
      const r = await sess.trainStep(train, plan, epoch, s, lr, 0.9, i);
      if (!r.finite) {
        stoppedEarly = true;
        break;
      }
      avg = 0.98 * avg + 0.02 * r.loss;
      const sm = avg / (1 - 0.98 ** (i + 1));
      lrs.push(lr);
      losses.push(r.loss);
      smoothed.push(sm);
      opts.onStep?.(i, lr, r.loss);
      if (i >= settle) minSmoothed = Math.min(minSmoothed, sm);
      if (i > settle && sm > divergeFactor * minSmoothed) {
        stoppedEarly = true;
        break;
      }
    }
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
