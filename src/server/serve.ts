/** Listening: host and token rules, then the app; `close` shuts down gracefully (jobs checkpoint, nothing half-written). */
import { isIP } from 'node:net';
import { UsageError } from '../errors.js';
import { buildApp, type AppOptions } from './app.js';

export interface ServeOptions extends AppOptions {
  port?: number;
  host?: string;
}

export interface RunningServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Loopback names and addresses: only this machine can reach them. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  return isIP(h) === 4 && h.startsWith('127.');
}

export async function startServer(opts: ServeOptions = {}): Promise<RunningServer> {
  const host = opts.host ?? '127.0.0.1';
  if (!isLoopback(host) && !opts.token) {
    throw new UsageError(`--host ${host} makes the server reachable from other machines: give --token <secret> too (clients send Authorization: Bearer <secret>), or stay on 127.0.0.1`);
  }
  if (opts.token !== undefined && opts.token.length < 8) throw new UsageError('--token: use at least 8 characters');
  const { app } = await buildApp(opts);
  try {
    await app.listen({ port: opts.port ?? 7860, host });
  } catch (err) {
    await app.close();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new UsageError(`port ${opts.port ?? 7860} on ${host} is in use; pick another with --port`);
    if (code === 'EADDRNOTAVAIL') throw new UsageError(`--host ${host}: not an address of this machine`);
    throw err;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : (opts.port ?? 7860);
  const shown = host.includes(':') ? `[${host}]` : host;
  return { url: `http://${shown}:${port}`, port, close: () => app.close() };
}
