/**
 * Projects of the web page: a name, a backbone, classes of images, and the runs trained on them, all under
 * GRAFT_HOME/projects/<id>/:
 *
 *   project.json            what the page shows (zod-checked when read back; written atomically, last)
 *   data/<class>/<hash>.<ext> the uploads, content-addressed (the first 24 hex digits of their SHA-256), so the same
 *                           photo uploaded twice is stored once; the folder is an ordinary graft dataset
 *   runs/<run id>/          ordinary graft run folders (`graft eval` and `graft export` work on them)
 *
 * Clients only ever see ids; every path is built here from checked ids.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ImageError } from '../errors.js';
import { buildPipeline, runPipeline, sniffFormat } from '../image/decode.js';
import { isRunDir } from '../learn/run.js';
import { graftHome } from '../util/paths.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/fs.js';
import { parseJsonText } from '../util/json.js';
import { RequestError } from './predictors.js';

const ImageSchema = z.object({
  id: z.string().regex(/^[0-9a-f]{24}$/),
  ext: z.enum(['jpg', 'png', 'gif', 'webp', 'tif', 'avif']),
  /** The name it was uploaded under (for display only). */
  name: z.string(),
  bytes: z.number().int().nonnegative(),
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  addedAt: z.string(),
});
const ClassSchema = z.object({ name: z.string(), images: z.array(ImageSchema) });
const ProjectSchema = z.object({
  format: z.literal('graft-project'),
  version: z.literal(1),
  id: z.string(),
  name: z.string(),
  backbone: z.string(),
  createdAt: z.string(),
  classes: z.array(ClassSchema),
});
export type Project = z.infer<typeof ProjectSchema>;
export type ProjectImage = z.infer<typeof ImageSchema>;

const PROJECT_ID = /^[0-9a-f]{10}$/;
const RUN_ID = /^run-\d{8}-\d{6}(-\d+)?$/;
/** Class names become folder names and labels: letters, digits, space, _ . - ; not starting with a dot. */
const CLASS_NAME = /^[\p{L}\p{N}][\p{L}\p{N} _.-]{0,63}$/u;

const EXT_OF: Record<string, Project['classes'][number]['images'][number]['ext']> = {
  JPEG: 'jpg',
  PNG: 'png',
  GIF: 'gif',
  WebP: 'webp',
  TIFF: 'tif',
  AVIF: 'avif',
};

/** What the server accepts as an upload, checked from the bytes (the name and Content-Type are not trusted). */
export function uploadFormat(bytes: Buffer): keyof typeof EXT_OF {
  if (bytes.length === 0) throw new RequestError('the upload is empty (0 bytes)', 400);
  const head = bytes.subarray(0, 512).toString('latin1').trimStart();
  if (/^(<\?xml|<svg|<!doctype svg)/i.test(head)) {
    throw new RequestError('the upload is an SVG drawing; graft classifies photos (JPEG, PNG, WebP, GIF, TIFF, AVIF)', 415);
  }
  const f = sniffFormat(bytes);
  if (!f) throw new RequestError(`the upload is not an image graft reads (it starts with ${JSON.stringify(bytes.subarray(0, 8).toString('latin1'))}); send a JPEG, PNG, WebP, GIF, TIFF or AVIF`, 415);
  if (!f.readable || !(f.label in EXT_OF)) throw new RequestError(`the upload is a ${f.label} file, which graft does not read; send a JPEG, PNG, WebP, GIF, TIFF or AVIF`, 415);
  return f.label as keyof typeof EXT_OF;
}

/** An upload's whole image decoded (a truncated file fails here, not at training time); its displayed size. */
export async function checkImage(bytes: Buffer, maxPixels: number): Promise<{ width: number; height: number }> {
  uploadFormat(bytes);
  try {
    // Decoding to a thumbnail still reads every byte of the file (JPEG shrink-on-load decodes at 1/8 scale).
    const meta = await buildPipeline(bytes, { maxPixels }).metadata();
    await runPipeline(bytes, () => buildPipeline(bytes, { maxPixels }).resize(64, 64, { fit: 'inside' }), { maxPixels, name: 'the upload' });
    const rotated = (meta.orientation ?? 1) >= 5;
    return { width: rotated ? meta.height! : meta.width!, height: rotated ? meta.width! : meta.height! };
  } catch (err) {
    if (err instanceof ImageError) throw new RequestError(`the upload ${err.reason}`.replace('the upload image', 'the image'), 400);
    throw new RequestError(`the upload is not a readable image (${(err as Error).message})`, 400);
  }
}

