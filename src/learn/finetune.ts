/**
 * Fine-tuning the top of a backbone together with its head (linear or MLP, head-graph.ts).
 *
 * The graph is split at a "cut" tensor (the input of the first fine-tuned block): the frozen prefix is a pure function
 * of the image and runs on ONNX Runtime once per image (its output cached on disk, see tasks/finetune.ts); the
 * trainable suffix is rebuilt as its own ONNX graph whose input is the cut tensor (onnx/cut.ts), the head appended,
 * and each training step is a gradient program of it on ONNX Runtime (engine/grad). The suffix's convolution weights and biases train; batch norm runs in inference mode
 * (statistics frozen: the known Keras pitfall avoided by default). With `trainBn` its affine scale/shift train too,
 * and real BatchNormalization nodes run in training mode in the training steps (PyTorch's convention: normalise
 * with the batch mean and biased variance, gradients through both; running mean/var updated after each step with
 * the node's ONNX momentum m, running = m·running + (1−m)·batch, using the unbiased batch variance), while the
 * validation and feature passes use the running statistics. The statistics are checkpointed and exported with the
 * weights. Batch norm already folded into Mul/Add constants (PyTorch exports) has no statistics: only scale/shift.
 *
 * Training, through the one loop (fit.ts): the head on the pooled features (initialised from a probe on the frozen
 * features, trained like `graft train`'s head of the same kind, then trained jointly), dropout before its last layer, softmax cross-entropy with label smoothing
 * and optional class weights, AdamW (decoupled weight decay on weights, not biases), discriminative learning rates
 * (backbone = head × backboneLrFactor), warmup + cosine or one-cycle schedule per step, gradient clipping by global
 * norm, early stopping on validation loss (best weights restored). With augmented views (K cut tensors per image),
 * each epoch draws one view per image. All randomness is derived from (seed, epoch, step), so a run resumed from
 * any checkpoint — end of an epoch (kill -9) or mid-epoch (Ctrl-C, `signal`) — equals an uninterrupted one.
 * Checkpoints (best, last) are written atomically; a NaN/Inf loss stops with a GraftError and leaves the last good
 * checkpoint in place.
 */
import { GraftError, InterruptedError } from '../errors.js';
import { FinetuneCheckpoint } from './finetune-checkpoint.js';
import { FinetuneSession } from './finetune-session.js';
import { epochPlan, finetuneSettings, type FinetuneData, type FinetuneOptions, type FinetuneResult } from './finetune-settings.js';
import { EarlyStopping, fit, progress, type Callback, type Problem } from './fit.js';
import { accuracyOf, logLoss } from './metrics.js';
import { scheduleAt } from './optim.js';

export * from './finetune-settings.js';
export { lrFind, type LrFindOptions, type LrFindResult } from './lr-find.js';
export { classWeights } from './metrics.js';
export { adamwUpdate, scheduleAt, type AdamParam } from './optim.js';
export { bnAffineNames, bnStatNames, convWeightNames, cutForLastBlocks, listBlocks, type Block } from './blocks.js';
export { replaceInitializers, suffixModel } from '../onnx/cut.js';
export { readCheckpoint, writeCheckpoint } from './checkpoint.js';

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

