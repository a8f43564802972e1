/**
 * The downloader: one file from an http(s) URL (or a local path / file:// URL, for folder mirrors) to disk, with
 * resume (HTTP Range), retries with backoff, an inactivity timeout, a size cap and SHA-256 verification. It never
 * leaves a half file under the final name: bytes go to `<dest>.part`, which is renamed when complete and verified.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { GraftError } from '../errors.js';

export interface DownloadProgress {
  /** Bytes on disk so far (for a multi-file model: of the whole model). */
  received: number;
  /** Expected total, when known. */
  total?: number;
  /** The file being fetched, when the download is part of a model with several files. */
  file?: string;
}

export interface DownloadOptions {
  /** An attempt fails when no data arrives for this long (ms; default 30 000). */
  timeoutMs?: number;
  /** Further attempts after a failure that may pass (dropped connection, timeout, HTTP 5xx/408/429; default 4). */
  retries?: number;
  /** Wait before the first retry (ms; default 500), doubled each time (with jitter), at most 30 s. */
  backoffMs?: number;
  /** Refuse files larger than this (bytes; default GRAFT_MAX_DOWNLOAD_BYTES or 4 GiB). */
  maxBytes?: number;
  signal?: AbortSignal;
  onProgress?: (p: DownloadProgress) => void;
  /** Told about retries and resumes (e.g. the CLI's warn). */
  log?: (message: string) => void;
}

export interface ExpectedFile {
  size?: number;
  sha256?: string;
  /** How to name the file in messages (default: the source). */
  label?: string;
}

export interface DownloadResult {
  path: string;
  size: number;
  sha256: string;
  /** Attempts made (1 when the first one succeeded). */
  attempts: number;
  /** Some attempt continued a partial file with a Range request. */
  resumed: boolean;
}

export const DEFAULT_MAX_BYTES = 4 * 1024 ** 3;

export function isUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

function maxBytesDefault(): number {
  const env = Number(process.env.GRAFT_MAX_DOWNLOAD_BYTES);
  return Number.isFinite(env) && env > 0 ? env : DEFAULT_MAX_BYTES;
}

/** A failure of one attempt; `retryable` says whether another attempt may succeed. */
class AttemptError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
    /** The partial file is useless (wrong content): delete it. */
    readonly discard = false,
  ) {
    super(message);
  }
}

/** `<file>.part.json`: where a partial download came from, to resume it only from the same source and version. */
const PartMetaSchema = z.object({ source: z.string(), etag: z.string().optional(), lastModified: z.string().optional() });
type PartMeta = z.infer<typeof PartMetaSchema>;

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

