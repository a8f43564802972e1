import { readFile, realpath } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { GraftError, UsageError } from '../errors.js';
import {
  compareBytes,
  type DatasetItem,
  findImages,
  isIgnoredName,
  isImageFileName,
  listDir,
  REASON_EMPTY,
  REASON_NOT_FOUND,
  type Skipped,
  type WalkScope,
  sortByPath,
  statOrUndefined,
  stem,
} from './files.js';

export type LayoutName = 'folder' | 'oxford-pets' | 'petimages';
export const LAYOUT_NAMES: readonly LayoutName[] = ['folder', 'oxford-pets', 'petimages'];

export interface Dataset {
  /** Absolute path of the folder that was opened (as given, resolved). */
  root: string;
  layout: LayoutName;
  /** Class names; `items[i].label` indexes this list. */
  classes: string[];
  /** Sorted by path (byte order). */
  items: DatasetItem[];
  /** Files seen but left out, with the reason; sorted by path. */
  skipped: Skipped[];
}

export interface OpenDatasetOptions {
  /** Default 'auto' ({@link detectLayout}). */
  layout?: LayoutName | 'auto';
  /** oxford-pets only: 37 breeds (default) or the 2 species `cat`, `dog`. */
  label?: 'breed' | 'species';
  /**
   * Force the class list and its order (e.g. the training run's, to evaluate on another folder). Items of a class
   * not in the list are an error; classes of the list with no items are fine.
   */
  classes?: string[];
}

/** What a layout reader produces: class names per file, before labels are numbered. */
interface Raw {
  /** The layout's own class order. */
  classes: string[];
  entries: { path: string; className: string }[];
  skipped: Skipped[];
}

async function isDir(path: string): Promise<boolean> {
  return (await statOrUndefined(path))?.isDirectory() ?? false;
}

async function isFile(path: string): Promise<boolean> {
  return (await statOrUndefined(path))?.isFile() ?? false;
}

function quoteList(names: string[], max = 10): string {
  const shown = names.slice(0, max).map((n) => `'${n}'`);
  return shown.join(', ') + (names.length > max ? `, ... (${names.length} in all)` : '');
}

/** Case-insensitive order, ties broken by byte order: Abyssinian, american_bulldog, ..., Bengal, ... */
export function compareCaseInsensitive(a: string, b: string): number {
  return compareBytes(a.toLowerCase(), b.toLowerCase()) || compareBytes(a, b);
}

// ---------------------------------------------------------------- folder

const SPLIT_NAMES = new Set(['train', 'training', 'val', 'valid', 'validation', 'test', 'testing', 'dev', 'eval']);

/**
 * `cats_vs_dogs/` holding `train/{cats,dogs}` and `validation/{cats,dogs}` would open as 2 classes, train and
 * validation: refuse that when the "classes" are split names holding only sub-folders, and say where to point.
 */
async function rejectSplitsFolder(root: string, dirs: string[], looseImages: number): Promise<void> {
  if (looseImages > 0 || !dirs.some((d) => SPLIT_NAMES.has(d.toLowerCase()))) return;
  const subs: string[][] = [];
  for (const d of dirs) {
    const { dirs: sub, files } = await listDir(join(root, d));
    if (sub.length === 0 || files.some(isImageFileName)) return;
    subs.push(sub);
  }
  throw new GraftError(
    `dataset folder ${root} looks like a folder of splits (${quoteList(dirs)}), each holding class folders ` +
      `(${quoteList(subs[0])}); open one split, e.g. ${join(root, dirs[0])}`,
  );
}

/**
 * The scope of each class folder's walk: one shared list of files, links into another class counted there, links
 * up to the dataset folder refused. (`ln -s .. cats/up` once listed every dog as a cat.)
 */
async function classWalks(root: string, classDirs: string[]): Promise<(cls: string) => WalkScope | undefined> {
  let realRoot: string;
  try {
    realRoot = await realpath(root);
  } catch {
    return () => undefined;
  }
  const reals = new Map<string, string>();
  for (const cls of classDirs) {
    try {
      reals.set(cls, await realpath(join(root, cls)));
    } catch {
      // unreadable class folder: its walk reports it
    }
  }
  const listed: NonNullable<WalkScope['listed']> = new Map();
  return (cls) => ({
    realRoot,
    listed,
    others: [...reals].filter(([name, real]) => name !== cls && real !== reals.get(cls)).map(([name, real]) => ({ name, real })),
  });
}

