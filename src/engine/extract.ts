import { ImageError, InterruptedError } from '../errors.js';
import { augmentKey, loadAugmentedInto, type AugmentParams } from '../image/augment.js';
import type { DecodeOptions } from '../image/decode.js';
import { loadInto } from '../image/preprocess.js';
import type { PreprocessSpec } from '../image/spec.js';
import type { FeatureCache } from './feature-cache.js';
import type { OrtRunner } from './ort.js';

export interface Skipped { path: string; reason: string }

export interface ExtractOptions {
  batchSize?: number;
  cache?: FeatureCache;
  decode?: DecodeOptions;
  onProgress?: (p: { done: number; total: number; fromCache: number }) => void;
  /**
   * Per path (same indices), the augmented view to extract instead of the plain image; undefined entries (or no
   * array) load the plain image. A path may appear several times with different views (see flattenViews). The
   * cache keeps each view apart from the plain row and from other views.
   */
  augment?: readonly (AugmentParams | undefined)[];
  /**
   * Floats per row of `tensor`, when the caller knows it: cached rows of another length are recomputed. Without it
   * and with a cache, one zero image is run first to learn it.
   */
  dim?: number;
  /** Stop between batches (InterruptedError) once the batches already started have settled. */
  signal?: AbortSignal;
}

export interface ExtractResult {
  /** Rows of `dim` floats, one per kept image, in input order. */
  features: Float32Array;
  dim: number;
  /** Indices (into the input paths) of the images that have a row. */
  kept: number[];
  skipped: Skipped[];
  fromCache: number;
  computed: number;
  seconds: number;
}

interface Prepared {
  /** Per item of the batch: cached row, or index into the decoded tensor, or a skip reason. */
  slots: ({ row: Float32Array } | { decoded: number } | { skip: string })[];
  /** The batch buffer (reused across batches); the first n images are the network's input. */
  buffer: Float32Array;
  n: number;
}

function inputShape(spec: PreprocessSpec, n: number): number[] {
  const [h, w] = spec.size;
  return spec.layout === 'NCHW' ? [n, 3, h, w] : [n, h, w, 3];
}

/**
 * Run `tensor` of the model over image files, batch by batch, decoding the next batch while the current one runs,
 * so that the network (not the JPEG decoder) sets the pace. Only two batches are ever in memory. Unreadable images
 * are skipped and reported; the cache, when given, serves and stores rows (and skip reasons).
 */
