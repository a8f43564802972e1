import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { PreprocessSpec } from '../image/spec.js';
import { writeFileAtomic } from '../util/fs.js';
import { graftHome } from '../util/paths.js';

/** Bump when the entry format or anything that changes the stored numbers changes: old entries then miss. */
const CACHE_VERSION = 1;
const MAGIC = 0x43465247; // "GRFC" little-endian
const HEADER = 24; // magic u32, version u32, kind u32 (0 = features, 1 = unreadable), length u32, checksum 8 bytes

/** Cache folders whose failed writes were already told (see FeatureCache.put). */
const warnedDirs = new Set<string>();

export type CacheEntry = { kind: 'features'; data: Float32Array } | { kind: 'unreadable'; reason: string };

export function defaultFeatureCacheDir(): string {
  return process.env.GRAFT_FEATURE_CACHE ?? join(graftHome(), 'features');
}

function checksum(payload: Uint8Array): Buffer {
  return createHash('sha256').update(payload).digest().subarray(0, 8);
}

/**
 * Features on disk, one small file per image, under a folder named by what produced them (model bytes, tensor,
 * preprocessing), keyed by the file's identity (absolute path, size, mtime) and, for rows other than the plain one
 * (augmented views), a variant string. Any change to any of these makes a miss.
 * Each entry carries a checksum: a damaged entry reads as a miss and is rewritten. So does a features entry whose
 * length is not the one the caller expects (a checksum only proves the bytes are those written, not that they are a
 * row of this tensor). Images that failed to decode are cached too, so a re-run neither decodes them again nor
 * forgets to report them.
 */
export class FeatureCache {
  readonly dir: string;
  hits = 0;
  misses = 0;
  corrupt = 0;

  constructor(root: string, modelSha256: string, tensor: string, spec: PreprocessSpec) {
    const key = createHash('sha256')
      .update(JSON.stringify({ v: CACHE_VERSION, model: modelSha256, tensor, spec }))
      .digest('hex')
      .slice(0, 20);
    this.dir = join(root, key);
  }

  /**
   * Entry paths of files (and variants) that `get` missed, for the `put` that follows: it then needs no second stat
   * and hash, and stores the features under the identity the file had before it was decoded (if the file changes
   * meanwhile, the next run misses instead of trusting features of the old content).
   */
  private missed = new Map<string, string>();

  /** `variant` names another row of the same file (an augmented view); none = the plain row, keyed as before. */
  private async entryPath(file: string, variant?: string): Promise<string | undefined> {
    let st;
    try {
      st = await stat(file);
    } catch {
      return undefined;
    }
    const ident = `${resolve(file)}\0${st.size}\0${st.mtimeMs}${variant === undefined ? '' : `\0${variant}`}`;
    const id = createHash('sha256').update(ident).digest('hex').slice(0, 32);
    return join(this.dir, id.slice(0, 2), `${id}.bin`);
  }

  /**
   * `length`: the number of floats a features row of this tensor has; a features entry of another length counts as
   * damaged (a miss, rewritten by the `put` that follows). Without it any length is accepted.
   */
  async get(file: string, variant?: string, length?: number): Promise<CacheEntry | undefined> {
    const p = await this.entryPath(file, variant);
    if (!p) return undefined;
    let buf: Buffer;
    try {
      buf = await readFile(p);
    } catch {
      this.misses++;
      this.rememberMiss(missKey(file, variant), p);
      return undefined;
    }
    const entry = decodeEntry(buf);
    if (!entry || (length !== undefined && entry.kind === 'features' && entry.data.length !== length)) {
      this.corrupt++;
      this.misses++;
      this.rememberMiss(missKey(file, variant), p);
      return undefined;
    }
    this.hits++;
    return entry;
  }

  async put(file: string, entry: CacheEntry, variant?: string): Promise<void> {
    const key = missKey(file, variant);
    const p = this.missed.get(key) ?? (await this.entryPath(file, variant));
    this.missed.delete(key);
    if (!p || this.writeError !== undefined) return;
    try {
      await writeFileAtomic(p, encodeEntry(entry));
    } catch (err) {
      // The cache only saves time: a full disk or a read-only cache folder must not abort the run that computed the
      // features. The first failure is told once (onWriteError) and the cache stops writing.
      if (this.writeError !== undefined) return;
      this.writeError = (err as Error).message ?? String(err);
      // Once per cache folder and process: a run opens one cache per task (train, val) on the same folder.
      if (warnedDirs.has(this.dir)) return;
      warnedDirs.add(this.dir);
      this.onWriteError?.(`feature cache: ${this.writeError}; going on without writing to the cache`);
    }
  }

  /** Why writing stopped (the first failed write), if it did. */
  writeError: string | undefined;
  /** Told once, when a write fails (the CLI prints it as a warning). */
  onWriteError: ((message: string) => void) | undefined;

  private rememberMiss(key: string, entry: string): void {
    // Bounded: a caller that gets without putting (e.g. its batch failed) must not make this grow without end.
    if (this.missed.size >= 4096) this.missed.clear();
    this.missed.set(key, entry);
  }
}

export function encodeEntry(entry: CacheEntry): Buffer {
  const payload =
    entry.kind === 'features'
      ? new Uint8Array(entry.data.buffer, entry.data.byteOffset, entry.data.byteLength)
      : new TextEncoder().encode(entry.reason);
  const buf = Buffer.alloc(HEADER + payload.byteLength);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(CACHE_VERSION, 4);
  buf.writeUInt32LE(entry.kind === 'features' ? 0 : 1, 8);
  buf.writeUInt32LE(payload.byteLength, 12);
  checksum(payload).copy(buf, 16);
  buf.set(payload, HEADER);
  return buf;
}

export function decodeEntry(buf: Buffer): CacheEntry | undefined {
  if (buf.length < HEADER || buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== CACHE_VERSION) return undefined;
  const kind = buf.readUInt32LE(8);
  const len = buf.readUInt32LE(12);
  if (buf.length !== HEADER + len) return undefined;
  const payload = buf.subarray(HEADER);
  if (!checksum(payload).equals(buf.subarray(16, 24))) return undefined;
  if (kind === 0) {
    if (len % 4 !== 0) return undefined;
    // Copy: the read buffer may come from a shared pool with an unaligned offset.
    return { kind: 'features', data: new Float32Array(payload.buffer.slice(payload.byteOffset, payload.byteOffset + len)) };
  }
  if (kind === 1) return { kind: 'unreadable', reason: payload.toString('utf8') };
  return undefined;
}

const missKey = (file: string, variant?: string) => (variant === undefined ? file : `${file}\0${variant}`);
