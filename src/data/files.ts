import type { Dirent, Stats } from 'node:fs';
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, extname, join, resolve, sep } from 'node:path';
import { z } from 'zod';

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
  | { kind: 'image'; path: string; link: boolean }
  | { kind: 'dir'; path: string; link: boolean }
  | { kind: 'skip'; path: string; reason: string }
  | { kind: 'none' };

async function classify(dir: string, e: Dirent): Promise<Entry> {
  const path = join(dir, e.name);
  if (isIgnoredName(e.name)) return { kind: 'none' };
  let isDir = e.isDirectory();
  let isFile = e.isFile();
  const link = e.isSymbolicLink();
  if (link) {
    const st = await statOrUndefined(path);
    if (!st) return { kind: 'skip', path, reason: 'broken symbolic link' };
    isDir = st.isDirectory();
    isFile = st.isFile();
  }
  if (isDir) return { kind: 'dir', path, link };
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
  return { kind: 'image', path, link };
}

/** `a` is `b` or a folder above it (paths absolute and resolved). */
export function isSameOrAncestor(a: string, b: string): boolean {
  return a === b || b.startsWith(a.endsWith(sep) ? a : a + sep);
}

const GraftRunMarker = z.object({ format: z.literal('graft-run') });

/**
 * A folder graft wrote as a run (its config.json says `"format": "graft-run"`): its PNGs are charts, not data, so
 * a walk passes over it (reported) rather than taking a run left inside a dataset for a class of images.
 */
async function isGraftRunFolder(dir: string, names: Dirent[]): Promise<boolean> {
  if (!names.some((e) => e.name === 'config.json')) return false;
  try {
    const text = await readFile(join(dir, 'config.json'), 'utf8');
    return text.length < 1_000_000 && GraftRunMarker.safeParse(JSON.parse(text)).success;
  } catch {
    return false;
  }
}

/** The class folders of a dataset, for walking one of them without leaving it through a link. */
export interface WalkScope {
  /** Real path of the dataset folder: a link to it, or to a folder above it, is a loop and is not followed. */
  realRoot: string;
  /** The other class folders (real paths): what a link reaches inside one of them is counted there, not here. */
  others?: { name: string; real: string }[];
  /**
   * Image files already listed, by real path → the path they were listed under (shared across the classes of one
   * dataset): a file reached a second time, through a link, is skipped rather than counted twice.
   */
  listed?: Map<string, { path: string; link: boolean }>;
}

function describeErr(err: unknown): string {
  const code = errCode(err);
  return code === 'ENAMETOOLONG' ? 'path longer than the system allows, ENAMETOOLONG' : code;
}

/**
 * Every image file below `dir`, recursively. Image = one of {@link IMAGE_EXTENSIONS}, any case. Hidden files and
 * folders (name starting with '.') and OS junk (`Thumbs.db`, `desktop.ini`) are passed over silently; empty files,
 * files of other types, broken links, unreadable sub-folders and run folders graft wrote are reported in `skipped`.
 * Symlinks are followed, each real folder is walked once and each real file listed once; a link back to a folder
 * holding the walk (or the dataset, `scope.realRoot`) is a loop and is reported, as is a link into another class
 * folder of `scope` (its images belong to that class). Paths are absolute and keep the names as walked (not resolved
 * through links). Does not open the files: a corrupt image is listed.
 */
export async function findImages(dir: string, scope?: WalkScope): Promise<Discovery> {
  const files = new Set<string>();
  const skipped: Skipped[] = [];
  const seen = new Set<string>();
  const listed = scope?.listed ?? new Map<string, { path: string; link: boolean }>();
  const start = resolve(dir);
  let realStart: string;
  try {
    realStart = await realpath(start);
  } catch (err) {
    return { files: [], skipped: [{ path: start, reason: `cannot read folder (${describeErr(err)})` }] };
  }
  const realRoot = scope?.realRoot ?? realStart;

  /** Why what a link leads to (real path) is not taken here; undefined when it is. */
  const refuseLink = (real: string, realParent: string, isDir: boolean): string | undefined => {
    if (isDir && (isSameOrAncestor(real, realParent) || isSameOrAncestor(real, realRoot))) {
      return 'symbolic link to a folder that holds it (a loop); not followed';
    }
    const other = scope?.others?.find((o) => isSameOrAncestor(o.real, real));
    if (other) return `symbolic link into class folder '${other.name}'; counted there, not here`;
    return undefined;
  };

  // The real path of each folder is carried down the walk (parent's real path + name) rather than asked with
  // realpath(), which re-resolves every component: on a tree 2047 folders deep that was ~2 M lstat calls of
  // growing length and 89 s of system time; now realpath runs only for links.
  const walk = async (d: string, realD: string): Promise<void> => {
    if (seen.has(realD)) return;
    seen.add(realD);
    let entries: Dirent[];
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch (err) {
      skipped.push({ path: d, reason: `cannot read folder (${describeErr(err)})` });
      return;
    }
    if (d !== start && (await isGraftRunFolder(d, entries))) {
      skipped.push({ path: d, reason: 'a run folder written by graft (charts, not data); not walked' });
      return;
    }
    entries.sort((a, b) => compareBytes(a.name, b.name));
    const classified = await mapLimit(entries, STAT_CONCURRENCY, (e) => classify(d, e));
    for (const c of classified) {
      if (c.kind === 'none') continue;
      if (c.kind === 'skip') {
        skipped.push({ path: c.path, reason: c.reason });
        continue;
      }
      let real = join(realD, basename(c.path));
      if (c.link) {
        try {
          real = await realpath(c.path);
        } catch (err) {
          skipped.push({ path: c.path, reason: `cannot follow symbolic link (${describeErr(err)})` });
          continue;
        }
        const why = refuseLink(real, realD, c.kind === 'dir');
        if (why) {
          skipped.push({ path: c.path, reason: why });
          continue;
        }
      }
      if (c.kind === 'dir') {
        await walk(c.path, real);
        continue;
      }
      const first = listed.get(real);
      if (first !== undefined) {
        // The file itself wins over a link to it that the walk happened to meet first (`again.png` -> `img0.png`).
        if (first.link && !c.link && files.delete(first.path)) {
          skipped.push({ path: first.path, reason: `the same file as ${c.path} (listed once)` });
          listed.set(real, { path: c.path, link: false });
          files.add(c.path);
        } else {
          skipped.push({ path: c.path, reason: `the same file as ${first.path} (listed once)` });
        }
        continue;
      }
      listed.set(real, { path: c.path, link: c.link });
      files.add(c.path);
    }
  };

  await walk(start, realStart);
  return { files: sortBytes([...files]), skipped: sortByPath(skipped) };
}

/** A name's last path component without its extension (`/a/great_pyrenees_173.jpg` → `great_pyrenees_173`). */
export function stem(path: string): string {
  const name = basename(path);
  const ext = extname(name);
  return ext ? name.slice(0, -ext.length) : name;
}
