import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { GraftError } from '../errors.js';
import { graftHome } from '../util/paths.js';

export interface DownloadProgress { received: number; total?: number }

export function isUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

/**
 * Fetch a URL into graft's download cache (once; later calls reuse the file). The file appears only when complete
 * (temp + rename), so an interrupted download never leaves a half model that looks whole.
 */
export async function downloadToCache(
  url: string,
  opts: { onProgress?: (p: DownloadProgress) => void; timeoutMs?: number } = {},
): Promise<string> {
  const key = createHash('sha256').update(url).digest('hex').slice(0, 16);
  const name = basename(new URL(url).pathname) || 'download';
  const dir = join(graftHome(), 'downloads', key);
  const dest = join(dir, name);
  try {
    if ((await stat(dest)).isFile()) return dest;
  } catch {
    /* not cached yet */
  }
  await mkdir(dir, { recursive: true });
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(opts.timeoutMs ?? 60_000) });
  } catch (err) {
    throw new GraftError(`download failed: ${url}: ${(err as Error).message}`);
  }
  if (!res.ok || !res.body) throw new GraftError(`download failed: ${url}: HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get('content-length')) || undefined;
  const tmp = `${dest}.${process.pid}.part`;
  const out = createWriteStream(tmp);
  let received = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      received += chunk.length;
      if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
      opts.onProgress?.({ received, total });
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    if (total !== undefined && received !== total) {
      throw new GraftError(`download failed: ${url}: got ${received} of ${total} bytes`);
    }
    await rename(tmp, dest);
  } catch (err) {
    out.destroy();
    await rm(tmp, { force: true });
    if (err instanceof GraftError) throw err;
    throw new GraftError(`download failed: ${url}: ${(err as Error).message}`);
  }
  return dest;
}
