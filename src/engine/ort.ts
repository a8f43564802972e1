import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { GraftError } from '../errors.js';
import type { LoadedOnnx } from '../models/onnx-file.js';
import { withOutputs } from '../onnx/cut.js';
import { DT } from '../onnx/proto.js';

export interface OrtOptions {
  /** CPU threads to use in all; default: all cores. */
  threads?: number;
  /**
   * How the threads are used. 'workers' (default when threads > 1): one single-threaded session per thread, each in
   * a worker thread, so whole batches run side by side. On this 2-core machine that is 1.35x the throughput of one
   * session with 2 intra-op threads (onnxruntime-node runs a session synchronously, so in-process sessions cannot
   * overlap). 'intra-op': one session in this thread using `threads` intra-op threads (lowest latency for 1 image).
   */
  parallelism?: 'workers' | 'intra-op';
  /**
   * Let idle ORT threads spin-wait for work (lower latency per op, but they burn the CPU that image decoding
   * needs between batches). Default from GRAFT_ORT_SPIN=1, else off.
   */
  spinning?: boolean;
}

export interface OutputTensor { data: Float32Array; dims: number[] }

/** Something that runs a batch through an ONNX graph and returns the requested tensors. */
export interface OrtRunner {
  readonly outputs: string[];
  /** How many `run` calls can usefully be in flight at once. */
  readonly concurrency: number;
  /** `data` is only read, and only until the promise settles: the caller may then reuse it. */
  run(data: Float32Array, shape: number[]): Promise<Record<string, OutputTensor>>;
  dispose(): Promise<void>;
}

const KNOWN_PROVIDERS = ['cpu', 'cuda'] as const;

/**
 * Execution providers from GRAFT_EXECUTION_PROVIDERS (comma-separated, tried in order), default CPU only. The CUDA
 * provider's libraries are not in the npm package: they exist only after the user opted in at install time
 * (`ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node`, see the README).
 */
export function executionProviders(env: NodeJS.ProcessEnv = process.env): string[] {
  const raw = env.GRAFT_EXECUTION_PROVIDERS?.trim();
  if (!raw) return ['cpu'];
  const names = raw.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  for (const n of names) {
    if (!(KNOWN_PROVIDERS as readonly string[]).includes(n)) {
      throw new GraftError(`GRAFT_EXECUTION_PROVIDERS: unknown execution provider '${n}' (known: ${KNOWN_PROVIDERS.join(', ')})`);
    }
  }
  // The CPU provider stays last so that ops another provider lacks still run.
  return names.includes('cpu') ? names : [...names, 'cpu'];
}

/**
 * Threads to use for `requested` (default: all cores), never more than the machine has: more sessions or threads than
 * cores only add memory (a typo, `--threads 999`, started 159 threads and grew past 5.6 GB before it).
 */
export function threadCount(requested: number | undefined): number {
  const cores = availableParallelism();
  return Math.max(1, Math.min(requested ?? cores, cores));
}

function sessionOptions(threads: number, spinning: boolean): ort.InferenceSession.SessionOptions {
  const spin = spinning ? '1' : '0';
  return {
    executionProviders: executionProviders(),
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    enableCpuMemArena: true,
    // Memory patterns are planned per batch size; extraction sees many sizes (cache hits, skipped files), and each
    // plan keeps its own buffers: off saves ~100 MB with no measurable loss in speed here.
    enableMemPattern: false,
    extra: { session: { intra_op: { allow_spinning: spin }, inter_op: { allow_spinning: spin } } },
  };
}

export function ortLoadError(path: string, err: unknown, what = 'this model'): GraftError {
  return new GraftError(`${path}: ONNX Runtime cannot load ${what}: ${String((err as Error)?.message ?? err).split('\n')[0]}`);
}

export interface SessionSpec {
  /** The model's file (or run, or description) for error messages. */
  where: string;
  /** What the bytes are, for error messages (default 'this model'; e.g. 'the gradient graph'). */
  what?: string;
  /** Intra-op threads (default: all cores), never more than the machine has (threadCount). */
  threads?: number;
  /** See OrtOptions.spinning (default off). */
  spinning?: boolean;
  /**
   * 'disabled' for probes that ask for every inner tensor: ORT's fusions would otherwise rewrite the tensors being
   * asked about. Default 'all'.
   */
  optimization?: 'all' | 'disabled';
  /** Planned memory patterns (default off: see sessionOptions). */
  memPattern?: boolean;
}

/** The ONNX Runtime options createSession uses for `spec`. */
export function sessionOptionsFor(spec: Omit<SessionSpec, 'where' | 'what'>): ort.InferenceSession.SessionOptions {
  return {
    ...sessionOptions(threadCount(spec.threads), spec.spinning ?? false),
    ...(spec.optimization && { graphOptimizationLevel: spec.optimization }),
    ...(spec.memPattern !== undefined && { enableMemPattern: spec.memPattern }),
  };
}

