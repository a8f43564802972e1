/**
 * Learning-rate finder (Smith 2015, fastai's lr_find): the suffix + head fine-tuning would train, from the same
 * starting point, trained for a few steps while the learning rate grows exponentially; the loss of each step is
 * recorded (the finder is a callback of the one training loop). Nothing is kept.
 */
import { GraftError, InterruptedError } from '../errors.js';
import { fit, type Callback, type FitState, type Problem, type StepOutcome } from './fit.js';
import { FinetuneSession } from './finetune-session.js';
import { epochPlan, finetuneSettings, type FinetuneData, type FinetuneOptions } from './finetune-settings.js';

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

