import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { GraftError } from '../errors.js';

/**
 * Write a file so that readers see either the old content or the new one, never half of it: write a temp file in
 * the same folder (same filesystem, so rename is atomic), then rename it over the target.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    // The folder usually exists (the feature cache writes thousands of entries into 256 folders): create it only
    // when the write says it is missing, saving a mkdir call per file.
    await writeFile(tmp, data).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      await mkdir(dirname(path), { recursive: true });
      await writeFile(tmp, data);
    });
    await rename(tmp, path);
  } catch (err) {
    // force ignores only ENOENT: under a path through a file rm fails too (ENOTDIR); the write's error is the news.
    await rm(tmp, { force: true }).catch(() => {});
    throw writeError(path, err);
  }
}

/** What an errno code means for a write, in words a user can act on. */
const WRITE_FAILURES: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large (over the file-size limit, see ulimit -f, or what the filesystem allows)',
  EROFS: 'read-only filesystem',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'a part of the path is a file, not a folder',
  EISDIR: 'it is a folder',
  ENAMETOOLONG: 'path too long',
  EMFILE: 'too many open files',
  EIO: 'input/output error (failing disk or lost network mount?)',
};

/** The message for a failed file operation on `path`, e.g. "cannot write runs/a/confusion.png: no space left on the device (ENOSPC)". */
export function describeFsError(path: string, err: unknown, verb = 'write'): string | undefined {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (!code || !/^E[A-Z]+$/.test(code)) return undefined;
  return `cannot ${verb} ${path}: ${WRITE_FAILURES[code] ?? (err as Error).message} (${code})`;
}

/** A failed write as a GraftError naming the file (what the CLI prints in one line), other errors as they are. */
export function writeError(path: string, err: unknown): unknown {
  if (err instanceof GraftError) return err;
  const msg = describeFsError(path, err);
  if (!msg) return err;
  const e = new GraftError(msg);
  (e as GraftError & { code?: string }).code = (err as NodeJS.ErrnoException).code;
  return e;
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(value, null, 2) + '\n');
}

/** The first `n` bytes of a file (fewer if it is shorter), for sniffing formats without reading the whole file. */
export async function readFileHead(path: string, n: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
