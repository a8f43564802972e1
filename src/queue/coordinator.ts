/**
 * The coordinator's side of `--queue`: cut the image list into shards, enqueue them as one BullMQ flow, follow them
 * to the end with one progress bar, and leave every row in the shared feature cache, from where the local pipeline
 * (extract, predict, train) reads them exactly as if it had computed them itself — same order, same skipped list,
 * the same bytes.
 *
 * Shards have deterministic ids (a hash of the model, the tensor and the whole path list, plus the shard number), so
 * a coordinator started again with the same arguments finds its shards — done, running or waiting — and does not
 * redo finished work; a shard Redis lost is enqueued again. A shard that fails for good is split in two, down to
 * one image: an image that fails every worker (a poison image) ends as one skipped file, never an endless retry.
 */
import { createHash } from 'node:crypto';
import { FlowProducer, Queue } from 'bullmq';
import type { Backbone } from '../engine/backbone.js';
import type { FeatureCache } from '../engine/feature-cache.js';
import { GraftError } from '../errors.js';
import type { Reporter } from '../tasks/reporter.js';
import { bullConnection, parseQueueUrl } from './connection.js';
import { CONFIG_FAILURE, RUN_QUEUE, SHARD_QUEUE, ShardProgressSchema, ShardResultSchema, type ShardJob } from './jobs.js';

export interface QueueOptions {
  /** Redis URL (redis://host:port). */
  url: string;
  /** Images per shard (default 64: ~0.5 s of work on one core for MobileNet, against ~5 ms of queue overhead). */
  shardSize?: number;
  /** How often the coordinator looks at the shards (ms; default 250). */
  pollMs?: number;
  /** How long to wait for Redis to answer at the start (s; default 10). */
  connectSeconds?: number;
}

export interface QueueReport {
  shards: number;
  /** Shards found done (in Redis or all in the cache) when the coordinator started: work not redone. */
  reused: number;
  /** Shards split in two after failing for good. */
  split: number;
  /** Images that failed every worker, written to the cache as unreadable (skipped). */
  poison: string[];
  /** Rows computed by workers in this run (a retried shard counts again: at-least-once). */
  computedByWorkers: number;
  workers: string[];
  seconds: number;
}

interface Pending { id: string; paths: string[] }

const DEFAULT_SHARD = 64;