async function hashPrefix(path: string, bytes: number): Promise<Hash> {
  const h = createHash('sha256');
  if (bytes === 0) return h;
  for await (const chunk of createReadStream(path, { start: 0, end: bytes - 1 })) h.update(chunk as Buffer);
  return h;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(new GraftError('download cancelled'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function describe(err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string; code?: string } };
  const cause = e?.cause?.code ?? e?.cause?.message;
  const msg = e?.message ?? String(err);
  return cause && !msg.includes(cause) ? `${msg} (${cause})` : msg;
}

/**
 * Download `source` to `dest`. Keeps `<dest>.part` across failures so that a later call resumes it; deletes it when
 * its content is wrong (checksum or size mismatch, size cap). Throws GraftError with a one-line reason.
 */
export async function downloadFile(source: string, dest: string, expected: ExpectedFile = {}, opts: DownloadOptions = {}): Promise<DownloadResult> {
  const label = expected.label ?? source;
  const part = `${dest}.part`;
  const metaPath = `${part}.json`;
  const retries = opts.retries ?? 4;
  const backoff = opts.backoffMs ?? 500;
  const maxBytes = opts.maxBytes ?? maxBytesDefault();
  const local = !isUrl(source);
  await mkdir(dirname(dest), { recursive: true });

  if (expected.size !== undefined && expected.size > maxBytes) {
    throw new GraftError(`download refused: ${label}: ${expected.size} bytes is over the size cap of ${maxBytes} bytes (GRAFT_MAX_DOWNLOAD_BYTES)`);
  }

  // A partial file from another source (or another release) is not resumed.
  let meta: PartMeta | undefined;
  try {
    meta = PartMetaSchema.safeParse(JSON.parse(await readFile(metaPath, 'utf8'))).data;
  } catch {
    meta = undefined;
  }
  if (!meta || meta.source !== source || local) {
    await rm(part, { force: true });
    meta = { source };
  }

  let failures = 0;
  let attempts = 0;
  let resumed = false;
  let best = await sizeOf(part);
  let hash: Hash | undefined;
  let done = false;
  while (!done) {
    attempts++;
    try {
      const r = local
        ? await attemptLocal(source, part, expected, maxBytes, label, opts)
        : await attemptHttp(source, part, meta, expected, maxBytes, label, opts, metaPath);
      hash = r.hash;
      resumed ||= r.resumed;
      done = true;
    } catch (err) {
      const e =
        err instanceof AttemptError
          ? err
          : err instanceof GraftError
            ? new AttemptError(err.message, false)
            : new AttemptError(`download failed: ${label}: ${describe(err)}`, !local);
      if (opts.signal?.aborted) {
        throw new GraftError(`download cancelled: ${label}`);
      }
      if (e.discard) {
        await rm(part, { force: true });
        await rm(metaPath, { force: true });
      }
      const now = await sizeOf(part);
      if (now > best) {
        // Progress was made: a connection that keeps dropping mid-file still gets the whole file, piece by piece.
        best = now;
        failures = 0;
      }
      failures++;
      if (!e.retryable || failures > retries) {
        throw new GraftError(e.retryable && retries > 0 ? `${e.message} (gave up after ${attempts} attempts)` : e.message);
      }
      const wait = Math.min(30_000, Math.max(e.retryAfterMs ?? 0, backoff * 2 ** (failures - 1) * (0.75 + Math.random() * 0.5)));
      opts.log?.(`${e.message}; retrying in ${(wait / 1000).toFixed(1)} s${now > 0 ? ` (resuming at byte ${now})` : ''}`);
      await sleep(wait, opts.signal);
    }
  }

  const size = await sizeOf(part);
  const sha256 = hash!.digest('hex');
  if (expected.size !== undefined && size !== expected.size) {
    await rm(part, { force: true });
    throw new GraftError(`size mismatch for ${label}: expected ${expected.size} bytes, got ${size}; the downloaded file was deleted`);
  }
  if (expected.sha256 && sha256 !== expected.sha256.toLowerCase()) {
    await rm(part, { force: true });
    await rm(metaPath, { force: true });
    throw new GraftError(
      `checksum mismatch for ${label}: expected sha256 ${expected.sha256}, got ${sha256}; the downloaded file was deleted`,
    );
  }
  await rename(part, dest);
  await rm(metaPath, { force: true });
  return { path: dest, size, sha256, attempts, resumed };
}

function checkCaps(received: number, expected: ExpectedFile, maxBytes: number, label: string): void {
  if (received > maxBytes) {
    throw new AttemptError(`download refused: ${label}: more than the size cap of ${maxBytes} bytes (GRAFT_MAX_DOWNLOAD_BYTES)`, false, undefined, true);
  }
  if (expected.size !== undefined && received > expected.size) {
    throw new AttemptError(`size mismatch for ${label}: more than the expected ${expected.size} bytes; the downloaded file was deleted`, false, undefined, true);
  }
}

/** Copy from a local path (a folder mirror). */
async function attemptLocal(
  source: string,
  part: string,
  expected: ExpectedFile,
  maxBytes: number,
  label: string,
  opts: DownloadOptions,
): Promise<{ hash: Hash; resumed: boolean }> {
  const path = source.startsWith('file:') ? fileURLToPath(source) : source;
  let st;
  try {
    st = await stat(path);
  } catch {
    throw new AttemptError(`download failed: ${label}: not found: ${path}`, false);
  }
  if (!st.isFile()) throw new AttemptError(`download failed: ${label}: not a file: ${path}`, false);
  if (st.size > maxBytes) throw new AttemptError(`download refused: ${label}: ${st.size} bytes is over the size cap of ${maxBytes} bytes (GRAFT_MAX_DOWNLOAD_BYTES)`, false);
  if (expected.size !== undefined && st.size !== expected.size) {
    throw new AttemptError(`size mismatch for ${label}: ${path} has ${st.size} bytes, expected ${expected.size}`, false);
  }
  const hash = createHash('sha256');
  const fh = await open(part, 'w');
  let received = 0;
  try {
    for await (const chunk of createReadStream(path)) {
      const buf = chunk as Buffer;
      received += buf.length;
      checkCaps(received, expected, maxBytes, label);
      hash.update(buf);
      await fh.write(buf);
      opts.onProgress?.({ received, total: st.size });
    }
  } finally {
    await fh.close();
  }
  return { hash, resumed: false };
}

async function attemptHttp(
  url: string,
  part: string,
  meta: PartMeta,
  expected: ExpectedFile,
  maxBytes: number,
  label: string,
  opts: DownloadOptions,
  metaPath: string,
): Promise<{ hash: Hash; resumed: boolean }> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  let offset = await sizeOf(part);
  if (expected.size !== undefined && offset > expected.size) {
    await rm(part, { force: true });
    offset = 0;
  }
  if (expected.size !== undefined && offset === expected.size && offset > 0) {
    // Complete from an earlier attempt that stopped before the rename: verify what is there.
    return { hash: await hashPrefix(part, offset), resumed: true };
  }

  const ac = new AbortController();
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, timeoutMs);
  };
  const onAbort = () => ac.abort();
  opts.signal?.addEventListener('abort', onAbort);
  const timeoutError = () => new AttemptError(`download failed: ${label}: timed out (no data for ${timeoutMs} ms)`, true);

  const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'graft (model downloader)' };
  if (offset > 0) {
    headers.range = `bytes=${offset}-`;
    const validator = meta.etag && !meta.etag.startsWith('W/') ? meta.etag : meta.lastModified;
    if (validator) headers['if-range'] = validator;
  }
  arm();
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: ac.signal, redirect: 'follow' });
  } catch (err) {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    if (timedOut) throw timeoutError();
    throw new AttemptError(`download failed: ${label}: ${describe(err)}`, true);
  }

  try {
    const status = res.status;
    if (status === 416 && offset > 0) {
      // The partial file does not fit what the server has now: start again.
      await res.body?.cancel();
      await rm(part, { force: true });
      throw new AttemptError(`download failed: ${label}: HTTP 416 (partial file does not match; restarting)`, true);
    }
    if (!(status === 200 || status === 206)) {
      await res.body?.cancel().catch(() => {});
      const retryable = status === 408 || status === 429 || status >= 500;
      const ra = Number(res.headers.get('retry-after'));
      throw new AttemptError(
        `download failed: ${label}: HTTP ${status}${res.statusText ? ` ${res.statusText}` : ''}`,
        retryable,
        Number.isFinite(ra) && ra > 0 ? Math.min(ra, 60) * 1000 : undefined,
      );
    }
    if (!res.body) throw new AttemptError(`download failed: ${label}: empty response`, true);
    const encoded = (res.headers.get('content-encoding') ?? 'identity') !== 'identity';
    const length = encoded ? undefined : Number(res.headers.get('content-length') ?? NaN);

    let start = 0;
    let resumed = false;
    if (status === 206 && offset > 0) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/i.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== offset) {
        await res.body.cancel();
        await rm(part, { force: true });
        throw new AttemptError(`download failed: ${label}: server answered the range request with another range; restarting`, true);
      }
      start = offset;
      resumed = true;
    } else if (status === 206) {
      // A 206 we did not ask for: only acceptable if it is the whole file from byte 0.
      const m = /^bytes 0-(\d+)\/(\d+)$/i.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) + 1 !== Number(m[2])) {
        await res.body.cancel();
        throw new AttemptError(`download failed: ${label}: unexpected partial content`, true);
      }
    }
    const total = length !== undefined && Number.isFinite(length) ? start + length : undefined;
    if (total !== undefined) {
      if (total > maxBytes) {
        await res.body.cancel();
        throw new AttemptError(`download refused: ${label}: ${total} bytes is over the size cap of ${maxBytes} bytes (GRAFT_MAX_DOWNLOAD_BYTES)`, false, undefined, true);
      }
      if (expected.size !== undefined && total !== expected.size) {
        await res.body.cancel();
        throw new AttemptError(`size mismatch for ${label}: the server sends ${total} bytes, expected ${expected.size}; nothing was kept`, false, undefined, true);
      }
    }
    // Remember the validators so that a resume (even by a later process) only continues the same file.
    const newMeta: PartMeta = { source: url, etag: res.headers.get('etag') ?? undefined, lastModified: res.headers.get('last-modified') ?? undefined };
    if (!resumed) await writeFile(metaPath, JSON.stringify(newMeta));
    Object.assign(meta, newMeta);

    const hash = resumed ? await hashPrefix(part, start) : createHash('sha256');
    const fh = await open(part, resumed ? 'a' : 'w');
    let received = start;
    try {
      if (resumed) opts.log?.(`${label}: resuming at byte ${start}`);
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        arm();
        received += chunk.length;
        checkCaps(received, expected, maxBytes, label);
        hash.update(chunk);
        await fh.write(chunk);
        opts.onProgress?.({ received, total: total ?? expected.size });
      }
    } catch (err) {
      if (err instanceof AttemptError) throw err;
      if (timedOut) throw timeoutError();
      throw new AttemptError(`download failed: ${label}: connection lost after ${received} bytes (${describe(err)})`, true);
    } finally {
      await fh.close();
    }
    if (total !== undefined && received < total) {
      throw new AttemptError(`download failed: ${label}: got ${received} of ${total} bytes`, true);
    }
    return { hash, resumed };
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
