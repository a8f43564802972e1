/**
 * graft's model store: `$GRAFT_HOME/models` (GRAFT_HOME defaults to the user's cache dir).
 *
 *   blobs/<sha256>                  every file, once, named by its content (read-only)
 *   entries/<name>/                 a pulled catalog model: its files under their release names (hard links to
 *                                   blobs), `.graft-entry.json` (what was pulled, from where, with which checksums),
 *                                   a `<model>.onnx.json` sidecar with the catalog's preprocessing for ONNX models,
 *                                   and `.imported/` for ONNX converted by a registered importer
 *   urls/<key>/<file>               a model fetched by URL (`--model https://...`), with `.graft-url.json`
 *   checksums.json                  SHA-256 recorded by first downloads (trust on first use), kept by `graft rm`
 *   tmp/, locks/                    partial downloads (resumed by the next pull) and lock files
 *
 * Folders appear complete or not at all (built in tmp/, then renamed), and a lock per model makes two processes
 * pulling the same model download it once.
 */
import { createHash } from 'node:crypto';
import { chmod, link, mkdir, mkdtemp, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, posix, resolve as resolvePath } from 'node:path';
import { z } from 'zod';
import { GraftError } from '../errors.js';
import { graftHome } from '../util/paths.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/fs.js';
import { closeMatches, findEntry, looksLikeName, type CatalogEntry, type CatalogFile, type ModelFormat } from './catalog.js';

export { catalogEntries, closeMatches, findEntry, type CatalogEntry, type CatalogFile, type LabelSet, type ModelFormat } from './catalog.js';
import { downloadFile, isUrl, type DownloadOptions, type DownloadProgress } from './download.js';
import { parseOnnx } from './onnx-file.js';
import { checkOnnxExternalData, checkTflite, checkTfjsFolder, insideFolder, parseTfjsModelJson, safeRelativePath, sniffModel } from './store-checks.js';
import { withLock, type LockOptions } from './store-lock.js';
import { ChecksumFileSchema, ENTRY_MANIFEST, mirrorSource, siblingUrl, EntryManifestSchema, NAME_RE, URL_MANIFEST, UrlManifestSchema, adoptBlob, errCode, exists, readJson, sha, sidecarFor, unknownModel, type ChecksumFile, type ChecksumRecord, type EntryManifest, type UrlManifest } from './store-files.js';
import { convertTo, importerFor } from './importer-registry.js';

export { mirrorSource, siblingUrl, type ChecksumRecord } from './store-files.js';
export { importerFor, registerImporter, unregisterImporter, type Importer } from './importer-registry.js';

export interface StoreOptions extends DownloadOptions {
  /**
   * Fetch files from here instead of their official URLs: a folder or a URL prefix, laid out as
   * `<mirror>/<entry name>/<file name>`. Default: the GRAFT_MIRROR environment variable; null: no mirror.
   */
  mirror?: string | null;
  /** Download again even when the model is in the store. */
  force?: boolean;
  /** Lock tuning (mostly for tests). */
  lock?: LockOptions;
}

/** How a stored file's checksum was established. */
export type ChecksumSource = 'catalog' | 'recorded' | 'new';

export interface StoredFile {
  name: string;
  path: string;
  size: number;
  sha256: string;
  /** Where it was downloaded from. */
  source: string;
  /** 'catalog': matched the catalog; 'recorded': matched the checksum recorded by an earlier download; 'new': recorded now. */
  checksum: ChecksumSource;
}

export interface PulledModel {
  name: string;
  format: ModelFormat;
  /** The model's folder in the store. */
  dir: string;
  /** Its entry file (the .onnx, model.json or .tflite). */
  main: string;
  files: StoredFile[];
  bytes: number;
  /** False when the model was already in the store. */
  downloaded: boolean;
}

export interface CachedModel {
  /** Catalog name, or the URL for a model fetched by URL. */
  name: string;
  kind: 'catalog' | 'url';
  format?: ModelFormat;
  dir: string;
  main: string;
  bytes: number;
  files: number;
  pulledAt: string;
}

export class ModelStore {
  readonly blobs: string;
  readonly entries: string;
  readonly urls: string;
  readonly tmp: string;
  readonly locks: string;
  readonly checksumsPath: string;

  constructor(readonly root: string) {
    this.blobs = join(root, 'blobs');
    this.entries = join(root, 'entries');
    this.urls = join(root, 'urls');
    this.tmp = join(root, 'tmp');
    this.locks = join(root, 'locks');
    this.checksumsPath = join(root, 'checksums.json');
  }

