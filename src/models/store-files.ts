/**
 * The files of graft's model store other than the models: manifests and recorded checksums (zod schemas for what is
 * read back), sidecars of catalog models, mirror URLs, and the small helpers the store's operations share.
 */
import { createHash } from 'node:crypto';
import { chmod, link, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, posix, resolve as resolvePath } from 'node:path';
import { z } from 'zod';
import { GraftError } from '../errors.js';
import { closeMatches, type CatalogEntry } from './catalog.js';
import { isUrl } from './download.js';
import { safeRelativePath } from './store-checks.js';

export const ChecksumRecordSchema = z.object({ sha256: z.string(), size: z.number(), source: z.string(), recordedAt: z.string() });
export type ChecksumRecord = z.infer<typeof ChecksumRecordSchema>;

// The store's own files, read back through these schemas: a damaged one counts as absent (the model is pulled again).
export const EntryManifestSchema = z.object({
  version: z.literal(1),
  name: z.string(),
  format: z.enum(['onnx', 'tfjs-layers', 'tfjs-graph', 'tflite']),
  pulledAt: z.string(),
  files: z.array(z.object({ name: z.string(), size: z.number(), sha256: z.string(), source: z.string(), checksum: z.enum(['catalog', 'recorded', 'new']) })).min(1),
});
export type EntryManifest = z.infer<typeof EntryManifestSchema>;
export const UrlManifestSchema = z.object({ version: z.literal(1), url: z.string(), file: z.string(), size: z.number(), sha256: z.string(), pulledAt: z.string() });
export type UrlManifest = z.infer<typeof UrlManifestSchema>;
export const ChecksumFileSchema = z.object({ version: z.literal(1), files: z.record(z.string(), ChecksumRecordSchema) });
export type ChecksumFile = z.infer<typeof ChecksumFileSchema>;

export const ENTRY_MANIFEST = '.graft-entry.json';
export const URL_MANIFEST = '.graft-url.json';
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function sha(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** A JSON file of the store checked against `schema`; undefined when it is missing, unreadable or not what it should be. */
export async function readJson<S extends z.ZodType>(p: string, schema: S): Promise<z.output<S> | undefined> {
  try {
    const r = schema.safeParse(JSON.parse(await readFile(p, 'utf8')));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

/** `<mirror>/<entry>/<file>`: a URL when the mirror is one, else a path inside the mirror folder. */
export function mirrorSource(mirror: string, entry: string, file: string): string {
  const rel = safeRelativePath(file, `${entry}: file name`);
  if (isUrl(mirror)) return `${mirror.replace(/\/+$/, '')}/${encodeURIComponent(entry)}/${rel.split('/').map(encodeURIComponent).join('/')}`;
  const dir = mirror.startsWith('file:') ? new URL(mirror).pathname : mirror;
  return join(resolvePath(dir), entry, ...rel.split('/'));
}

/** A file beside `url` (same folder, same query string: TF Hub serves shards as `<dir>/<shard>?tfjs-format=file`). */
export function siblingUrl(url: string, rel: string): string {
  const u = new URL(url);
  const dir = u.pathname.replace(/[^/]*$/, '');
  return `${u.origin}${dir}${rel.split('/').map(encodeURIComponent).join('/')}${u.search}`;
}

export function unknownModel(name: string): GraftError {
  const close = closeMatches(name);
  return new GraftError(
    `unknown model '${name}': not a file, a URL or a catalog name${close.length ? `; did you mean ${close.join(', ')}?` : ''} ('graft models' lists the catalog)`,
  );
}

export function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException)?.code;
}

/**
 * Make the verified file `file` (sha256 `hash`) share its bytes with the blob of that content: replace it by a hard
 * link to an existing blob, or make it the blob. Where the filesystem has no hard links the file stays a plain copy.
 * Never leaves `file` missing, even if a concurrent `graft rm` deletes the blob meanwhile.
 */
export async function adoptBlob(blobs: string, file: string, hash: string): Promise<void> {
  await mkdir(blobs, { recursive: true });
  const blob = join(blobs, hash);
  const tmp = `${file}.blob-link`;
  try {
    await link(blob, tmp);
    await rename(tmp, file);
    return;
  } catch (err) {
    await rm(tmp, { force: true });
    if (errCode(err) !== 'ENOENT') {
      if (errCode(err) === 'EEXIST' || errCode(err) === 'EPERM' || errCode(err) === 'ENOTSUP' || errCode(err) === 'EXDEV') return;
      throw err;
    }
  }
  try {
    await link(file, blob);
    if (process.platform !== 'win32') await chmod(blob, 0o444).catch(() => {});
  } catch (err) {
    if (errCode(err) === 'EEXIST') return;
    if (['EPERM', 'ENOTSUP', 'EXDEV', 'EMLINK'].includes(errCode(err) ?? '')) return;
    throw err;
  }
}

/**
 * The sidecar written beside a catalog model: the catalog's preprocessing and, for ONNX releases, its node names.
 * For converted models (withNodes false) the tensor layout is the importer's, read from the ONNX input, not the
 * release's (a TF.js model is NHWC; graft's importers write NCHW graphs).
 */
export function sidecarFor(entry: CatalogEntry, withNodes: boolean): Record<string, unknown> {
  const { layout, ...rest } = entry.preprocess as Record<string, unknown>;
  return {
    preprocess: withNodes ? { layout, ...rest } : rest,
    ...(withNodes && entry.featureNode ? { featureOutput: entry.featureNode } : {}),
    ...(withNodes && entry.classifierNode ? { logitsOutput: entry.classifierNode } : {}),
  };
}

