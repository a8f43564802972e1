/**
 * The one training loop (in the manner of Keras' `fit` and fastai's Learner): epochs of steps over a problem, with
 * what cuts across them — early stopping, checkpoints and exact resume, Ctrl-C, the NaN guard, progress, test
 * hooks — as callbacks. Frozen heads (heads.ts) and fine-tuning (finetune.ts) both train through it; the problem
 * says how a step is taken and how the model is scored, the loop owns the order of events:
 *
 *   for each epoch:  for each step: beforeStep → problem.step → afterStep   then validate → afterEpoch → onEpoch
 *
 * so that every training reports, stops and resumes the same way.
 */
import type { EpochLog } from './head-json.js';

export interface StepOutcome {
  /** Mean loss of the batch (as trained: dropout, smoothing, class weights). */
  loss: number;
  /** Rows whose largest score is the label's. */
  correct: number;
  rows: number;
  /** False when the loss or the gradients were not finite (the problem did not update). */
  finite: boolean;
}

export interface Problem {
  stepsPerEpoch: number;
  /** One optimisation step: step `s` of `epoch` (1-based), global step `t` (0-based). */
  step(epoch: number, s: number, t: number): Promise<StepOutcome> | StepOutcome;
  /** Validation loss and accuracy of the model as it is (undefined without a validation set). */
  validate?(): Promise<{ valLoss: number; valAcc: number } | undefined> | { valLoss: number; valAcc: number } | undefined;
  /** Learning rate reported for an epoch's log (the rate of its last step). */
  lrAt(t: number): number;
}

/** Where the loop is; callbacks read it and may ask it to stop. */
export interface FitState {
  epochs: number;
  epoch: number;
  step: number;
  history: EpochLog[];
  /** Sums of the epoch so far (resume restores them mid-epoch). */
  lossSum: number;
  correct: number;
  rows: number;
  /** Set by a callback to end training after this epoch. */
  stop: boolean;
}

export interface Callback {
  /** Before the first step (may move the start: resume). */
  onTrainBegin?(state: FitState): Promise<void> | void;
  beforeStep?(state: FitState): Promise<void> | void;
  /** May replace the outcome (a test's loss hook) or throw (the NaN guard). */
  afterStep?(state: FitState, r: StepOutcome): StepOutcome | void;
  afterEpoch?(state: FitState, log: EpochLog): Promise<void> | void;
  onTrainEnd?(state: FitState): Promise<void> | void;
}

export interface FitOptions {
  epochs: number;
  /** Resume point: first epoch (1-based) and step, with the sums of that partial epoch and the history so far. */
  start?: { epoch: number; step: number; lossSum: number; correct: number; rows: number; history: EpochLog[] };
  /** Yield to the event loop at most this often (ms; 0 = before every step, so Ctrl-C is seen between steps). */
  yieldEveryMs?: number;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export async function fit(problem: Problem, o: FitOptions, callbacks: Callback[] = []): Promise<FitState> {
  const start = o.start;
  const state: FitState = {
    epochs: o.epochs,
    epoch: start?.epoch ?? 1,
    step: start?.step ?? 0,
    history: start?.history ?? [],
    lossSum: start?.lossSum ?? 0,
    correct: start?.correct ?? 0,
    rows: start?.rows ?? 0,
    stop: false,
  };
  for (const cb of callbacks) await cb.onTrainBegin?.(state);
  const steps = problem.stepsPerEpoch;
  const every = o.yieldEveryMs ?? 0;
  let lastYield = performance.now();
  for (; state.epoch <= o.epochs && !state.stop; state.epoch++, state.step = 0, state.lossSum = 0, state.correct = 0, state.rows = 0) {
    for (; state.step < steps; state.step++) {
      if (performance.now() - lastYield >= every) {
        // A step awaits only promises that settle in the microtask queue: without this, timers and signal handlers
        // (Ctrl-C) would not get a turn until the loop ends.
        await yieldToEventLoop();
        lastYield = performance.now();
      }
      for (const cb of callbacks) await cb.beforeStep?.(state);
      let r = await problem.step(state.epoch, state.step, (state.epoch - 1) * steps + state.step);
      for (const cb of callbacks) r = cb.afterStep?.(state, r) ?? r;
      state.lossSum += r.loss * r.rows;
      state.correct += r.correct;
      state.rows += r.rows;
      if (state.stop) break; // a callback ended training mid-epoch (the LR finder)
    }
    const log: EpochLog = { epoch: state.epoch, trainLoss: state.lossSum / state.rows, trainAcc: state.correct / state.rows, lr: problem.lrAt(state.epoch * steps - 1) };
    const v = await problem.validate?.();
    if (v) Object.assign(log, v);
    state.history.push(log);
    for (const cb of callbacks) await cb.afterEpoch?.(state, log);
  }
  for (const cb of callbacks) await cb.onTrainEnd?.(state);
  return state;
}

/**
 * Early stopping on validation loss: stop after `patience` epochs without a lower one; `best` holds the best
 * epoch's snapshot. Without a validation set every epoch counts as the best (the last weights are kept).
 */
export class EarlyStopping<S> implements Callback {
  bestLoss = Infinity;
  bestEpoch = 0;
  sinceBest = 0;
  best: S | undefined;
  stoppedEarly = false;
  improved = false;

  constructor(
    private readonly patience: number,
    private readonly snapshot: () => S,
  ) {}

  afterEpoch(state: FitState, log: EpochLog): void {
    this.improved = log.valLoss === undefined || log.valLoss < this.bestLoss;
    if (this.improved) {
      if (log.valLoss !== undefined) this.bestLoss = log.valLoss;
      this.bestEpoch = log.epoch;
      this.sinceBest = 0;
      this.best = this.snapshot();
    } else this.sinceBest++;
    if (log.valLoss !== undefined && this.sinceBest >= this.patience && log.epoch < state.epochs) {
      this.stoppedEarly = true;
      state.stop = true;
    }
  }
}

/** Calls `onEpoch` with each epoch's log (progress lines, live curves). */
export const progress = (onEpoch?: (e: EpochLog) => void): Callback => ({ afterEpoch: (_s, log) => onEpoch?.(log) });

/** Ends training after `n` epochs in this call (tests of resume: the schedule still counts every epoch). */
export function stopAfter(n: number): Callback {
  let ran = 0;
  return {
    onTrainBegin(state) {
      if (n <= 0) state.stop = true;
    },
    afterEpoch(state) {
      if (++ran >= n) state.stop = true;
    },
  };
}

/** Replaces each step's loss (tests of the NaN guard). */
export const lossHook = (hook: (epoch: number, step: number, loss: number) => number): Callback => ({
  afterStep: (state, r) => {
    const loss = hook(state.epoch, state.step + 1, r.loss);
    return { ...r, loss, finite: r.finite && Number.isFinite(loss) };
  },
});