  entryDir(name: string): string {
    if (!NAME_RE.test(name)) throw new GraftError(`bad model name '${name}'`);
    return join(this.entries, name);
  }

  private urlDir(url: string): string {
    return join(this.urls, sha(url).slice(0, 16));
  }

  /** The pulled model `name` if it is in the store and its files are all there. */
  async cached(name: string): Promise<PulledModel | undefined> {
    const dir = this.entryDir(name);
    const m = await readJson(join(dir, ENTRY_MANIFEST), EntryManifestSchema);
    if (!m || m.version !== 1 || !Array.isArray(m.files) || m.files.length === 0) return undefined;
    const files: StoredFile[] = [];
    for (const f of m.files) {
      const path = join(dir, ...f.name.split('/'));
      try {
        if ((await stat(path)).size !== f.size) return undefined;
      } catch {
        return undefined;
      }
      files.push({ ...f, path });
    }
    return { name: m.name, format: m.format, dir, main: files[0]!.path, files, bytes: files.reduce((s, f) => s + f.size, 0), downloaded: false };
  }

  /** Checksums recorded by first downloads, by `<entry>/<file>`. */
  async checksumRecords(): Promise<Record<string, ChecksumRecord>> {
    const f = await readJson(this.checksumsPath, ChecksumFileSchema);
    return f?.version === 1 && f.files && typeof f.files === 'object' ? f.files : {};
  }

  private async updateChecksums(fn: (files: Record<string, ChecksumRecord>) => void): Promise<void> {
    await withLock(join(this.locks, 'checksums.lock'), async () => {
      const files = await this.checksumRecords();
      fn(files);
      await writeJsonAtomic(this.checksumsPath, { version: 1, files } satisfies ChecksumFile);
    });
  }

  /**
   * Download a catalog model (by name or entry) into the store, verified; returns at once if it is there already.
   * Safe to call from several processes at the same time: one downloads, the others wait and share the result.
   */
  async pull(what: string | CatalogEntry, opts: StoreOptions = {}): Promise<PulledModel> {
    const entry = typeof what === 'string' ? findEntry(what) : what;
    if (!entry) throw unknownModel(String(what));
    if (!NAME_RE.test(entry.name)) throw new GraftError(`bad model name '${entry.name}'`);
    if (!opts.force) {
      const have = await this.cached(entry.name);
      if (have) return have;
    }
    return withLock(
      join(this.locks, `entry-${entry.name}.lock`),
      async () => {
        if (!opts.force) {
          const have = await this.cached(entry.name);
          if (have) return have;
        }
        return this.download(entry, opts);
      },
      { ...opts.lock, onWait: opts.lock?.onWait ?? (() => opts.log?.(`${entry.name}: another process is downloading it; waiting`)) },
    );
  }

