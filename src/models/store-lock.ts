/**
 * A lock file shared by processes on one machine (and, through the staleness rule, across machines sharing a
 * folder): created with O_EXCL, holding the owner's pid, host and a random token, its mtime refreshed while held.
 * A lock whose owner died (same host, pid gone) or whose mtime stopped moving is broken, under a second lock so that
 * two waiters never both break it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rm, stat, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { z } from 'zod';
import { GraftError } from '../errors.js';

export interface LockOptions {
  /** A lock not refreshed for this long is stale (ms; default 30 000). */
  staleMs?: number;
  /** How often the holder refreshes the lock (ms; default staleMs / 4). */
  updateMs?: number;
  /** How often a waiter looks again (ms; default 100). */
  pollMs?: number;
  /** Give up waiting after this long (ms; default: wait as long as the holder is alive). */
  waitMs?: number;
  /** Called once when the lock is found held by someone else (e.g. to say "waiting for another download"). */
  onWait?: (holder: LockInfo | undefined) => void;
}

const LockInfoSchema = z.object({ pid: z.number().int(), host: z.string(), token: z.string(), since: z.string() });
export type LockInfo = z.infer<typeof LockInfoSchema>;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readInfo(path: string): Promise<LockInfo | undefined> {
  try {
    // Undefined while the holder is still writing it (created empty, then written) or when it is not a lock file.
    return LockInfoSchema.safeParse(JSON.parse(await readFile(path, 'utf8'))).data;
  } catch {
    return undefined;
  }
}

async function tryCreate(path: string, info: LockInfo): Promise<boolean> {
  try {
    const fh = await open(path, 'wx');
    try {
      await fh.writeFile(JSON.stringify(info));
    } finally {
      await fh.close();
    }
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

async function isStale(path: string, staleMs: number): Promise<{ stale: boolean; info?: LockInfo }> {
  let st;
  try {
    st = await stat(path);
  } catch {
    return { stale: false };
  }
  const info = await readInfo(path);
  // A lock file still being written by its creator has no content yet: give it a moment.
  if (!info) return { stale: Date.now() - st.mtimeMs > staleMs };
  if (info.host === hostname() && !pidAlive(info.pid)) return { stale: true, info };
  return { stale: Date.now() - st.mtimeMs > staleMs, info };
}

/** Remove `path` if it is still the stale lock `seen` (checked again under a breaker lock). */
async function breakStale(path: string, seen: LockInfo | undefined, staleMs: number): Promise<void> {
  const breaker = `${path}.break`;
  const me: LockInfo = { pid: process.pid, host: hostname(), token: randomBytes(8).toString('hex'), since: new Date().toISOString() };
  if (!(await tryCreate(breaker, me))) {
    // Someone else is breaking it; a breaker left by a crashed process is removed once stale.
    if ((await isStale(breaker, Math.min(staleMs, 5_000))).stale) await rm(breaker, { force: true });
    return;
  }
  try {
    const now = await isStale(path, staleMs);
    if (now.stale && now.info?.token === seen?.token) await rm(path, { force: true });
  } finally {
    await rm(breaker, { force: true });
  }
}

/** Run `fn` while holding the lock file `path`; waits while another process holds it. */
export async function withLock<T>(path: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const staleMs = opts.staleMs ?? 30_000;
  const updateMs = opts.updateMs ?? Math.max(50, Math.floor(staleMs / 4));
  const pollMs = opts.pollMs ?? 100;
  const t0 = Date.now();
  await mkdir(dirname(path), { recursive: true });
  const info: LockInfo = { pid: process.pid, host: hostname(), token: randomBytes(12).toString('hex'), since: new Date().toISOString() };
  let told = false;
  for (;;) {
    if (await tryCreate(path, info)) break;
    const s = await isStale(path, staleMs);
    if (s.stale) {
      await breakStale(path, s.info, staleMs);
      continue;
    }
    if (!told) {
      told = true;
      opts.onWait?.(s.info);
    }
    if (opts.waitMs !== undefined && Date.now() - t0 > opts.waitMs) {
      throw new GraftError(`timed out waiting for lock ${path}${s.info ? ` (held by pid ${s.info.pid} on ${s.info.host})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
  const refresh = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => {});
  }, updateMs);
  refresh.unref();
  try {
    return await fn();
  } finally {
    clearInterval(refresh);
    // Only remove the lock if it is still ours (it may have been broken as stale after a long stall).
    const cur = await readInfo(path);
    if (cur?.token === info.token) await rm(path, { force: true });
  }
}
