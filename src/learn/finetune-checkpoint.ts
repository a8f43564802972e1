/**
 * Checkpoints of a fine-tuning run, as a callback of the training loop: last.ckpt at every epoch end (and mid-epoch
 * on Ctrl-C), best.ckpt when the validation loss improves; `resume` reads them back (zod-checked) so that the run
 * continues exactly where it stopped.
 */
import { GraftError } from '../errors.js';
import { readCheckpoint, writeCheckpoint } from './checkpoint.js';
import type { FinetuneSession } from './finetune-session.js';
import { ProgressMetaSchema, type FinetuneResult, type FinetuneSettings } from './finetune-settings.js';
import type { Callback, EarlyStopping, FitOptions, FitState } from './fit.js';
import type { EpochLog } from './heads.js';

/**
 * Checkpoints of a fine-tuning run: last.ckpt at every epoch end (and mid-epoch on Ctrl-C), best.ckpt when the
 * validation loss improves; `resume` reads them back so the run continues exactly where it stopped.
 */
export class FinetuneCheckpoint implements Callback {
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
    const ck = await readCheckpoint(this.lastPath, ProgressMetaSchema);
    if (JSON.stringify(ck.meta.identity) !== JSON.stringify(this.identity)) {
      throw new GraftError(`${this.lastPath}: the checkpoint was made with other settings or data; cannot resume`);
    }
    const m = ck.meta;
    this.sess.restore(ck.tensors, true);
    const e = this.early;
    e.bestLoss = m.bestLoss ?? Infinity;
    e.bestEpoch = m.bestEpoch;
    e.sinceBest = m.sinceBest;
    e.stoppedEarly = !!m.stopped;
    if (e.bestEpoch > 0) e.best = (await readCheckpoint(this.bestPath)).tensors;
    const history: EpochLog[] = m.history.map((h) => ({ ...h }));
    const p = m.partial;
    const fit = p
      ? { epoch: p.epoch, step: p.step, lossSum: p.lossSum, correct: p.correct, rows: p.rows ?? Math.min(p.step * (this.identity.settings as FinetuneSettings).batchSize, this.identity.trainCount as number), history }
      : { epoch: m.stopped ? epochs + 1 : m.epoch + 1, step: 0, lossSum: 0, correct: 0, rows: 0, history };
    const initial = m.initial ? { valLoss: m.initial.valLoss ?? NaN, valAcc: m.initial.valAcc ?? NaN } : undefined;
    return { fit, initial };
  }
}