export function checkClassName(name: unknown): string {
  if (typeof name !== 'string' || !CLASS_NAME.test(name.trim()) || name.trim() !== name) {
    throw new RequestError(`class name ${JSON.stringify(name)}: use 1-64 letters, digits, spaces, _ . or -, starting with a letter or digit`, 400);
  }
  return name;
}

export class ProjectStore {
  readonly root: string;
  /** One change at a time per project: uploads arrive in parallel and all rewrite project.json. */
  private locks = new Map<string, Promise<unknown>>();

  constructor(root = join(graftHome(), 'projects')) {
    this.root = root;
  }

  private dir(id: string): string {
    if (!PROJECT_ID.test(id)) throw new RequestError(`no project ${JSON.stringify(id)}`, 404);
    return join(this.root, id);
  }

  dataDir(id: string): string {
    return join(this.dir(id), 'data');
  }

  runsDir(id: string): string {
    return join(this.dir(id), 'runs');
  }

  runDir(id: string, run: string): string {
    if (!RUN_ID.test(run)) throw new RequestError(`no run ${JSON.stringify(run)} in project ${id}`, 404);
    return join(this.runsDir(id), run);
  }

  private async serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    this.locks.set(id, next.catch(() => undefined));
    return next;
  }

  async list(): Promise<Project[]> {
    const names = await readdir(this.root).catch(() => [] as string[]);
    const out: Project[] = [];
    for (const n of names.filter((x) => PROJECT_ID.test(x)).sort()) {
      const p = await this.get(n).catch(() => undefined);
      if (p) out.push(p);
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async get(id: string): Promise<Project> {
    const file = join(this.dir(id), 'project.json');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      throw new RequestError(`no project ${id}`, 404);
    }
    try {
      return parseJsonText(text, ProjectSchema, file, 'graft project file');
    } catch (err) {
      throw new Error((err as Error).message); // the server's own file is damaged: a 500, not the client's 422
    }
  }

  private save(p: Project): Promise<void> {
    return writeJsonAtomic(join(this.dir(p.id), 'project.json'), p);
  }

  async create(name: unknown, backbone: string, classes: unknown[] = []): Promise<Project> {
    if (typeof name !== 'string' || name.trim().length === 0 || name.length > 100) throw new RequestError('project name: 1-100 characters', 400);
    const names = classes.map(checkClassName);
    if (new Set(names).size !== names.length) throw new RequestError('class names must be different', 400);
    const id = randomBytes(5).toString('hex');
    const p: Project = { format: 'graft-project', version: 1, id, name: name.trim(), backbone, createdAt: new Date().toISOString(), classes: names.map((n) => ({ name: n, images: [] })) };
    for (const n of names) await mkdir(join(this.dataDir(id), n), { recursive: true });
    await this.save(p);
    return p;
  }

  async remove(id: string): Promise<void> {
    const dir = this.dir(id);
    await this.get(id);
    // Rename first so a half-deleted project never shows in the list.
    const trash = join(this.root, `.deleted-${id}-${randomBytes(3).toString('hex')}`);
    await rename(dir, trash);
    await rm(trash, { recursive: true, force: true });
  }

  addClass(id: string, name: unknown): Promise<Project> {
    return this.serial(id, async () => {
      const p = await this.get(id);
      const n = checkClassName(name);
      if (p.classes.some((c) => c.name.toLowerCase() === n.toLowerCase())) throw new RequestError(`project ${id} already has a class ${n}`, 409);
      await mkdir(join(this.dataDir(id), n), { recursive: true });
      p.classes.push({ name: n, images: [] });
      await this.save(p);
      return p;
    });
  }

  removeClass(id: string, name: string): Promise<Project> {
    return this.serial(id, async () => {
      const p = await this.get(id);
      const i = p.classes.findIndex((c) => c.name === name);
      if (i < 0) throw new RequestError(`project ${id} has no class ${JSON.stringify(name)}`, 404);
      p.classes.splice(i, 1);
      await this.save(p);
      await rm(join(this.dataDir(id), name), { recursive: true, force: true });
      return p;
    });
  }

  /**
   * Store an upload in a class. The bytes are checked (format sniffed, whole image decoded, pixel cap) before
   * anything is written; the same bytes already in the project are not stored twice.
   */
  async addImage(id: string, className: string, bytes: Buffer, name: string, maxPixels: number): Promise<{ image: ProjectImage; class: string; duplicate: boolean }> {
    const format = uploadFormat(bytes);
    const size = await checkImage(bytes, maxPixels);
    const hash = createHash('sha256').update(bytes).digest('hex').slice(0, 24);
    return this.serial(id, async () => {
      const p = await this.get(id);
      const cls = p.classes.find((c) => c.name === className);
      if (!cls) throw new RequestError(`project ${id} has no class ${JSON.stringify(className)}`, 404);
      for (const c of p.classes) {
        const same = c.images.find((im) => im.id === hash);
        if (same) return { image: same, class: c.name, duplicate: true };
      }
      const image: ProjectImage = { id: hash, ext: EXT_OF[format]!, name: name.slice(0, 200), bytes: bytes.length, ...size, addedAt: new Date().toISOString() };
      await writeFileAtomic(join(this.dataDir(id), cls.name, `${hash}.${image.ext}`), bytes);
      cls.images.push(image);
      await this.save(p);
      return { image, class: cls.name, duplicate: false };
    });
  }

  removeImage(id: string, imageId: string): Promise<Project> {
    return this.serial(id, async () => {
      const p = await this.get(id);
      for (const c of p.classes) {
        const i = c.images.findIndex((im) => im.id === imageId);
        if (i < 0) continue;
        const [im] = c.images.splice(i, 1);
        await this.save(p);
        await unlink(join(this.dataDir(id), c.name, `${im!.id}.${im!.ext}`)).catch(() => undefined);
        return p;
      }
      throw new RequestError(`project ${id} has no image ${JSON.stringify(imageId)}`, 404);
    });
  }

  /** The stored file of an image, by id. */
  async imagePath(id: string, imageId: string): Promise<{ path: string; image: ProjectImage; class: string }> {
    const p = await this.get(id);
    for (const c of p.classes) {
      const im = c.images.find((x) => x.id === imageId);
      if (im) return { path: join(this.dataDir(id), c.name, `${im.id}.${im.ext}`), image: im, class: c.name };
    }
    throw new RequestError(`project ${id} has no image ${JSON.stringify(imageId)}`, 404);
  }

  /** Image id of a file in the project's data folder (run folders record paths; the page wants ids). */
  imageIdOfPath(path: string): string | undefined {
    return /([0-9a-f]{24})\.[a-z]+$/.exec(path)?.[1];
  }

  /** A fresh run id, by time (sortable) with a suffix when two start in the same second. */
  async newRunId(id: string): Promise<string> {
    const t = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
    const have = new Set(await readdir(this.runsDir(id)).catch(() => [] as string[]));
    let run = `run-${t}`;
    for (let i = 2; have.has(run); i++) run = `run-${t}-${i}`;
    return run;
  }

  /** Finished runs (folders holding a run config), newest first. */
  async runs(id: string): Promise<string[]> {
    const names = (await readdir(this.runsDir(id)).catch(() => [] as string[])).filter((n) => RUN_ID.test(n));
    const done: string[] = [];
    for (const n of names) if (await isRunDir(join(this.runsDir(id), n))) done.push(n);
    return done.sort().reverse();
  }

  /** `model=` names for runs: `<project id>` (its newest run) or `<project id>/<run id>`. */
  async named(param: string): Promise<string | undefined> {
    const m = /^([0-9a-f]{10})(?:\/(run-[0-9-]+))?$/.exec(param);
    if (!m) return undefined;
    const id = m[1]!;
    if (!(await stat(this.dir(id)).catch(() => undefined))) return undefined;
    if (m[2]) return this.runDir(id, m[2]);
    const runs = await this.runs(id);
    if (runs.length === 0) throw new RequestError(`project ${id} has no trained run yet; train it first`, 409);
    return this.runDir(id, runs[0]!);
  }
}
