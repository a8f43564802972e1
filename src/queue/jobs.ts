/**
 * What travels through Redis: paths and hashes, never pixels or features. A shard job names the model (path as the
 * coordinator sees it, and its sha256, which the worker checks), how it was resolved (so that the worker computes
 * the same preprocessing and so the same feature-cache folder), the tensor and the image paths. The features go
 * into the content-addressed feature cache on a folder every machine shares; a shard run twice writes the same
 * entries again.
 */
import { z } from 'zod';

/** Queue names (BullMQ prefixes them with `bull:`). */
export const SHARD_QUEUE = 'graft-shards';
export const RUN_QUEUE = 'graft-runs';

export const ShardJobSchema = z.object({
  run: z.string(),
  shard: z.string(),
  model: z.object({ path: z.string(), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
  resolve: z.object({
    preprocess: z.record(z.string(), z.unknown()).optional(),
    featureNode: z.string().optional(),
    logitsNode: z.string().optional(),
  }),
  tensor: z.enum(['features', 'logits']),
  paths: z.array(z.string()).min(1),
  batchSize: z.number().int().positive().optional(),
});
export type ShardJob = z.infer<typeof ShardJobSchema>;

export const ShardResultSchema = z.object({
  worker: z.string(),
  n: z.number(),
  computed: z.number(),
  fromCache: z.number(),
  unreadable: z.number(),
  seconds: z.number(),
});
export type ShardResult = z.infer<typeof ShardResultSchema>;

export const ShardProgressSchema = z.object({ worker: z.string(), done: z.number() });
export type ShardProgress = z.infer<typeof ShardProgressSchema>;

/**
 * Failures that retrying cannot fix (the model missing or different on the worker's machine): the coordinator stops
 * with this message instead of splitting the shard in search of a bad image.
 */
export const CONFIG_FAILURE = 'graft-worker-config:';