/**
 * Every ONNX Runtime session graft makes comes from here, so that all of them get the project's options (execution
 * providers, thread counts, spinning, memory arena) and a load failure is a GraftError naming the model.
 */
export async function createSession(bytes: Uint8Array, spec: SessionSpec): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(bytes, sessionOptionsFor(spec));
  } catch (err) {
    throw ortLoadError(spec.where, err, spec.what);
  }
}

/** The model bytes whose outputs are exactly `outputs` (the original bytes when nothing needs cutting). */
function bytesFor(model: LoadedOnnx, outputs: string[]): Uint8Array {
  const graphOutputs = model.info.outputs.map((o) => o.name);
  const same = outputs.length === graphOutputs.length && outputs.every((o) => graphOutputs.includes(o));
  return same ? model.bytes : withOutputs(model.bytes, outputs, DT.FLOAT);
}

/**
 * A forward-only ONNX Runtime model returning the requested tensors (graph outputs or any inner tensor: the graph is
 * cut there). One input, batched along the first axis.
 */
export class OrtModel implements OrtRunner {
  readonly concurrency = 1;
  private constructor(private session: ort.InferenceSession, readonly outputs: string[]) {}

  /** The best runner for batch throughput with `opts` (a worker pool unless one thread or 'intra-op'). */
  static async create(model: LoadedOnnx, outputs: string[], opts: OrtOptions = {}): Promise<OrtRunner> {
    const threads = threadCount(opts.threads);
    const spinning = opts.spinning ?? process.env.GRAFT_ORT_SPIN === '1';
    const mode = opts.parallelism ?? (process.env.GRAFT_ORT_PARALLELISM as OrtOptions['parallelism']) ?? 'workers';
    const bytes = bytesFor(model, outputs);
    if (threads > 1 && mode === 'workers') return OrtWorkerPool.create(model.info.path, bytes, outputs, threads, spinning);
    return new OrtModel(await createSession(bytes, { where: model.info.path, threads, spinning }), outputs);
  }