export async function extractFeatures(
  model: OrtRunner,
  tensor: string,
  spec: PreprocessSpec,
  paths: string[],
  opts: ExtractOptions = {},
): Promise<ExtractResult> {
  const t0 = performance.now();
  const batchSize = Math.max(1, opts.batchSize ?? 32);
  const per = 3 * spec.size[0] * spec.size[1];
  const cache = opts.cache;
  const augment = opts.augment;
  if (augment && augment.length !== paths.length) throw new RangeError(`${augment.length} augment entries for ${paths.length} paths`);
  const variant = (i: number): string | undefined => {
    const a = augment?.[i];
    return a ? augmentKey(a) : undefined;
  };
  // A cached row must have the length the model gives now: an entry with a valid checksum but another length (a bug
  // that wrote it, a cache shared with another build) would otherwise give rows of mixed sizes, silently misread as
  // one matrix. When every image of a run is cached no row is computed to compare with, so ask the model once.
  let expected = opts.dim;
  if (cache && expected === undefined && paths.length > 0) {
    const probe = await model.run(new Float32Array(per), inputShape(spec, 1));
    expected = probe[tensor]?.data.length;
  }
  // Batch buffers are reused rather than allocated per batch: a fresh 19 MB Float32Array each batch (32 images at
  // 224x224) cost page faults on first write and frequent major GCs (V8 collects on external-memory growth).
  // At most `ahead` batches are in flight, so the free list stays that short.
  const free: Float32Array[] = [];

  const prepare = async (start: number): Promise<Prepared> => {
    const batch = paths.slice(start, start + batchSize);
    const cached = cache ? await Promise.all(batch.map((p, i) => cache.get(p, variant(start + i), expected))) : batch.map(() => undefined);
    const misses = cached.map((c, i) => (c ? -1 : i)).filter((i) => i >= 0);
    const input = free.pop() ?? new Float32Array(batchSize * per);
    const slots: Prepared['slots'] = cached.map((c) => (c?.kind === 'features' ? { row: c.data } : c ? { skip: c.reason } : { skip: '' }));
    const ok = await Promise.all(
      misses.map(async (i, j) => {
        try {
          const view = augment?.[start + i];
          const decode = { ...opts.decode, name: batch[i] };
          if (view) await loadAugmentedInto(input, j * per, batch[i]!, spec, view, decode);
          else await loadInto(input, j * per, batch[i]!, spec, decode);
          return true;
        } catch (err) {
          const reason = err instanceof ImageError ? err.reason : (err as Error).message;
          slots[i] = { skip: reason };
          if (cache) await cache.put(batch[i]!, { kind: 'unreadable', reason }, variant(start + i));
          return false;
        }
      }),
    );
    // Compact the decoded images so the network only sees good ones.
    let n = 0;
    for (let j = 0; j < misses.length; j++) {
      if (!ok[j]) continue;
      if (n !== j) input.copyWithin(n * per, j * per, (j + 1) * per);
      slots[misses[j]!] = { decoded: n++ };
    }
    return { slots, buffer: input, n };
  };

  // A job decodes a batch, then runs it. Jobs for the next batches start while earlier ones run, as many as the
  // runner can overlap plus one decoding ahead; results are taken in order.
  const run = async (start: number) => {
    const cur = await prepare(start);
    try {
      const res = cur.n > 0 ? await model.run(cur.buffer.subarray(0, cur.n * per), inputShape(spec, cur.n)) : undefined;
      return { cur, out: res?.[tensor]?.data };
    } finally {
      // OrtRunner.run only reads its input until it settles, so the buffer can take the next batch.
      free.push(cur.buffer);
    }
  };
  const ahead = Math.max(1, model.concurrency) + 1;
  const jobs: Promise<Awaited<ReturnType<typeof run>>>[] = [];
  const starts: number[] = [];
  for (let s = 0; s < paths.length; s += batchSize) starts.push(s);
  const rows: Float32Array[] = [];
  const kept: number[] = [];
  const skipped: Skipped[] = [];
  let dim = 0;
  let fromCache = 0;
  let computed = 0;
  for (let b = 0; b < starts.length; b++) {
    if (opts.signal?.aborted) {
      // Let the started batches settle first: a batch failing after we left would be an unhandled rejection.
      await Promise.allSettled(jobs.slice(b));
      throw new InterruptedError('feature extraction interrupted');
    }
    for (let j = jobs.length; j < Math.min(starts.length, b + ahead); j++) jobs.push(run(starts[j]!));
    const start = starts[b]!;
    const { cur, out } = await jobs[b]!;
    jobs[b] = undefined as never; // let the batch be collected
    if (out) dim = out.length / cur.n;
    const puts: Promise<void>[] = [];
    cur.slots.forEach((s, i) => {
      const path = paths[start + i]!;
      if ('skip' in s) {
        skipped.push({ path, reason: s.skip });
        return;
      }
      let row: Float32Array;
      if ('row' in s) {
        row = s.row;
        fromCache++;
      } else {
        row = out!.slice(s.decoded * dim, (s.decoded + 1) * dim);
        computed++;
        if (cache) puts.push(cache.put(path, { kind: 'features', data: row }, variant(start + i)));
      }
      dim = row.length;
      rows.push(row);
      kept.push(start + i);
    });
    await Promise.all(puts);
    opts.onProgress?.({ done: Math.min(start + batchSize, paths.length), total: paths.length, fromCache });
  }
  const features = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => features.set(r, i * dim));
  return { features, dim, kept, skipped, fromCache, computed, seconds: (performance.now() - t0) / 1000 };
}