  private async download(entry: CatalogEntry, opts: StoreOptions): Promise<PulledModel> {
    const mirror = opts.mirror === undefined ? process.env.GRAFT_MIRROR || undefined : opts.mirror ?? undefined;
    const records = await this.checksumRecords();
    await mkdir(this.tmp, { recursive: true });
    // Folders left by a pull of this model that crashed (we hold its lock: nobody else is building one now).
    const leftover = new RegExp(`^stage-${entry.name.replace(/[.]/g, '\\.')}-[A-Za-z0-9]{6}$`);
    for (const f of await readdir(this.tmp)) if (leftover.test(f)) await rm(join(this.tmp, f), { recursive: true, force: true });
    const staging = await mkdtemp(join(this.tmp, `stage-${entry.name}-`));
    await chmod(staging, 0o755).catch(() => {});
    const tfjs = entry.format === 'tfjs-layers' || entry.format === 'tfjs-graph';
    const planned: CatalogFile[] = entry.files.map((f) => ({ ...f, name: safeRelativePath(f.name, `${entry.name}: catalog file name`) }));
    if (planned.some((f) => f.name === ENTRY_MANIFEST || f.name.startsWith('.imported'))) throw new GraftError(`${entry.name}: reserved file name in the catalog entry`);
    let plannedTotal: number | undefined =
      planned.every((f) => f.size !== undefined) && !(tfjs && planned.length === 1) ? planned.reduce((s, f) => s + f.size!, 0) : undefined;
    let doneBytes = 0;
    const stored: (StoredFile & { staged: string })[] = [];
    try {
      for (let i = 0; i < planned.length; i++) {
        const file = planned[i]!;
        const got = await this.fetchFile(entry, file, staging, records, mirror, opts, (p) =>
          opts.onProgress?.({
            file: file.name,
            received: doneBytes + p.received,
            total: plannedTotal ?? (planned.length === 1 ? p.total : undefined),
          }),
        );
        stored.push(got);
        doneBytes += got.size;
        if (tfjs && i === 0) {
          // The shards come from model.json's weights manifest, fetched from beside it.
          const m = parseTfjsModelJson(await readFile(got.staged, 'utf8'), `${entry.name}/${file.name}`);
          const base = posix.dirname(file.name);
          const listed = new Set(planned.map((f) => f.name));
          for (const shard of m.shards) {
            const name = base === '.' ? shard : `${base}/${shard}`;
            if (listed.has(name)) continue;
            // Official addresses beside the model.json that worked (with a mirror: beside the first official one).
            planned.push({ name, urls: file.urls.length ? [siblingUrl(mirror ? file.urls[0]! : got.source, shard)] : [] });
            listed.add(name);
          }
          if (plannedTotal === undefined && m.groupBytes.every((b) => b !== undefined)) {
            plannedTotal = got.size + (m.groupBytes as number[]).reduce((s, b) => s + b, 0);
          }
        }
      }
      await this.checkContent(entry, staging, stored[0]!.name);
      // Into the content-addressed blobs; the model's folder is made of links to them.
      for (const f of stored) await adoptBlob(this.blobs, f.staged, f.sha256);
      const manifest: EntryManifest = {
        version: 1,
        name: entry.name,
        format: entry.format,
        pulledAt: new Date().toISOString(),
        files: stored.map(({ name, size, sha256, source, checksum }) => ({ name, size, sha256, source, checksum })),
      };
      if (entry.format === 'onnx') await writeJsonAtomic(`${stored[0]!.staged}.json`, sidecarFor(entry, true));
      await writeJsonAtomic(join(staging, ENTRY_MANIFEST), manifest);
      // Recorded only now that every check passed (and before the folder appears, so a stored model always has them).
      const fresh = stored.filter((f) => f.checksum === 'new');
      if (fresh.length) {
        await this.updateChecksums((files) => {
          for (const f of fresh) files[`${entry.name}/${f.name}`] = { sha256: f.sha256, size: f.size, source: f.source, recordedAt: manifest.pulledAt };
        });
        opts.log?.(`${entry.name}: no published checksum for ${fresh.map((f) => f.name).join(', ')}; recorded the downloaded SHA-256 (trust on first use)`);
      }
      const dir = this.entryDir(entry.name);
      await mkdir(this.entries, { recursive: true });
      if (await exists(dir)) {
        const old = await mkdtemp(join(this.tmp, `old-${entry.name}-`));
        await rename(dir, join(old, 'x'));
        await rename(staging, dir);
        await rm(old, { recursive: true, force: true });
      } else {
        await rename(staging, dir);
      }
      const files = stored.map(({ staged: _, ...f }) => ({ ...f, path: join(dir, ...f.name.split('/')) }));
      return { name: entry.name, format: entry.format, dir, main: files[0]!.path, files, bytes: doneBytes, downloaded: true };
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      throw err;
    }
  }

  /** Download one file of an entry into the staging folder, verified against the catalog or an earlier record. */
  private async fetchFile(
    entry: CatalogEntry,
    file: CatalogFile,
    staging: string,
    records: Record<string, ChecksumRecord>,
    mirror: string | undefined,
    opts: StoreOptions,
    onProgress: (p: DownloadProgress) => void,
  ): Promise<StoredFile & { staged: string }> {
    const key = `${entry.name}/${file.name}`;
    const rec = records[key];
    let checksum: ChecksumSource = 'new';
    const expected: { size?: number; sha256?: string } = { size: file.size };
    if (file.sha256) {
      expected.sha256 = file.sha256;
      checksum = 'catalog';
    } else if (rec) {
      expected.sha256 = rec.sha256;
      expected.size ??= rec.size;
      checksum = 'recorded';
    }
    const sources = mirror ? [mirrorSource(mirror, entry.name, file.name)] : file.urls;
    if (sources.length === 0) throw new GraftError(`${key}: the catalog gives no URL for it`);
    const dest = join(this.tmp, `dl-${sha(key).slice(0, 24)}`);
    const errors: GraftError[] = [];
    for (const source of sources) {
      try {
        const r = await downloadFile(source, dest, { ...expected, label: `${key} (${source})` }, { ...opts, onProgress });
        const staged = insideFolder(staging, file.name, key);
        await mkdir(dirname(staged), { recursive: true });
        await rename(r.path, staged);
        return { name: file.name, path: staged, staged, size: r.size, sha256: r.sha256, source, checksum };
      } catch (err) {
        if (!(err instanceof GraftError)) throw err;
        errors.push(err);
        // A file that came but was wrong is not fetched again from a second address.
        if (/checksum mismatch|size mismatch|size cap/.test(err.message)) break;
      }
    }
    const first = errors[0]!;
    throw new GraftError(errors.length > 1 ? `${first.message} (and ${errors.length - 1} other address(es) failed too)` : first.message);
  }

