/** Jobs: list, state, cancel, and live events as Server-Sent Events. */
import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.js';
import { sendError } from '../context.js';
import type { JobEvent } from '../jobs.js';

export async function jobRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  const tags = ['jobs'];
  app.get('/api/jobs', { schema: { tags, summary: 'Jobs (project=<id> to filter)' } }, async (req) => ({ jobs: ctx.jobs.list((req.query as { project?: string }).project) }));

  app.get('/api/jobs/:id', { schema: { tags, summary: 'A job: state, position in line, progress, result or error' } }, async (req, reply) => {
    try {
      return ctx.jobs.get((req.params as { id: string }).id);
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.post('/api/jobs/:id/cancel', { schema: { tags, summary: 'Cancel a job (waiting: leaves the line; running: stops at its next check)' } }, async (req, reply) => {
    try {
      return ctx.jobs.cancel((req.params as { id: string }).id);
    } catch (err) {
      return sendError(reply, err);
    }
  });

  /**
   * text/event-stream: every event of the job so far (after Last-Event-ID when the browser reconnects), then each
   * new one; the stream ends with the job. A comment every 15 s keeps proxies from closing an idle stream.
   */
  app.get('/api/jobs/:id/events', { schema: { tags, summary: 'Live job events (Server-Sent Events)' } }, async (req, reply) => {
    const id = (req.params as { id: string }).id;
    try {
      ctx.jobs.get(id);
    } catch (err) {
      return sendError(reply, err);
    }
    const after = Number(req.headers['last-event-id'] ?? (req.query as { after?: string }).after ?? 0) || 0;
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    const write = (e: JobEvent) => res.write(`id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`);
    let closed = false;
    const end = () => {
      if (closed) return;
      closed = true;
      clearInterval(ping);
      unsubscribe();
      res.end();
    };
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
    const unsubscribe = ctx.jobs.subscribe(id, after, (e) => {
      write(e);
      if (e.type === 'state' && ['done', 'failed', 'cancelled'].includes((e.data as { state: string }).state)) setImmediate(end);
    });
    if (ctx.jobs.isFinished(id)) setImmediate(end);
    req.raw.on('close', end);
  });
}
