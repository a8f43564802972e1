/**
 * Where the queue lives: a Redis URL (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS) turned into
 * the connection options BullMQ takes. Reconnection is ioredis's: it retries for ever with a growing pause (capped
 * at 2 s), so a Redis restart mid-run is waited out by workers and coordinator alike.
 */
import { UsageError } from '../errors.js';

export interface RedisConnection {
  host: string;
  port: number;
  username?: string;
  password?: string;
  db?: number;
  tls?: Record<string, never>;
  /** BullMQ workers block on Redis: they need ioredis to retry a command as long as it takes, not give up. */
  maxRetriesPerRequest: null;
  retryStrategy: (times: number) => number;
  /** For messages: the URL without its password. */
  display: string;
}

export function parseQueueUrl(url: string): RedisConnection {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`--queue ${url}: not a URL; expected redis://host:port (e.g. redis://127.0.0.1:6379)`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new UsageError(`--queue ${url}: expected a redis:// or rediss:// URL, got ${u.protocol}//`);
  }
  const port = u.port ? Number(u.port) : 6379;
  const dbText = u.pathname.replace(/^\//, '');
  const db = dbText === '' ? undefined : Number(dbText);
  if (db !== undefined && !(Number.isInteger(db) && db >= 0)) throw new UsageError(`--queue ${url}: the database number '${dbText}' is not an integer >= 0`);
  return {
    host: u.hostname || '127.0.0.1',
    port,
    ...(u.username && { username: decodeURIComponent(u.username) }),
    ...(u.password && { password: decodeURIComponent(u.password) }),
    ...(db !== undefined && { db }),
    ...(u.protocol === 'rediss:' && { tls: {} }),
    maxRetriesPerRequest: null,
    retryStrategy: (times) => Math.min(100 * times, 2000),
    display: `${u.protocol}//${u.hostname}:${port}${db !== undefined ? `/${db}` : ''}`,
  };
}

/** The options object for BullMQ (without our display field). */
export function bullConnection(c: RedisConnection): Omit<RedisConnection, 'display'> {
  const { display: _d, ...rest } = c;
  return rest;
}