  /** Check that the files are what the entry says: an ONNX model, a TF.js model folder, a TFLite flatbuffer. */
  private async checkContent(entry: CatalogEntry, staging: string, main: string): Promise<void> {
    const label = `${entry.name}/${main}`;
    const path = join(staging, ...main.split('/'));
    if (entry.format === 'onnx') {
      const { proto } = parseOnnx(new Uint8Array(await readFile(path)), label);
      await checkOnnxExternalData(proto, label, staging);
    } else if (entry.format === 'tflite') {
      await checkTflite(path).catch((err: Error) => {
        throw new GraftError(err.message.replace(path, label));
      });
    } else {
      const m = await checkTfjsFolder(staging, main, label);
      if (m.kind !== entry.format) throw new GraftError(`${label}: a ${m.kind} model, but the catalog says ${entry.format}`);
    }
  }

  /** Fetch a URL into the store (once; later calls reuse it). The URL is not a catalog entry: no checksum to check. */
  async fetchUrl(url: string, opts: StoreOptions = {}): Promise<string> {
    const dir = this.urlDir(url);
    const have = async () => {
      const m = await readJson(join(dir, URL_MANIFEST), UrlManifestSchema);
      if (!m || m.url !== url) return undefined;
      const p = join(dir, m.file);
      try {
        return (await stat(p)).size === m.size ? p : undefined;
      } catch {
        return undefined;
      }
    };
    const cachedPath = await have();
    if (cachedPath && !opts.force) return cachedPath;
    return withLock(join(this.locks, `url-${basename(dir)}.lock`), async () => {
      const again = await have();
      if (again && !opts.force) return again;
      let file = decodeURIComponent(basename(new URL(url).pathname)).replace(/[^A-Za-z0-9._-]/g, '_');
      if (!file || file.startsWith('.')) file = `download${file}`;
      const dest = join(this.tmp, `url-${basename(dir)}`);
      const r = await downloadFile(url, dest, { label: url }, opts);
      await mkdir(this.tmp, { recursive: true });
      const staging = await mkdtemp(join(this.tmp, 'url-'));
      await chmod(staging, 0o755).catch(() => {});
      try {
        await rename(r.path, join(staging, file));
        await adoptBlob(this.blobs, join(staging, file), r.sha256);
        await writeJsonAtomic(join(staging, URL_MANIFEST), {
          version: 1,
          url,
          file,
          size: r.size,
          sha256: r.sha256,
          pulledAt: new Date().toISOString(),
        } satisfies UrlManifest);
        await mkdir(this.urls, { recursive: true });
        if (await exists(dir)) await rm(dir, { recursive: true, force: true });
        await rename(staging, dir);
      } catch (err) {
        await rm(staging, { recursive: true, force: true });
        throw err;
      }
      return join(dir, file);
    });
  }