  async run(data: Float32Array, shape: number[]): Promise<Record<string, OutputTensor>> {
    const feeds = { [this.session.inputNames[0]!]: new ort.Tensor('float32', data, shape) };
    const res = await this.session.run(feeds, this.outputs);
    const out: Record<string, OutputTensor> = {};
    for (const name of this.outputs) {
      const t = res[name]!;
      out[name] = { data: t.data as Float32Array, dims: t.dims.map(Number) };
    }
    return out;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

type WorkerReply =
  | { type: 'ready' }
  | { type: 'result'; id: number; out: Record<string, OutputTensor>; input: Float32Array }
  | { type: 'error'; id: number; message: string; input?: Float32Array };

interface Pending { resolve: (v: Record<string, OutputTensor>) => void; reject: (e: Error) => void }

function workerUrl(): URL {
  // Under tsx the sources are .ts; once built they are .js.
  return new URL(import.meta.url.endsWith('.ts') ? './ort-worker.ts' : './ort-worker.js', import.meta.url);
}

/** Pools not yet disposed, and pools being started (workers loading their sessions), for quiesceOrtWorkers. */
const livePools = new Set<OrtWorkerPool>();
const startingPools = new Set<Promise<unknown>>();
let quiescing = false;

/**
 * For a process about to exit (Ctrl-C): stop every worker pool safely. A worker thread stopped while its session
 * runs a batch aborts the whole process (onnxruntime-node throws in native code: "terminate called ...", exit code
 * 134), and process.exit stops worker threads. So no new batch starts (runs asked for from now on never settle: the
 * caller is about to vanish, and must not go on to report or write anything), the batches running finish, and then
 * the workers are stopped.
 */
export async function quiesceOrtWorkers(): Promise<void> {
  quiescing = true;
  // A worker creating its session is as unsafe to stop as one running a batch: let started pools come up first.
  while (startingPools.size || livePools.size) {
    await Promise.allSettled([...startingPools]);
    await Promise.all([...livePools].map((p) => p.dispose()));
  }
}

/** N single-threaded sessions in worker threads; each `run` goes to an idle worker (or waits for one). */
export class OrtWorkerPool implements OrtRunner {
  private idle: Worker[] = [];
  private waiting: (() => void)[] = [];
  private pending = new Map<number, Pending>();
  private nextId = 0;
  /** Batches sent to a worker and not answered yet: dispose waits for them (see quiesceOrtWorkers). */
  private inflight = new Set<Promise<unknown>>();
  /**
   * Per worker, the buffer its input travels in: filled here, transferred to the worker, transferred back with the
   * reply. Reusing it costs one copy of the batch into warm memory, where a fresh slice per run cost an allocation,
   * page faults and garbage on both sides (about 3x the CPU of the copy).
   */
  private staging = new Map<Worker, Float32Array>();
  private constructor(private workers: Worker[], readonly outputs: string[]) {
    livePools.add(this);
    this.idle = [...workers];
    for (const w of workers) {
      w.on('message', (m: WorkerReply) => {
        if (m.type === 'ready') return;
        if (m.input) this.staging.set(w, new Float32Array(m.input.buffer));
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.type === 'result') p.resolve(m.out);
        else p.reject(new GraftError(`ONNX Runtime failed: ${m.message}`));
      });
      w.on('error', (err) => {
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      });
    }
  }

  /** Each batch already uses every worker; one more batch in flight keeps them fed while the next is decoded. */
  get concurrency(): number {
    return 2;
  }

  static async create(path: string, bytes: Uint8Array, outputs: string[], n: number, spinning: boolean): Promise<OrtWorkerPool> {
    const url = workerUrl();
    const workerData = { bytes, outputs, spinning, where: path };
    // Running from .ts sources (tests, tsx): the worker registers tsx itself, as loaders do not reliably reach workers.
    const fromSource = url.pathname.endsWith('.ts');
    const boot = `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(url.href)}); })`;
    const workers = Array.from({ length: n }, () => (fromSource ? new Worker(boot, { eval: true, workerData }) : new Worker(url, { workerData })));
    const ready = Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            w.once('message', (m: WorkerReply) => (m.type === 'ready' ? resolve() : reject(ortLoadError(path, m.type === 'error' ? m.message : m))));
            w.once('error', (err) => reject(ortLoadError(path, err)));
          }),
      ),
    );
    startingPools.add(ready);
    try {
      await ready;
    } catch (err) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw err;
    } finally {
      startingPools.delete(ready);
    }
    return new OrtWorkerPool(workers, outputs);
  }

  private async acquire(): Promise<Worker> {
    while (this.idle.length === 0) await new Promise<void>((r) => this.waiting.push(r));
    return this.idle.pop()!;
  }

  private release(w: Worker): void {
    this.idle.push(w);
    this.waiting.shift()?.();
  }

  /**
   * Run a batch split across the workers (each takes an equal slice), so that each session only ever holds the
   * activations of batch/N images: the pool then needs no more memory than one session with the whole batch.
   */
  async run(data: Float32Array, shape: number[]): Promise<Record<string, OutputTensor>> {
    const n = shape[0]!;
    const parts = Math.min(this.workers.length, n);
    if (parts <= 1) return this.runOn(data, shape);
    const per = data.length / n;
    const chunk = Math.ceil(n / parts);
    const slices: Promise<Record<string, OutputTensor>>[] = [];
    for (let s = 0; s < n; s += chunk) {
      const m = Math.min(chunk, n - s);
      slices.push(this.runOn(data.subarray(s * per, (s + m) * per), [m, ...shape.slice(1)]));
    }
    const results = await Promise.all(slices);
    const out: Record<string, OutputTensor> = {};
    for (const name of this.outputs) {
      const total = results.reduce((a, r) => a + r[name]!.data.length, 0);
      const joined = new Float32Array(total);
      let o = 0;
      for (const r of results) {
        joined.set(r[name]!.data, o);
        o += r[name]!.data.length;
      }
      out[name] = { data: joined, dims: [n, ...results[0]![name]!.dims.slice(1)] };
    }
    return out;
  }

  private async runOn(data: Float32Array, shape: number[]): Promise<Record<string, OutputTensor>> {
    if (quiescing) return new Promise(() => {});
    const w = await this.acquire();
    if (quiescing) return new Promise(() => {}); // the worker stays taken: nothing more runs on it
    try {
      const id = this.nextId++;
      let stage = this.staging.get(w);
      if (!stage || stage.length < data.length) stage = new Float32Array(data.length);
      this.staging.delete(w); // in flight until the reply brings it back
      stage.set(data);
      const result = new Promise<Record<string, OutputTensor>>((resolve, reject) => this.pending.set(id, { resolve, reject }));
      const done = () => this.inflight.delete(result);
      result.then(done, done);
      this.inflight.add(result);
      w.postMessage({ type: 'run', id, data: stage.subarray(0, data.length), shape }, [stage.buffer as ArrayBuffer]);
      return await result;
    } finally {
      this.release(w);
    }
  }

  async dispose(): Promise<void> {
    livePools.delete(this);
    // Stopping a worker mid-batch aborts the process (see quiesceOrtWorkers): let running batches finish first. Only
    // an error path disposes with batches in flight; their results are dropped.
    await Promise.allSettled([...this.inflight]);
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
