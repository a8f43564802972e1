/**
 * Long work of the server (training, fine-tuning, ideal images) as jobs: one runs at a time (the 2 cores are all
 * one job can use), up to `maxWaiting` wait with their position, the rest are refused with 429. Each job keeps
 * its events so that a page opened late (or reloaded) replays them, then follows live over Server-Sent Events.
 */
import { randomBytes } from 'node:crypto';
import { GraftError, InterruptedError } from '../errors.js';
import { RequestError } from './predictors.js';

export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

export interface JobEvent {
  /** Sequence number within the job (SSE id: a reconnecting client resumes after it). */
  seq: number;
  type: 'state' | 'progress' | 'epoch' | 'log' | 'image' | 'result' | 'error';
  data: unknown;
}

export interface JobContext {
  signal: AbortSignal;
  /** Record an event for the page (progress, a finished epoch, an intermediate image...). */
  emit(type: JobEvent['type'], data: unknown): void;
}

export interface JobInfo {
  id: string;
  kind: string;
  project?: string;
  state: JobState;
  /** Place in the waiting line (1 = next), while queued. */
  position?: number;
  createdAt: string;
  startedAt?: string;
  endedAt?: string;
  progress?: { task: string; done: number; total: number; rate?: number; etaSeconds?: number };
  result?: unknown;
  error?: string;
}

interface Job extends JobInfo {
  run: (ctx: JobContext) => Promise<unknown>;
  ac: AbortController;
  events: JobEvent[];
  listeners: Set<(e: JobEvent) => void>;
  done: Promise<void>;
  settle: () => void;
}

/** Events kept per job: a long fine-tune logs an epoch per event; progress events are coalesced into the last one. */
const MAX_EVENTS = 2000;

export class JobQueue {
  private jobs = new Map<string, Job>();
  private waiting: Job[] = [];
  private running: Job | undefined;
  private closing = false;

  constructor(private readonly opts: { maxWaiting?: number; keep?: number } = {}) {}

  /** Queue a job; 429 when the line is full, 503 while shutting down. */
  submit(kind: string, run: (ctx: JobContext) => Promise<unknown>, project?: string): JobInfo {
    if (this.closing) throw new RequestError('the server is shutting down; no new jobs', 503);
    const max = this.opts.maxWaiting ?? 8;
    if (this.waiting.length >= max) throw new RequestError(`${max} jobs are already waiting; try again when one has finished`, 429);
    let settle!: () => void;
    const done = new Promise<void>((r) => (settle = r));
    const job: Job = {
      id: randomBytes(6).toString('hex'),
      kind,
      project,
      state: 'queued',
      createdAt: new Date().toISOString(),
      run,
      ac: new AbortController(),
      events: [],
      listeners: new Set(),
      done,
      settle,
    };
    this.jobs.set(job.id, job);
    this.waiting.push(job);
    this.prune();
    this.emit(job, 'state', { state: 'queued', position: this.waiting.length });
    this.pump();
    return this.info(job);
  }

  get(id: string): JobInfo {
    return this.info(this.find(id));
  }

  list(project?: string): JobInfo[] {
    return [...this.jobs.values()].filter((j) => !project || j.project === project).map((j) => this.info(j));
  }

  /** Cancel: a waiting job leaves the line; a running one is asked to stop (it stops at its next check). */
  cancel(id: string): JobInfo {
    const job = this.find(id);
    if (job.state === 'queued') {
      this.waiting = this.waiting.filter((j) => j !== job);
      this.finish(job, 'cancelled');
      this.waiting.forEach((j, i) => this.emit(j, 'state', { state: 'queued', position: i + 1 }));
    } else if (job.state === 'running') {
      job.ac.abort();
    }
    return this.info(job);
  }