async function readFolderLayout(root: string, forced: boolean): Promise<Raw> {
  const { dirs, files } = await listDir(root);
  const skipped: Skipped[] = files.map((f) => ({ path: join(root, f), reason: 'not inside a class folder' }));
  const looseImages = files.filter(isImageFileName).length;
  const minClasses = forced ? 1 : 2;
  if (dirs.length < minClasses) {
    const found =
      dirs.length === 0 ? 'no sub-folders' : `only 1 sub-folder (${quoteList(dirs)})`;
    const loose = looseImages > 0 ? ` and ${looseImages} image file(s) directly in it` : '';
    throw new GraftError(
      `dataset folder ${root} needs one sub-folder per class (at least ${minClasses}), with the images inside; ` +
        `found ${found}${loose}`,
    );
  }
  await rejectSplitsFolder(root, dirs, looseImages);
  const entries: Raw['entries'] = [];
  const walks = await classWalks(root, dirs);
  for (const cls of dirs) {
    const found = await findImages(join(root, cls), walks(cls));
    if (found.files.length === 0) {
      const why = found.skipped.length > 0 ? ` (${found.skipped.length} file(s) skipped, e.g. ${found.skipped[0].path}: ${found.skipped[0].reason})` : '';
      throw new GraftError(`class folder '${cls}' in ${root} has no images${why}`);
    }
    for (const path of found.files) entries.push({ path, className: cls });
    skipped.push(...found.skipped);
  }
  return { classes: dirs, entries, skipped };
}

// ---------------------------------------------------------------- oxford-pets

const PET_NAME = /^(.+)_(\d+)$/;

/** Breed from an Oxford-IIIT Pet file name: `great_pyrenees_173.jpg` → `great_pyrenees`; undefined if not that shape. */
export function petBreedFromName(fileName: string): string | undefined {
  return PET_NAME.exec(stem(fileName))?.[1];
}

/** Oxford-IIIT Pet convention: cat breeds are capitalised (`Abyssinian`), dog breeds are not (`beagle`). */
export function petSpeciesOfBreed(breed: string): 'cat' | 'dog' {
  return /^\p{Lu}/u.test(breed) ? 'cat' : 'dog';
}

interface PetAnnotation {
  classId: number;
  species: 'cat' | 'dog';
}

/**
 * Parse the Oxford-IIIT Pet `annotations/list.txt` (`Image CLASS-ID SPECIES BREED-ID`, '#' comments, species
 * 1 = cat, 2 = dog). Returns the annotation of each image name (no extension) and the breed name of each class id,
 * taken from the image names listed under it (the most common one).
 */
export async function readPetList(
  path: string,
): Promise<{ byImage: Map<string, PetAnnotation>; breedOfClassId: Map<number, string> }> {
  const text = await readFile(path, 'utf8');
  const byImage = new Map<string, PetAnnotation>();
  const votes = new Map<number, Map<string, number>>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(/\s+/);
    const classId = Number(f[1]);
    const speciesId = Number(f[2]);
    if (f.length < 3 || !Number.isInteger(classId) || classId < 1 || (speciesId !== 1 && speciesId !== 2)) {
      throw new GraftError(
        `${path} line ${i + 1}: expected "<image> <class-id> <species 1|2> <breed-id>", got "${line}"`,
      );
    }
    byImage.set(f[0], { classId, species: speciesId === 1 ? 'cat' : 'dog' });
    const breed = petBreedFromName(f[0]) ?? f[0];
    let v = votes.get(classId);
    if (!v) votes.set(classId, (v = new Map()));
    v.set(breed, (v.get(breed) ?? 0) + 1);
  }
  const breedOfClassId = new Map<number, string>();
  for (const [id, v] of votes) {
    const best = [...v.entries()].sort((a, b) => b[1] - a[1] || compareBytes(a[0], b[0]))[0][0];
    breedOfClassId.set(id, best);
  }
  return { byImage, breedOfClassId };
}

/** Where the images and the list are, for a root that is the dataset folder or its `images/` folder. */
async function petPaths(root: string): Promise<{ imagesDir: string; listPath?: string }> {
  if (await isDir(join(root, 'images'))) {
    const listPath = join(root, 'annotations', 'list.txt');
    return { imagesDir: join(root, 'images'), listPath: (await isFile(listPath)) ? listPath : undefined };
  }
  const listPath = join(dirname(root), 'annotations', 'list.txt');
  return { imagesDir: root, listPath: (await isFile(listPath)) ? listPath : undefined };
}

