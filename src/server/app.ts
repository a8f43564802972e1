/**
 * The Fastify application behind `graft serve`: JSON APIs under /api (documented by OpenAPI at /api/openapi.json,
 * browsable at /api/docs), job events as Server-Sent Events, the page at /. Built without listening, so tests can
 * drive it with `inject`.
 */
import { timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import rateLimit from '@fastify/rate-limit';
import fastifyStatic from '@fastify/static';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance } from 'fastify';
import { graftHome } from '../util/paths.js';
import { ClassifierCache, DEFAULT_LIMITS, errorReply, type Limits, type ServerContext } from './context.js';
import { JobQueue } from './jobs.js';
import { PredictorPool } from './predictors.js';
import { ProjectStore } from './projects.js';
import { jobRoutes } from './routes/jobs.js';
import { predictRoutes } from './routes/predict.js';
import { projectRoutes } from './routes/projects.js';
import { visionRoutes } from './routes/vision.js';

export interface AppOptions {
  /** Bearer token every /api request must carry (required when listening beyond loopback). */
  token?: string;
  /** Folders whose .onnx files and run folders may be named in model= (default: the current folder). GRAFT_HOME is always allowed. */
  modelsDirs?: string[];
  /** Where projects live (default GRAFT_HOME/projects). */
  projectsDir?: string;
  limits?: Partial<Limits>;
  /** Requests per minute per client address (default 6000). */
  rateLimit?: number;
  /** Jobs that may wait behind the running one (default 8). */
  maxWaitingJobs?: number;
  /** ONNX Runtime threads per model (default all cores). */
  threads?: number;
  /** Train projects' frozen heads on an int8 version of the backbone (calibrated on the project's photos). */
  int8?: boolean;
  /** Fastify's logger (default off). */
  logger?: boolean;
}

/** The built page: dist/web beside the compiled server (dist/server), or the repo's dist/web when run from src/. */
export function webRoot(): string | undefined {
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const c of [resolve(here, '../web'), resolve(here, '../../dist/web')]) if (existsSync(resolve(c, 'index.html'))) return c;
  return undefined;
}

function tokenMatches(given: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(.+)$/i.exec(given ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1]!.trim());
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function buildApp(opts: AppOptions = {}): Promise<{ app: FastifyInstance; ctx: ServerContext }> {
  const limits: Limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const roots = await Promise.all([...(opts.modelsDirs?.length ? opts.modelsDirs : [process.cwd()]), graftHome()].map((d) => realpath(resolve(d)).catch(() => resolve(d))));
  const projects = new ProjectStore(opts.projectsDir);
  const access = { roots, named: (p: string) => projects.named(p) };
  const ctx: ServerContext = {
    access,
    pool: new PredictorPool(access, { threads: opts.threads }),
    projects,
    jobs: new JobQueue({ maxWaiting: opts.maxWaitingJobs }),
    limits,
    classifiers: new ClassifierCache(access),
    threads: opts.threads,
    int8: opts.int8,
  };

  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: limits.bodyBytes,
    requestTimeout: limits.requestMs,
    // Ids are short; a long URL is a mistake or an attack.
    routerOptions: { maxParamLength: 200 },
  });

  app.setErrorHandler((err, _req, reply) => {
    const { status, message } = errorReply(err);
    if (status >= 500) app.log.error(err);
    void reply.code(status).send({ error: message });
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'graft', description: 'Transfer learning on images: predict, projects, training jobs, looking inside.', version: '0.1.0' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      ...(opts.token && { security: [{ bearer: [] }] }),
    },
  });
  await app.register(swaggerUi, { routePrefix: '/api/docs' });
  app.get('/api/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  await app.register(rateLimit, {
    max: opts.rateLimit ?? 6000,
    timeWindow: 60_000,
    errorResponseBuilder: (_req, c) => ({ statusCode: 429, message: `too many requests: at most ${c.max} a minute from one client; retry in ${Math.ceil(c.ttl / 1000)} s` }),
  });

  if (opts.token) {
    const token = opts.token;
    app.addHook('onRequest', async (req, reply) => {
      if (!req.url.startsWith('/api/') || req.url.startsWith('/api/docs')) return;
      if (!tokenMatches(req.headers.authorization, token)) {
        return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'this server needs a token: send the header Authorization: Bearer <token>' });
      }
    });
  }

  app.get('/api/health', { schema: { tags: ['server'], summary: 'Liveness and what is running' } }, async () => ({ ok: true, jobs: ctx.jobs.list().filter((j) => j.state === 'running' || j.state === 'queued').length }));

  await app.register(async (sub) => predictRoutes(sub, ctx));
  await app.register(async (sub) => projectRoutes(sub, ctx));
  await app.register(async (sub) => jobRoutes(sub, ctx));
  await app.register(async (sub) => visionRoutes(sub, ctx));

  const web = webRoot();
  if (web) await app.register(fastifyStatic, { root: web, prefix: '/', index: 'index.html' });
  else app.get('/', async (_req, reply) => reply.type('text/plain').send('graft serve: the page is not built (npm run build:web); the API is at /api, documented at /api/docs\n'));

  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: `no route ${req.method} ${req.url.split('?')[0]}` }));

  app.addHook('onClose', async () => {
    await ctx.jobs.close();
    await ctx.pool.close();
    await ctx.classifiers.close();
  });
  return { app, ctx };
}
