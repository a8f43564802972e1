import { Backbone } from '../engine/backbone.js';
import type { ExtractResult } from '../engine/extract.js';
import type { Reporter } from './reporter.js';
import { UsageError } from '../errors.js';
import { averageViews, ttaViews, type TtaKind } from '../image/tta.js';
import { extractOnQueue, type QueueOptions, type QueueReport } from '../queue/coordinator.js';

export interface FeatureRunOptions {
  batchSize?: number;
  /** false: no cache; a string: cache root; undefined: the default cache. */
  cache?: string | false;
  tensor?: 'features' | 'logits';
  reporter?: Reporter;
  task?: string;
  /** Compute the rows on a BullMQ worker pool (`graft worker`) first; they arrive through the feature cache. */
  queue?: QueueOptions;
  /** Stop between batches (InterruptedError). */
  signal?: AbortSignal;
  /** Test-time augmentation: each image's rows averaged over fixed views (image/tta.ts). */
  tta?: TtaKind;
}

/** Extract one tensor over files with progress and (by default) the on-disk cache. */
/** Per-view rows averaged per image; a file's skip reported once. */
function averaged(raw: ExtractResult, views: number, items: number): ExtractResult {
  const { features, kept } = averageViews(raw.features, raw.dim, raw.kept, views, items);
  const seen = new Set<string>();
  const skipped = raw.skipped.filter((s) => !seen.has(s.path) && seen.add(s.path));
  return { ...raw, features, kept, skipped };
}

export async function runExtraction(backbone: Backbone, paths: string[], opts: FeatureRunOptions = {}): Promise<ExtractResult & { queue?: QueueReport }> {
  const task = opts.task ?? 'features';
  const r = opts.reporter;
  const tensor = opts.tensor === 'logits' ? backbone.ref.logitsTensor! : backbone.ref.featureTensor;
  const cache = opts.cache === false ? undefined : backbone.cacheFor(tensor, opts.cache);
  if (cache) cache.onWriteError = (m) => r?.warn?.(m);
  let queue: QueueReport | undefined;
  if (opts.queue && opts.tta) throw new UsageError('--tta with --queue: the workers compute plain views only; drop one of them');
  if (opts.queue && paths.length > 0) {
    if (!cache) throw new UsageError('--queue needs the feature cache: the workers\' rows reach this machine through it (drop --no-cache)');
    queue = await extractOnQueue(backbone, opts.tensor ?? 'features', paths, cache, { ...opts.queue, batchSize: opts.batchSize, reporter: r, task: `${task} on the queue` });
    const by = queue.workers.length ? ` by ${queue.workers.length} worker(s)` : '';
    r?.info?.(`${task}: ${queue.shards} shards done${by} in ${queue.seconds.toFixed(1)} s (${queue.computedByWorkers} rows computed, ${queue.reused} shards already done)`);
  }
  const views = opts.tta ? ttaViews(opts.tta) : undefined;
  const flat = views ? paths.flatMap((p) => views.map(() => p)) : paths;
  r?.start?.(task, flat.length, views ? 'view' : 'img');
  const raw = await (opts.tensor === 'logits' ? backbone.logits.bind(backbone) : backbone.features.bind(backbone))(flat, {
    batchSize: opts.batchSize,
    cache,
    signal: opts.signal,
    ...(views && { augment: paths.flatMap(() => views) }),
    onProgress: (p) => r?.update?.(task, p.done, p.fromCache ? `${p.fromCache} from cache` : undefined),
  });
  r?.end?.(task);
  const res = views ? averaged(raw, views.length, paths.length) : raw;
  if (cache && res.fromCache > 0) {
    r?.info?.(`${task}: ${res.fromCache} of ${paths.length} images served from the feature cache (${cache.dir})`);
  }
  if (cache && cache.corrupt > 0) r?.warn?.(`${task}: ${cache.corrupt} damaged cache entries were recomputed`);
  if (queue && res.computed > 0) r?.warn?.(`${task}: ${res.computed} images were not in the cache after the workers finished (changed while running?); computed here`);
  return queue ? { ...res, queue } : res;
}