async function readOxfordPets(root: string, label: 'breed' | 'species'): Promise<Raw> {
  const { imagesDir, listPath } = await petPaths(root);
  const found = await findImages(imagesDir, { realRoot: await realpath(root) });
  const list = listPath ? await readPetList(listPath) : undefined;
  const skipped = [...found.skipped];
  const entries: Raw['entries'] = [];
  for (const path of found.files) {
    const ann = list?.byImage.get(stem(path));
    let breed: string | undefined;
    let species: 'cat' | 'dog' | undefined;
    if (ann) {
      breed = list!.breedOfClassId.get(ann.classId);
      species = ann.species;
    } else {
      breed = petBreedFromName(basename(path));
      species = breed === undefined ? undefined : petSpeciesOfBreed(breed);
    }
    if (breed === undefined || species === undefined) {
      skipped.push({
        path,
        reason: `name is not <breed>_<number>${list ? ' and the file is not in annotations/list.txt' : ''}`,
      });
      continue;
    }
    entries.push({ path, className: label === 'species' ? species : breed });
  }
  if (entries.length === 0) {
    throw new GraftError(`oxford-pets dataset ${root} has no images (looked in ${imagesDir})`);
  }
  const classes =
    label === 'species'
      ? ['cat', 'dog']
      : [...new Set(entries.map((e) => e.className))].sort(compareCaseInsensitive);
  return { classes, entries, skipped };
}

// ---------------------------------------------------------------- petimages

async function petImagesDir(root: string): Promise<string | undefined> {
  for (const dir of [root, join(root, 'PetImages')]) {
    if ((await isDir(join(dir, 'Cat'))) && (await isDir(join(dir, 'Dog')))) return dir;
  }
  return undefined;
}

async function readPetImages(root: string): Promise<Raw> {
  const dir = await petImagesDir(root);
  if (!dir) throw new GraftError(`not a PetImages dataset: ${root} has no Cat/ and Dog/ folders (nor PetImages/Cat, PetImages/Dog)`);
  const entries: Raw['entries'] = [];
  const skipped: Skipped[] = [];
  const walks = await classWalks(dir, ['Cat', 'Dog']);
  for (const [folder, cls] of [['Cat', 'cat'], ['Dog', 'dog']] as const) {
    const found = await findImages(join(dir, folder), walks(folder));
    if (found.files.length === 0) throw new GraftError(`class folder '${folder}' in ${dir} has no images`);
    for (const path of found.files) entries.push({ path, className: cls });
    skipped.push(...found.skipped);
  }
  return { classes: ['cat', 'dog'], entries, skipped };
}

// ---------------------------------------------------------------- detection

/** Are most image files of `dir` (top level) named `<breed>_<number>.<ext>`, with at least 2 breeds? */
async function hasPetStyleNames(dir: string): Promise<boolean> {
  const { files } = await listDir(dir);
  const images = files.filter(isImageFileName);
  if (images.length === 0) return false;
  const breeds = new Set<string>();
  let matching = 0;
  for (const f of images) {
    const b = petBreedFromName(f);
    if (b !== undefined) {
      matching++;
      breeds.add(b);
    }
  }
  return breeds.size >= 2 && matching >= 0.9 * images.length;
}

/**
 * Guess the layout of a dataset folder:
 * - `oxford-pets` if it has `images/` and `annotations/list.txt`, or `images/` full of `<breed>_<number>.jpg`
 *   names; or if it is such an `images/` folder itself (Pet-style names, or a sibling `annotations/list.txt`);
 *   any other folder of Pet-style names opens with an explicit `layout: 'oxford-pets'`;
 * - `petimages` if its sub-folders are exactly `Cat` and `Dog`, or it has `PetImages/Cat` and `PetImages/Dog`;
 * - `folder` otherwise.
 */
