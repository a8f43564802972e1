/** What every route of `graft serve` shares: models kept warm, projects, jobs, limits. */
import type { FastifyReply } from 'fastify';
import { GraftError, ImageError } from '../errors.js';
import type { DiffClassifier } from '../vision/classifier.js';
import { loadClassifier } from '../vision/classifier.js';
import type { JobQueue } from './jobs.js';
import { PredictorPool, RequestError, resolveModelParam, type ModelAccess } from './predictors.js';
import { WarmCache } from './warm-cache.js';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ProjectStore } from './projects.js';

export interface Limits {
  /** Largest request body (an upload), bytes. */
  bodyBytes: number;
  /** Largest image, in pixels (from its header, before decoding). */
  imagePixels: number;
  /** Longest a request may take, ms. */
  requestMs: number;
}

export const DEFAULT_LIMITS: Limits = {
  bodyBytes: 25 * 1024 * 1024,
  // 40 MP: a 7000x5700 photo; the decode of one takes ~0.5 GB at most, so a handful at once stays in memory.
  imagePixels: 40_000_000,
  requestMs: 120_000,
};

export interface ServerContext {
  access: ModelAccess;
  pool: PredictorPool;
  projects: ProjectStore;
  jobs: JobQueue;
  limits: Limits;
  classifiers: ClassifierCache;
  threads?: number;
  /** Frozen-head training of projects runs an int8 backbone calibrated on the project's images. */
  int8?: boolean;
}

/** Differentiable classifiers (attack, ideal image) kept warm: building their gradient programs takes seconds. */
export class ClassifierCache {
  private cache: WarmCache<DiffClassifier>;
  constructor(
    private readonly access: ModelAccess,
    max = 2,
  ) {
    this.cache = new WarmCache(max);
  }

  async get(param: string | undefined): Promise<DiffClassifier> {
    const target = await resolveModelParam(param, this.access);
    const source = target.kind === 'catalog' ? target.name : target.path;
    // A run retrained into the same folder is another classifier: key runs by their config's time.
    const key = target.kind === 'path' && target.run ? `${source}@${(await stat(join(source, 'config.json'))).mtimeMs}` : source;
    return this.cache.get(key, () => loadClassifier(source));
  }

  close(): Promise<void> {
    return this.cache.close();
  }
}

/** The HTTP status and message for an error a route let through. */
export function errorReply(err: unknown): { status: number; message: string } {
  if (err instanceof RequestError) return { status: err.status, message: err.message };
  if (err instanceof ImageError) return { status: 400, message: `the upload: ${err.reason}` };
  const fe = err as { statusCode?: number; code?: string; message?: string };
  if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return { status: 413, message: 'the upload is larger than this server accepts' };
  if (fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return { status: fe.statusCode ?? 400, message: fe.message ?? 'bad request' };
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) return { status: fe.statusCode, message: fe.message ?? 'bad request' };
  if (err instanceof GraftError) return { status: 422, message: err.message };
  return { status: 500, message: `internal error: ${(err as Error)?.message ?? String(err)}` };
}

export function sendError(reply: FastifyReply, err: unknown): FastifyReply {
  const { status, message } = errorReply(err);
  return reply.code(status).send({ error: message });
}
