/**
 * `graft worker`: takes shards of images from the queue, runs the usual extraction (same preprocessing, same ONNX
 * Runtime worker sessions) and writes the rows into the feature cache. The cache is content-addressed (model bytes,
 * tensor, preprocessing; file path, size, mtime), so a shard that runs twice — a stalled job retried elsewhere —
 * writes the same entries: nothing is duplicated.
 */
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { Backbone } from '../engine/backbone.js';
import type { Reporter } from '../tasks/reporter.js';
import { bullConnection, parseQueueUrl } from './connection.js';
import { CONFIG_FAILURE, SHARD_QUEUE, ShardJobSchema, type ShardJob, type ShardResult } from './jobs.js';

export interface WorkerOptions {
  /** Redis URL. */
  queue: string;
  /** Shards processed at once (default 1: one shard keeps this machine's ORT sessions busy). */
  concurrency?: number;
  /** Feature cache folder shared by all machines (default: graft's cache folder). */
  cacheDir?: string;
  /** ORT threads (default: all cores). */
  threads?: number;
  /**
   * A shard whose worker stops renewing its lock for this long (killed, machine gone) goes back to the queue for
   * another worker (default 30 s, BullMQ's own).
   */
  lockSeconds?: number;
  reporter?: Reporter;
  /** Stop taking shards (the running ones finish). */
  signal?: AbortSignal;
}

export interface WorkerSummary { shards: number; images: number; computed: number; seconds: number }

/**
 * Test hook for the poison-image path (a shard that fails every time it runs): `GRAFT_WORKER_FAULT=fail-on:NAME`
 * makes any shard holding a file named NAME fail. Nothing else reads it.
 */
function injectedFault(paths: string[]): string | undefined {
  const spec = process.env.GRAFT_WORKER_FAULT;
  if (!spec?.startsWith('fail-on:')) return undefined;
  const name = spec.slice('fail-on:'.length);
  return paths.find((p) => basename(p) === name);
}

export async function runWorker(opts: WorkerOptions): Promise<WorkerSummary> {
  const conn = parseQueueUrl(opts.queue);
  const r = opts.reporter;
  const me = `${hostname()}:${process.pid}`;
  const backbones = new Map<string, Promise<Backbone>>();
  const summary: WorkerSummary = { shards: 0, images: 0, computed: 0, seconds: 0 };
  const t0 = performance.now();

  const backboneFor = (job: ShardJob): Promise<Backbone> => {
    const key = JSON.stringify([job.model, job.resolve]);
    let b = backbones.get(key);
    if (!b) {
      b = Backbone.load(job.model.path, { ...job.resolve, preprocess: job.resolve.preprocess as never, threads: opts.threads });
      backbones.set(key, b);
      b.catch(() => backbones.delete(key));
    }
    return b;
  };

  const process_ = async (job: Job): Promise<ShardResult> => {
    const parsed = ShardJobSchema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`${CONFIG_FAILURE} shard ${job.id}: not a graft shard (${parsed.error.issues[0]?.message})`);
    const data = parsed.data;
    let backbone: Backbone;
    try {
      backbone = await backboneFor(data);
    } catch (err) {
      // The model is missing or unreadable on this machine: no retry or split fixes that.
      throw new UnrecoverableError(`${CONFIG_FAILURE} worker ${me}: ${(err as Error).message}`);
    }
    if (backbone.ref.onnx.info.sha256 !== data.model.sha256) {
      throw new UnrecoverableError(
        `${CONFIG_FAILURE} worker ${me}: ${data.model.path} is not the coordinator's model (sha256 ${backbone.ref.onnx.info.sha256.slice(0, 12)}, expected ${data.model.sha256.slice(0, 12)})`,
      );
    }
    const poison = injectedFault(data.paths);
    if (poison) throw new Error(`injected fault (GRAFT_WORKER_FAULT) on ${poison}`);
    const tensor = data.tensor === 'logits' ? backbone.ref.logitsTensor : backbone.ref.featureTensor;
    if (!tensor) throw new UnrecoverableError(`${CONFIG_FAILURE} ${data.model.path}: the model has no classifier output`);
    const cache = backbone.cacheFor(tensor, opts.cacheDir);
    cache.onWriteError = (m) => r?.warn?.(m);
    const ts = performance.now();
    let last = 0;
    const res = await (data.tensor === 'logits' ? backbone.logits.bind(backbone) : backbone.features.bind(backbone))(data.paths, {
      batchSize: data.batchSize,
      cache,
      onProgress: (p) => {
        // Progress is a Redis write: at most ~2 a second per shard.
        const now = performance.now();
        if (now - last < 500 && p.done < data.paths.length) return;
        last = now;
        void job.updateProgress({ worker: me, done: p.done }).catch(() => {});
      },
    });
    if (cache.writeError) throw new Error(`cannot write the feature cache ${cache.dir}: ${cache.writeError}`);
    const result: ShardResult = {
      worker: me,
      n: data.paths.length,
      computed: res.computed,
      fromCache: res.fromCache,
      unreadable: res.skipped.length,
      seconds: (performance.now() - ts) / 1000,
    };
    summary.shards++;
    summary.images += result.n;
    summary.computed += result.computed;
    r?.info?.(`shard ${data.shard}: ${result.n} images (${result.computed} computed, ${result.fromCache} cached, ${result.unreadable} unreadable) in ${result.seconds.toFixed(1)} s`);
    return result;
  };

  const lockMs = Math.round((opts.lockSeconds ?? 30) * 1000);
  const worker = new Worker(SHARD_QUEUE, process_, {
    connection: bullConnection(conn),
    concurrency: opts.concurrency ?? 1,
    lockDuration: lockMs,
    stalledInterval: Math.max(1000, Math.round(lockMs / 2)),
    // A shard whose worker dies twice is failed rather than handed out again: the coordinator splits it to find the
    // image that kills workers, instead of letting it take down the whole pool one worker at a time.
    maxStalledCount: 1,
    autorun: false,
  });
  let down = false;
  worker.on('error', (err) => {
    // Redis gone (restart, network): ioredis reconnects by itself; say so once per outage.
    if (!down) r?.warn?.(`queue ${conn.display}: ${(err as Error).message}; reconnecting`);
    down = true;
  });
  worker.on('ready', () => {
    if (down) r?.info?.(`queue ${conn.display}: connected again`);
    down = false;
  });
  worker.on('failed', (job, err) => r?.warn?.(`shard ${job?.data?.shard ?? job?.id}: ${err.message}`));
  r?.info?.(`worker ${me} waiting for shards on ${conn.display} (concurrency ${opts.concurrency ?? 1})`);
  const stopped = new Promise<void>((resolve) => {
    if (opts.signal?.aborted) resolve();
    opts.signal?.addEventListener('abort', () => resolve(), { once: true });
  });
  const running = worker.run();
  await Promise.race([stopped, running]);
  await worker.close();
  await running.catch(() => {});
  for (const b of backbones.values()) await b.then((x) => x.dispose()).catch(() => {});
  summary.seconds = (performance.now() - t0) / 1000;
  return summary;
}