  /** Events after `after` (for replay), then each new one until the job ends; returns the unsubscribe function. */
  subscribe(id: string, after: number, listener: (e: JobEvent) => void): () => void {
    const job = this.find(id);
    for (const e of job.events) if (e.seq > after) listener(e);
    job.listeners.add(listener);
    return () => job.listeners.delete(listener);
  }

  isFinished(id: string): boolean {
    const s = this.find(id).state;
    return s === 'done' || s === 'failed' || s === 'cancelled';
  }

  /** Until the job has ended (any way). */
  wait(id: string): Promise<void> {
    return this.find(id).done;
  }

  /** Shutdown: refuse new jobs, drop the waiting ones, ask the running one to stop and wait for it (it checkpoints). */
  async close(): Promise<void> {
    this.closing = true;
    for (const j of this.waiting) this.finish(j, 'cancelled');
    this.waiting = [];
    if (this.running) {
      this.running.ac.abort('shutdown');
      await this.running.done;
    }
  }

  private find(id: string): Job {
    const job = this.jobs.get(id);
    if (!job) throw new RequestError(`no job ${JSON.stringify(id)}`, 404);
    return job;
  }

  private info(j: Job): JobInfo {
    const position = j.state === 'queued' ? this.waiting.indexOf(j) + 1 : undefined;
    const { id, kind, project, state, createdAt, startedAt, endedAt, progress, result, error } = j;
    return { id, kind, project, state, ...(position && { position }), createdAt, startedAt, endedAt, progress, result, error };
  }

  private emit(job: Job, type: JobEvent['type'], data: unknown): void {
    const last = job.events[job.events.length - 1];
    const e: JobEvent = { seq: (last?.seq ?? 0) + 1, type, data };
    // Progress is a state, not a history: keep only the newest one in the replay list.
    if (type === 'progress' && last?.type === 'progress') job.events.pop();
    job.events.push(e);
    if (job.events.length > MAX_EVENTS) job.events.splice(1, job.events.length - MAX_EVENTS);
    for (const l of job.listeners) l(e);
  }

  private finish(job: Job, state: 'done' | 'failed' | 'cancelled', payload?: { result?: unknown; error?: string }): void {
    job.state = state;
    job.endedAt = new Date().toISOString();
    if (payload?.result !== undefined) job.result = payload.result;
    if (payload?.error) job.error = payload.error;
    if (payload?.result !== undefined) this.emit(job, 'result', payload.result);
    if (payload?.error) this.emit(job, 'error', { message: payload.error });
    this.emit(job, 'state', { state });
    job.listeners.clear();
    job.settle();
  }

  private pump(): void {
    if (this.running || this.waiting.length === 0) return;
    const job = this.waiting.shift()!;
    this.waiting.forEach((j, i) => this.emit(j, 'state', { state: 'queued', position: i + 1 }));
    this.running = job;
    job.state = 'running';
    job.startedAt = new Date().toISOString();
    this.emit(job, 'state', { state: 'running' });
    const ctx: JobContext = {
      signal: job.ac.signal,
      emit: (type, data) => {
        if (type === 'progress') job.progress = data as JobInfo['progress'];
        this.emit(job, type, data);
      },
    };
    void (async () => {
      try {
        const result = await job.run(ctx);
        this.finish(job, 'done', { result });
      } catch (err) {
        if (job.ac.signal.aborted || err instanceof InterruptedError) this.finish(job, 'cancelled', { error: (err as Error).message });
        else this.finish(job, 'failed', { error: err instanceof GraftError ? err.message : `internal error: ${(err as Error).message}` });
      } finally {
        this.running = undefined;
        this.pump();
      }
    })();
  }

  /** Forget the oldest finished jobs beyond `keep`. */
  private prune(): void {
    const keep = this.opts.keep ?? 100;
    const finished = [...this.jobs.values()].filter((j) => j.state !== 'queued' && j.state !== 'running');
    for (const j of finished.slice(0, Math.max(0, finished.length - keep))) this.jobs.delete(j.id);
  }
}