  /** Everything in the store: pulled catalog models and models fetched by URL. */
  async list(): Promise<CachedModel[]> {
    const outList: CachedModel[] = [];
    for (const name of await readdir(this.entries).catch(() => [] as string[])) {
      if (!NAME_RE.test(name)) continue;
      const m = await this.cached(name);
      if (!m) continue;
      const man = await readJson(join(m.dir, ENTRY_MANIFEST), EntryManifestSchema);
      outList.push({ name, kind: 'catalog', format: m.format, dir: m.dir, main: m.main, bytes: m.bytes, files: m.files.length, pulledAt: man?.pulledAt ?? '' });
    }
    for (const key of await readdir(this.urls).catch(() => [] as string[])) {
      const dir = join(this.urls, key);
      const m = await readJson(join(dir, URL_MANIFEST), UrlManifestSchema);
      if (!m) continue;
      outList.push({ name: m.url, kind: 'url', dir, main: join(dir, m.file), bytes: m.size, files: 1, pulledAt: m.pulledAt });
    }
    return outList.sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Remove a pulled model (catalog name or URL) and the blobs nothing else uses. Recorded checksums stay (so that a
   * later pull is still verified) unless `forget`.
   */
  async remove(what: string, opts: { forget?: boolean } = {}): Promise<{ name: string; removed: boolean; freedBytes: number; forgot: number }> {
    let dir: string;
    let lockName: string;
    if (isUrl(what)) {
      dir = this.urlDir(what);
      lockName = `url-${basename(dir)}.lock`;
    } else {
      const known =
        NAME_RE.test(what) &&
        (findEntry(what) !== undefined ||
          (await exists(join(this.entries, what))) ||
          Object.keys(await this.checksumRecords()).some((k) => k.startsWith(`${what}/`)));
      if (!known) throw unknownModel(what);
      const name = findEntry(what)?.name ?? what;
      dir = this.entryDir(name);
      lockName = `entry-${name}.lock`;
      what = name;
    }
    const present = await exists(dir);
    let freed = 0;
    if (present) {
      await withLock(join(this.locks, lockName), async () => {
        await mkdir(this.tmp, { recursive: true });
        const trash = await mkdtemp(join(this.tmp, 'rm-'));
        await rename(dir, join(trash, 'x'));
        await rm(trash, { recursive: true, force: true });
      });
      freed = await this.collectGarbage();
    }
    let forgot = 0;
    if (opts.forget && !isUrl(what)) {
      await this.updateChecksums((files) => {
        for (const k of Object.keys(files)) {
          if (k.startsWith(`${what}/`)) {
            delete files[k];
            forgot++;
          }
        }
      });
    }
    return { name: what, removed: present, freedBytes: freed, forgot };
  }

  /**
   * A stored model file with this SHA-256, for a run whose recorded path no longer leads to its backbone: pulled
   * catalog files and URL downloads by their manifests, then ONNX files converted by importers (hashed here; there
   * are few). Undefined when the store has no such file.
   */
  async findBySha256(hash: string): Promise<string | undefined> {
    const sized = async (p: string, size: number) => ((await stat(p).catch(() => undefined))?.size === size ? p : undefined);
    for (const name of await readdir(this.entries).catch(() => [] as string[])) {
      const m = await readJson(join(this.entries, name, ENTRY_MANIFEST), EntryManifestSchema);
      for (const f of m?.files ?? []) {
        if (f.sha256 !== hash) continue;
        const p = await sized(join(this.entries, name, ...f.name.split('/')), f.size);
        if (p) return p;
      }
    }
    for (const key of await readdir(this.urls).catch(() => [] as string[])) {
      const m = await readJson(join(this.urls, key, URL_MANIFEST), UrlManifestSchema);
      if (m?.sha256 !== hash) continue;
      const p = await sized(join(this.urls, key, m.file), m.size);
      if (p) return p;
    }
    const converted: string[] = [];
    for (const key of await readdir(join(this.root, 'imported')).catch(() => [] as string[])) converted.push(join(this.root, 'imported', key, 'model.onnx'));
    for (const name of await readdir(this.entries).catch(() => [] as string[])) {
      const dir = join(this.entries, name, '.imported');
      for (const f of await readdir(dir).catch(() => [] as string[])) if (f.endsWith('.onnx')) converted.push(join(dir, f));
    }
    for (const p of converted) {
      const bytes = await readFile(p).catch(() => undefined);
      if (bytes && createHash('sha256').update(bytes).digest('hex') === hash) return p;
    }
    return undefined;
  }

  /** Delete blobs no stored model refers to; returns the bytes freed. */
  async collectGarbage(): Promise<number> {
    return withLock(join(this.locks, 'gc.lock'), async () => {
      const used = new Set<string>();
      for (const name of await readdir(this.entries).catch(() => [] as string[])) {
        const m = await readJson(join(this.entries, name, ENTRY_MANIFEST), EntryManifestSchema);
        for (const f of m?.files ?? []) used.add(f.sha256);
      }
      for (const key of await readdir(this.urls).catch(() => [] as string[])) {
        const m = await readJson(join(this.urls, key, URL_MANIFEST), UrlManifestSchema);
        if (m) used.add(m.sha256);
      }
      // Trash of interrupted removals.
      for (const f of await readdir(this.tmp).catch(() => [] as string[])) {
        if (/^(rm|old-.*)-[A-Za-z0-9]{6}$/.test(f)) await rm(join(this.tmp, f), { recursive: true, force: true });
      }
      let freed = 0;
      for (const b of await readdir(this.blobs).catch(() => [] as string[])) {
        if (used.has(b)) continue;
        // Safe even against a pull running now: its files are links of their own, not the blob's name.
        const p = join(this.blobs, b);
        const st = await stat(p).catch(() => undefined);
        if (!st) continue;
        if (st.nlink <= 1) freed += st.size;
        await rm(p, { force: true });
      }
      return freed;
    });
  }
}

/** The store under GRAFT_HOME (read at each call, so a changed GRAFT_HOME takes effect). */
export function defaultStore(): ModelStore {
  return new ModelStore(join(graftHome(), 'models'));
}