export async function extractOnQueue(
  backbone: Backbone,
  tensor: 'features' | 'logits',
  paths: string[],
  cache: FeatureCache,
  opts: QueueOptions & { batchSize?: number; reporter?: Reporter; task?: string; signal?: AbortSignal },
): Promise<QueueReport> {
  const conn = parseQueueUrl(opts.url);
  const r = opts.reporter;
  const task = opts.task ?? 'queue';
  const shardSize = opts.shardSize ?? DEFAULT_SHARD;
  const t0 = performance.now();
  const model = { path: backbone.ref.path, sha256: backbone.ref.onnx.info.sha256 };
  const run = createHash('sha256').update(JSON.stringify({ model, resolve: backbone.resolved, tensor, paths })).digest('hex').slice(0, 20);
  const report: QueueReport = { shards: 0, reused: 0, split: 0, poison: [], computedByWorkers: 0, workers: [], seconds: 0 };
  const workers = new Set<string>();
  const jobData = (id: string, shardPaths: string[]): ShardJob => ({
    run,
    shard: id,
    model,
    resolve: backbone.resolved as ShardJob['resolve'],
    tensor,
    paths: shardPaths,
    ...(opts.batchSize && { batchSize: opts.batchSize }),
  });
  const jobOpts = (id: string) => ({
    jobId: id,
    attempts: 2,
    backoff: { type: 'fixed' as const, delay: 500 },
    // Kept a day, so that a coordinator run again finds what is done; failed ones are split and then removed.
    removeOnComplete: { age: 24 * 3600 },
    // A failed shard must not hold up the run's parent job: the coordinator splits it and goes on.
    ignoreDependencyOnFailure: true,
  });

  const connection = bullConnection(conn);
  const shardQueue = new Queue(SHARD_QUEUE, { connection });
  const runQueue = new Queue(RUN_QUEUE, { connection });
  const flow = new FlowProducer({ connection });
  let down = false;
  const onError = (err: Error) => {
    if (!down) r?.warn?.(`queue ${conn.display}: ${err.message}; reconnecting`);
    down = true;
  };
  shardQueue.on('error', onError);
  runQueue.on('error', onError);
  flow.on('error', onError);

  try {
    // A Redis that is not there at all (a typo in the URL, the server not started) is an error, not something to
    // wait out: only an outage once the run is going is (ioredis reconnects then).
    let timer: NodeJS.Timeout | undefined;
    const connectMs = (opts.connectSeconds ?? 10) * 1000;
    await Promise.race([
      shardQueue.waitUntilReady(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new GraftError(`cannot reach the queue at ${conn.display} (no answer in ${connectMs / 1000} s): is redis-server running there, and the URL right?`)), connectMs);
      }),
    ]).finally(() => clearTimeout(timer));
    down = false;
    // Every shard: already done (completed in Redis, or every image in the cache), or still to do.
    const all: Pending[] = [];
    for (let i = 0; i * shardSize < paths.length; i++) all.push({ id: `${run}-${i}`, paths: paths.slice(i * shardSize, (i + 1) * shardSize) });
    report.shards = all.length;
    const outstanding = new Map<string, Pending>();
    const toAdd: Pending[] = [];
    let doneImages = 0;
    for (const s of all) {
      const state = await shardQueue.getJobState(s.id);
      if (state === 'completed') {
        report.reused++;
        doneImages += s.paths.length;
      } else if (state === 'unknown' || state === 'failed') {
        if (state === 'unknown' && (await allCached(cache, s.paths))) {
          report.reused++;
          doneImages += s.paths.length;
          continue;
        }
        if (state === 'failed') await (await shardQueue.getJob(s.id))?.remove().catch(() => {});
        toAdd.push(s);
        outstanding.set(s.id, s);
      } else outstanding.set(s.id, s); // waiting, active, delayed: a coordinator before us enqueued it
    }
    if (toAdd.length > 0) {
      const parent = await runQueue.getJobState(run);
      if (parent === 'unknown') {
        await flow.add({
          name: 'extract',
          queueName: RUN_QUEUE,
          data: { run, n: paths.length, shards: all.length, model, tensor },
          opts: { jobId: run, removeOnComplete: true },
          children: toAdd.map((s) => ({ name: 'shard', queueName: SHARD_QUEUE, data: jobData(s.id, s.paths), opts: jobOpts(s.id) })),
        });
      } else {
        for (const s of toAdd) await shardQueue.add('shard', jobData(s.id, s.paths), jobOpts(s.id));
      }
    }
    if (report.reused > 0) r?.info?.(`${task}: ${report.reused} of ${all.length} shards already done (found in Redis or the feature cache)`);
    r?.start?.(task, paths.length, 'img');
    r?.update?.(task, doneImages, 'waiting for workers');
    const pollMs = opts.pollMs ?? 250;
    let lastSeenWorker = performance.now();
    let told = false;
    while (outstanding.size > 0) {
      opts.signal?.throwIfAborted?.();
      await new Promise((res) => setTimeout(res, pollMs));
      let running = 0;
      for (const s of [...outstanding.values()]) {
        const state = await shardQueue.getJobState(s.id);
        if (state === 'completed') {
          const job = await shardQueue.getJob(s.id);
          const res = ShardResultSchema.safeParse(job?.returnvalue);
          if (res.success) {
            workers.add(res.data.worker);
            report.computedByWorkers += res.data.computed;
          }
          doneImages += s.paths.length;
          outstanding.delete(s.id);
        } else if (state === 'failed') {
          const job = await shardQueue.getJob(s.id);
          const reason = job?.failedReason ?? 'failed';
          if (reason.startsWith(CONFIG_FAILURE)) throw new GraftError(reason.slice(CONFIG_FAILURE.length).trim());
          outstanding.delete(s.id);
          await job?.remove().catch(() => {});
          if (s.paths.length > 1) {
            // Split to find the image that fails: halves, down to single images.
            report.split++;
            const mid = Math.ceil(s.paths.length / 2);
            for (const [suffix, part] of [['a', s.paths.slice(0, mid)], ['b', s.paths.slice(mid)]] as const) {
              const half = { id: `${s.id}${suffix}`, paths: part };
              outstanding.set(half.id, half);
              await shardQueue.add('shard', jobData(half.id, half.paths), jobOpts(half.id));
            }
          } else {
            const path = s.paths[0]!;
            report.poison.push(path);
            // Told once, as any unreadable image is: the cache entry makes the local pass report it as skipped.
            await cache.put(path, { kind: 'unreadable', reason: `failed on every worker that took it (${reason})` });
            r?.warn?.(`${path}: failed on every worker that took it (${reason}); skipped`);
            doneImages += 1;
          }
        } else if (state === 'unknown') {
          // Redis lost it (restarted without persistence): enqueue it again.
          await shardQueue.add('shard', jobData(s.id, s.paths), jobOpts(s.id));
        } else if (state === 'active') {
          const job = await shardQueue.getJob(s.id);
          const p = ShardProgressSchema.safeParse(job?.progress);
          if (p.success) {
            workers.add(p.data.worker);
            running += Math.min(p.data.done, s.paths.length);
          }
        }
      }
      if (down) {
        r?.info?.(`queue ${conn.display}: connected again`);
        down = false;
      }
      if (workers.size > 0) lastSeenWorker = performance.now();
      else if (!told && performance.now() - lastSeenWorker > 10_000) {
        told = true;
        r?.warn?.(`no worker has taken a shard yet; start one per machine: graft worker --queue ${conn.display}`);
      }
      r?.update?.(task, Math.min(paths.length, doneImages + running), `${workers.size} worker(s)`);
    }
    r?.end?.(task);
    await (await runQueue.getJob(run))?.remove().catch(() => {});
  } finally {
    await Promise.allSettled([shardQueue.close(), runQueue.close(), flow.close()]);
  }
  report.workers = [...workers].sort();
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}

async function allCached(cache: FeatureCache, paths: string[]): Promise<boolean> {
  for (const p of paths) if (!(await cache.get(p))) return false;
  return true;
}

