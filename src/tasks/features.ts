import { Backbone } from '../engine/backbone.js';
import type { ExtractResult } from '../engine/extract.js';
import type { Reporter } from './reporter.js';

export interface FeatureRunOptions {
  batchSize?: number;
  /** false: no cache; a string: cache root; undefined: the default cache. */
  cache?: string | false;
  tensor?: 'features' | 'logits';
  reporter?: Reporter;
  task?: string;
}

/** Extract one tensor over files with progress and (by default) the on-disk cache. */
export async function runExtraction(backbone: Backbone, paths: string[], opts: FeatureRunOptions = {}): Promise<ExtractResult> {
  const task = opts.task ?? 'features';
  const r = opts.reporter;
  const tensor = opts.tensor === 'logits' ? backbone.ref.logitsTensor! : backbone.ref.featureTensor;
  const cache = opts.cache === false ? undefined : backbone.cacheFor(tensor, opts.cache);
  if (cache) cache.onWriteError = (m) => r?.warn?.(m);
  r?.start?.(task, paths.length, 'img');
  const res = await (opts.tensor === 'logits' ? backbone.logits.bind(backbone) : backbone.features.bind(backbone))(paths, {
    batchSize: opts.batchSize,
    cache,
    onProgress: (p) => r?.update?.(task, p.done, p.fromCache ? `${p.fromCache} from cache` : undefined),
  });
  r?.end?.(task);
  if (cache && res.fromCache > 0) {
    r?.info?.(`${task}: ${res.fromCache} of ${paths.length} images served from the feature cache (${cache.dir})`);
  }
  if (cache && cache.corrupt > 0) r?.warn?.(`${task}: ${cache.corrupt} damaged cache entries were recomputed`);
  return res;
}