export async function detectLayout(root: string): Promise<LayoutName> {
  root = resolve(root);
  const { dirs } = await listDir(root);
  if (dirs.includes('images')) {
    if (await isFile(join(root, 'annotations', 'list.txt'))) return 'oxford-pets';
    if (await hasPetStyleNames(join(root, 'images'))) return 'oxford-pets';
  }
  if (
    basename(root) === 'images' &&
    ((await isFile(join(dirname(root), 'annotations', 'list.txt'))) || (await hasPetStyleNames(root)))
  ) {
    return 'oxford-pets';
  }
  if (dirs.length === 2 && dirs[0] === 'Cat' && dirs[1] === 'Dog') return 'petimages';
  if (dirs.includes('PetImages') && (await petImagesDir(join(root, 'PetImages')))) return 'petimages';
  return 'folder';
}

// ---------------------------------------------------------------- open

function numberLabels(root: string, raw: Raw, forced?: string[]): { classes: string[]; items: DatasetItem[] } {
  let classes = raw.classes;
  if (forced) {
    const dup = forced.filter((c, i) => forced.indexOf(c) !== i);
    if (dup.length > 0) throw new GraftError(`the given class list has duplicates: ${quoteList([...new Set(dup)])}`);
    const known = new Set(forced);
    const unknown = [...new Set(raw.entries.map((e) => e.className))].filter((c) => !known.has(c));
    if (unknown.length > 0) {
      throw new GraftError(
        `dataset ${root} has classes that are not in the given class list: ${quoteList(unknown)} ` +
          `(expected one of ${quoteList(forced)})`,
      );
    }
    classes = [...forced];
  }
  const index = new Map(classes.map((c, i) => [c, i]));
  const items = raw.entries.map((e) => ({ path: e.path, label: index.get(e.className)! }));
  return { classes, items: sortByPath(items) };
}

/**
 * Open a dataset folder as a list of `{path, label}` with its class list. Does not decode images: corrupt files are
 * listed and found later by the image stage; empty files and other non-images are in `skipped`.
 */
export async function openDataset(root: string, opts: OpenDatasetOptions = {}): Promise<Dataset> {
  root = resolve(root);
  const st = await statOrUndefined(root);
  if (!st) throw new GraftError(`dataset folder not found: ${root}`);
  if (!st.isDirectory()) throw new GraftError(`dataset folder not found: ${root} (it is a file, not a folder)`);
  const requested = opts.layout ?? 'auto';
  if (requested !== 'auto' && !LAYOUT_NAMES.includes(requested)) {
    throw new UsageError(`unknown dataset layout '${requested}' (expected auto, ${LAYOUT_NAMES.join(', ')})`);
  }
  const layout = requested === 'auto' ? await detectLayout(root) : requested;
  if (opts.label !== undefined && layout !== 'oxford-pets') {
    throw new UsageError(`label '${opts.label}' applies only to the oxford-pets layout; ${root} is a ${layout} dataset`);
  }
  if (opts.label !== undefined && opts.label !== 'breed' && opts.label !== 'species') {
    throw new UsageError(`unknown label '${String(opts.label)}' (expected breed or species)`);
  }
  let raw: Raw;
  if (layout === 'folder') raw = await readFolderLayout(root, opts.classes !== undefined);
  else if (layout === 'oxford-pets') raw = await readOxfordPets(root, opts.label ?? 'breed');
  else raw = await readPetImages(root);
  const { classes, items } = numberLabels(root, raw, opts.classes);
  return { root, layout, classes, items, skipped: sortByPath(raw.skipped) };
}

// ---------------------------------------------------------------- plain file lists

/**
 * Files to predict on, from command-line arguments: files are kept in the given order (whatever their extension:
 * the decoder decides), folders are expanded to their images (sorted), missing paths and empty files are skipped.
 * A file named twice is listed once.
 */
export async function datasetFromFiles(paths: string[]): Promise<{ items: { path: string }[]; skipped: Skipped[] }> {
  const items: { path: string }[] = [];
  const skipped: Skipped[] = [];
  const seen = new Set<string>();
  const add = (path: string): void => {
    if (!seen.has(path)) {
      seen.add(path);
      items.push({ path });
    }
  };
  for (const p of paths) {
    const path = resolve(p);
    const st = await statOrUndefined(path);
    if (!st) skipped.push({ path, reason: REASON_NOT_FOUND });
    else if (st.isDirectory()) {
      const found = await findImages(path);
      found.files.forEach(add);
      skipped.push(...found.skipped);
    } else if (isIgnoredName(basename(path)) && !isImageFileName(path)) {
      skipped.push({ path, reason: 'not an image file' });
    } else if (st.size === 0) skipped.push({ path, reason: REASON_EMPTY });
    else add(path);
  }
  return { items, skipped };
}
