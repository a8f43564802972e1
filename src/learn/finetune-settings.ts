/**
 * What fine-tuning trains on and with which settings: below finetune.ts and finetune-session.ts, which both need
 * these (the session importing them from finetune.ts, which imports the session, made an import circle). The
 * settings' schema checks them where they are read back from disk (a run's options, a checkpoint).
 */
import { z } from 'zod';

export interface CutSet {
  /** n rows of prod(shape) floats: the cut tensor of each image (NCHW without the batch axis). */
  x: Float32Array;
  n: number;
  y: Int32Array;
  /** Augmented views for training: K arrays laid out like `x` (same rows, same order). */
  views?: Float32Array[];
}

export const ScheduleSchema = z.enum(['cosine', 'onecycle']);
export type Schedule = z.infer<typeof ScheduleSchema>;

/** JSON writes Infinity (patience: never stop early) as null: read back as Infinity. */
const patience = z
  .number()
  .nonnegative()
  .nullable()
  .transform((v) => v ?? Infinity);

/** The resolved settings of a fine-tuning run (finetuneSettings fills in the defaults). */
export const FinetuneSettingsSchema = z.object({
  epochs: z.number().int().positive(),
  batchSize: z.number().int().positive(),
  lr: z.number().positive(),
  backboneLrFactor: z.number().nonnegative(),
  weightDecay: z.number().nonnegative(),
  schedule: ScheduleSchema,
  warmup: z.number().min(0).lt(1),
  labelSmoothing: z.number().min(0).lt(1),
  dropout: z.number().min(0).lt(1),
  clipNorm: z.number().nonnegative(),
  patience,
  balance: z.boolean(),
  trainBn: z.boolean(),
  seed: z.number().int(),
  probeEpochs: z.number().int().nonnegative(),
});
export type FinetuneSettings = z.output<typeof FinetuneSettingsSchema>;

/** One epoch of the history (learn/heads.ts EpochLog), as a checkpoint holds it. */
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
  /** Written by an interrupted epoch: the step to continue from and the sums so far. */
  partial: z.object({ epoch: z.number().int().positive(), step: z.number().int().nonnegative(), lossSum: z.number(), correct: z.number().nonnegative() }).optional(),
  stopped: z.boolean().optional(),
  initial: SavedInitialSchema,
});
