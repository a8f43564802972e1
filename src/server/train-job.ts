/**
 * Training a project as a job: a frozen-backbone head (`graft train`) or fine-tuning the last blocks (`graft
 * finetune`), writing an ordinary run folder under the project, with progress, epochs and cancel for the page.
 */
import { rm } from 'node:fs/promises';
import { z } from 'zod';
import type { EpochLog } from '../learn/heads.js';
import type { Reporter } from '../tasks/reporter.js';
import { finetuneRun } from '../tasks/finetune.js';
import { trainRun } from '../tasks/train.js';
import type { JobContext } from './jobs.js';
import { RequestError } from './predictors.js';
import type { ProjectStore } from './projects.js';

export const TrainRequestSchema = z
  .object({
    /** 'frozen': a linear head on the frozen backbone's features; 'finetune': also train the last `blocks` blocks. */
    mode: z.enum(['frozen', 'finetune']).default('frozen'),
    blocks: z.number().int().min(1).max(20).default(1),
    epochs: z.number().int().min(1).max(500).optional(),
    /** Early stopping: epochs without a lower validation loss before stopping (the best epoch is kept). */
    patience: z.number().int().min(1).max(1000).optional(),
    /** Augmented views per training image (fine-tuning only; 0 = none). */
    augment: z.number().int().min(0).max(8).default(0),
    valFraction: z.number().gt(0).lt(1).default(0.2),
    seed: z.number().int().min(0).default(0),
  })
  .strict();
export type TrainRequest = z.infer<typeof TrainRequestSchema>;

export function parseTrainRequest(body: unknown): TrainRequest {
  const r = TrainRequestSchema.safeParse(body ?? {});
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new RequestError(`training settings: ${i.path.join('.') || 'body'}: ${i.message}`, 400);
  }
  if (r.data.mode === 'frozen' && r.data.augment > 0) {
    throw new RequestError('training settings: augment applies to fine-tuning (mode "finetune"); a frozen head trains on features computed once', 400);
  }
  return r.data;
}

/** A Reporter that turns progress into job events with a rate and an ETA. */
export function jobReporter(ctx: JobContext): Reporter {
  const tasks = new Map<string, { total: number; unit: string; t0: number }>();
  let last = 0;
  return {
    start(task, total, unit) {
      tasks.set(task, { total, unit, t0: performance.now() });
      ctx.emit('progress', { task, done: 0, total, unit });
    },
    update(task, done, note) {
      const t = tasks.get(task);
      const now = performance.now();
      if (!t || (now - last < 200 && done < t.total)) return; // at most 5 events a second
      last = now;
      const s = (now - t.t0) / 1000;
      const rate = s > 0 ? done / s : undefined;
      ctx.emit('progress', { task, done, total: t.total, unit: t.unit, rate, etaSeconds: rate ? (t.total - done) / rate : undefined, note });
    },
    end(task) {
      const t = tasks.get(task);
      if (t) ctx.emit('progress', { task, done: t.total, total: t.total, unit: t.unit });
    },
    info: (message) => ctx.emit('log', { level: 'info', message }),
    warn: (message) => ctx.emit('log', { level: 'warn', message }),
  };
}

export interface TrainJobResult {
  run: string;
  mode: TrainRequest['mode'];
  validation: { accuracy: number; n: number };
  bestEpoch: number;
  counts: { train: number; val: number };
}

export async function runTrainJob(store: ProjectStore, projectId: string, req: TrainRequest, ctx: JobContext, threads?: number, int8?: boolean): Promise<TrainJobResult> {
  const project = await store.get(projectId);
  const withImages = project.classes.filter((c) => c.images.length > 0);
  if (withImages.length < 2) throw new RequestError('add images to at least two classes before training', 409);
  const small = project.classes.filter((c) => c.images.length < 2);
  if (small.length) throw new RequestError(`every class needs at least 2 images (one may go to validation): ${small.map((c) => c.name).join(', ')}`, 409);
  const run = await store.newRunId(projectId);
  const out = store.runDir(projectId, run);
  const reporter = jobReporter(ctx);
  const onEpoch = (e: EpochLog) => ctx.emit('epoch', e);
  const common = { data: store.dataDir(projectId), model: project.backbone, out, seed: req.seed, valFraction: req.valFraction, reporter, backbone: { threads } };
  try {
    if (req.mode === 'frozen') {
      const res = await trainRun({ ...common, ...(int8 && { int8: true }), head: { kind: 'linear', ...(req.epochs && { epochs: req.epochs }), ...(req.patience && { patience: req.patience }) }, signal: ctx.signal, onEpoch });
      return { run, mode: req.mode, validation: { accuracy: res.validation.accuracy, n: res.validation.n }, bestEpoch: res.bestEpoch, counts: res.counts };
    }
    const res = await finetuneRun({
      ...common,
      blocks: req.blocks,
      signal: ctx.signal,
      ...(req.augment > 0 && { augment: { views: req.augment } }),
      finetune: { ...(req.epochs && { epochs: req.epochs }), ...(req.patience && { patience: req.patience }), onEpoch },
    });
    return { run, mode: req.mode, validation: { accuracy: res.validation.accuracy, n: res.validation.n }, bestEpoch: res.bestEpoch, counts: res.counts };
  } catch (err) {
    // A cancelled or failed job leaves no half-made run behind (fine-tuning writes its options and checkpoints into
    // the folder as it goes; a frozen run is only ever renamed into place whole). A fine-tune stopped by the server
    // shutting down keeps its checkpoint: `graft train --resume <folder>` finishes it.
    const shutdown = ctx.signal.aborted && ctx.signal.reason === 'shutdown';
    if (!(shutdown && req.mode === 'finetune')) await rm(out, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}
