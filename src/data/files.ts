import type { Dirent, Stats } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import { basename, extname, join, resolve } from 'node:path';

/** One image of a dataset. `path` is absolute; `label` indexes the dataset's `classes`. */
export interface DatasetItem {
  path: string;
  label: number;
}

/** A file left out of a dataset, and why (a few words). */
export interface Skipped {
  path: string;
  reason: string;
}

/** Extensions (lower case, with the dot) of the formats sharp decodes. Matched case-insensitively. */
export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set([
  '.jpg',
  '.jpeg',
  '.png',
  '.webp',
  '.gif',
  '.tif',
  '.tiff',
  '.avif',
]);

/** Files that operating systems drop into image folders; never images, never reported. Matched case-insensitively. */
const JUNK_FILES: ReadonlySet<string> = new Set(['thumbs.db', 'desktop.ini', 'ehthumbs.db', 'ehthumbs_vista.db']);

export const REASON_EMPTY = 'empty file (0 bytes)';
export const REASON_NOT_FOUND = 'file not found';

/** True for a file name with one of {@link IMAGE_EXTENSIONS}, whatever its case (`a.JPG`, `b.Jpeg`). */
export function isImageFileName(name: string): boolean {
  return IMAGE_EXTENSIONS.has(extname(name).toLowerCase());
}

/** True for names discovery passes over silently: hidden entries (`.DS_Store`, `.git/`, `._x.jpg`) and OS junk. */
export function isIgnoredName(name: string): boolean {
  return name.startsWith('.') || JUNK_FILES.has(name.toLowerCase());
}

/** Byte order of the UTF-8 encodings: the same on every platform and locale. */
export function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Sort strings in place by {@link compareBytes}. */
export function sortBytes(arr: string[]): string[] {
  return arr.sort(compareBytes);
}

export function sortByPath<T extends { path: string }>(arr: T[]): T[] {
  return arr.sort((a, b) => compareBytes(a.path, b.path));
}

export interface Discovery {
  /** Absolute paths of the image files found, sorted by {@link compareBytes}. */
  files: string[];
  /** Files seen but left out (empty, unsupported type, unreadable folder, broken link), sorted by path. */
  skipped: Skipped[];
}

function errCode(err: unknown): string {
  return (err as NodeJS.ErrnoException)?.code ?? String(err);
}

/** `stat` following symlinks; `undefined` when the target does not exist (missing file, broken link). */
export async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (err) {
    const code = errCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') return undefined;
    throw err;
  }
}

/** Non-hidden entries of a folder, following symlinks, split into folders and files; names byte-sorted. */
export async function listDir(dir: string): Promise<{ dirs: string[]; files: string[] }> {
  const entries = await readdir(dir, { withFileTypes: true });
  const dirs: string[] = [];
  const files: string[] = [];
  for (const e of entries) {
    if (isIgnoredName(e.name)) continue;
    if (e.isDirectory()) dirs.push(e.name);
    else if (e.isFile()) files.push(e.name);
    else if (e.isSymbolicLink()) {
      const st = await statOrUndefined(join(dir, e.name));
      if (st?.isDirectory()) dirs.push(e.name);
      else if (st?.isFile()) files.push(e.name);
    }
  }
  return { dirs: sortBytes(dirs), files: sortBytes(files) };
}

const STAT_CONCURRENCY = 64;

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

type Entry =
  | { kind: 'image'; path: string }
  | { kind: 'dir'; path: string }
  | { kind: 'skip'; path: string; reason: string }
  | { kind: 'none' };

async function classify(dir: string, e: Dirent): Promise<Entry> {
  const path = join(dir, e.name);
  if (isIgnoredName(e.name)) return { kind: 'none' };
  let isDir = e.isDirectory();
  let isFile = e.isFile();
  if (e.isSymbolicLink()) {
    const st = await statOrUndefined(path);
    if (!st) return { kind: 'skip', path, reason: 'broken symbolic link' };
    isDir = st.isDirectory();
    isFile = st.isFile();
  }
  if (isDir) return { kind: 'dir', path };
  if (!isFile) return { kind: 'none' }; // sockets, fifos, devices
  if (!isImageFileName(e.name)) {
    const ext = extname(e.name);
    return { kind: 'skip', path, reason: ext ? `not an image file type (${ext})` : 'not an image file type (no extension)' };
  }
  try {
    const st = await stat(path);
    if (st.size === 0) return { kind: 'skip', path, reason: REASON_EMPTY };
  } catch (err) {
    return { kind: 'skip', path, reason: `cannot read file (${errCode(err)})` };
  }
  return { kind: 'image', path };
}

/**
 * Every image file below `dir`, recursively. Image = one of {@link IMAGE_EXTENSIONS}, any case. Hidden files and
 * folders (name starting with '.') and OS junk (`Thumbs.db`, `desktop.ini`) are passed over silently; empty files,
 * files of other types, broken links and unreadable sub-folders are reported in `skipped`. Symlinks are followed,
 * each real folder is walked once (so loops end and a folder linked twice is not listed twice). Paths are absolute
 * and keep the names as walked (not resolved through links). Does not open the files: a corrupt image is listed.
 */
export async function findImages(dir: string): Promise<Discovery> {
  const files: string[] = [];
  const skipped: Skipped[] = [];
  const seen = new Set<string>();

  const walk = async (d: string): Promise<void> => {
    let real: string;
    let entries: Dirent[];
    try {
      real = await realpath(d);
      if (seen.has(real)) return;
      seen.add(real);
      entries = await readdir(d, { withFileTypes: true });
    } catch (err) {
      skipped.push({ path: d, reason: `cannot read folder (${errCode(err)})` });
      return;
    }
    entries.sort((a, b) => compareBytes(a.name, b.name));
    const classified = await mapLimit(entries, STAT_CONCURRENCY, (e) => classify(d, e));
    for (const c of classified) {
      if (c.kind === 'image') files.push(c.path);
      else if (c.kind === 'skip') skipped.push({ path: c.path, reason: c.reason });
      else if (c.kind === 'dir') await walk(c.path);
    }
  };

  await walk(resolve(dir));
  return { files: sortBytes(files), skipped: sortByPath(skipped) };
}

/** A name's last path component without its extension (`/a/great_pyrenees_173.jpg` → `great_pyrenees_173`). */
export function stem(path: string): string {
  const name = basename(path);
  const ext = extname(name);
  return ext ? name.slice(0, -ext.length) : name;
}
