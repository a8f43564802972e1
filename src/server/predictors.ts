/**
 * Models the server predicts with, loaded once and kept warm: a catalog name, an .onnx file or a run folder, each
 * behind one MicroBatcher so that concurrent requests share ONNX Runtime runs.
 */
import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { Classifier } from '../api/classifier.js';
import { topK, type Prediction } from '../engine/backbone.js';
import { GraftError } from '../errors.js';
import type { DecodeOptions } from '../image/decode.js';
import type { PreprocessSpec } from '../image/spec.js';
import { isRunDir } from '../learn/run.js';
import { findEntry } from '../models/catalog.js';
import { MicroBatcher } from './batcher.js';
import { WarmCache } from './warm-cache.js';

/** A request the client got wrong: answered with `status` and `{error: message}`. */
export class RequestError extends GraftError {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message, 1);
    this.name = 'RequestError';
  }
}

export interface Predictor {
  /** What the client asked for, as resolved (catalog name or path). */
  readonly model: string;
  readonly kind: 'run' | 'model';
  readonly labels: string[] | undefined;
  readonly spec: PreprocessSpec;
  readonly batcher: MicroBatcher;
  /** Decode an uploaded image and classify it; ImageError when the bytes are not a usable image. */
  predict(image: Buffer, top: number, decode?: DecodeOptions): Promise<Prediction[]>;
  dispose(): Promise<void>;
}

/** Where a model parameter points, once checked. */
export type ModelTarget = { kind: 'catalog'; name: string } | { kind: 'path'; path: string; run: boolean };

export interface ModelAccess {
  /** Folders whose files may be named in `model=` (real paths). */
  roots: string[];
  /** Resolves graft's own names for runs, e.g. a project's id (see projects.ts); undefined when not one. */
  named?: (param: string) => Promise<string | undefined>;
}

function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel));
}

/**
 * Check a `model=` parameter: a catalog name, graft's own name for a run (a project), or a path to an .onnx file or
 * a run folder inside one of the allowed folders (after following links). Nothing else can be read through it.
 */
export async function resolveModelParam(param: string | undefined, access: ModelAccess): Promise<ModelTarget> {
  if (!param) throw new RequestError('model= is required: a catalog name (see GET /api/models), a project id, or a path to an .onnx file or run folder', 400);
  const named = await access.named?.(param);
  if (named) return { kind: 'path', path: named, run: true };
  if (findEntry(param)) return { kind: 'catalog', name: param };
  if (/^[a-z0-9][a-z0-9._-]*$/i.test(param) && !/\.onnx$/i.test(param)) {
    throw new RequestError(`model=${param}: not a catalog model nor a project of this server (GET /api/models lists the catalog)`, 404);
  }
  const abs = resolve(param);
  let real: string;
  try {
    real = await realpath(abs);
  } catch {
    throw new RequestError(`model=${param}: no such file or folder`, 404);
  }
  if (!access.roots.some((r) => inside(r, real))) {
    throw new RequestError(`model=${param}: outside the folders this server reads models from (start graft serve with --models-dir to allow it)`, 403);
  }
  const st = await stat(real);
  if (st.isDirectory()) {
    if (!(await isRunDir(real))) throw new RequestError(`model=${param}: a folder that is not a graft run (no config.json of a run)`, 400);
    return { kind: 'path', path: real, run: true };
  }
  if (!/\.onnx$/i.test(real)) throw new RequestError(`model=${param}: not an .onnx file nor a run folder`, 400);
  return { kind: 'path', path: real, run: false };
}

/** Load a predictor for a checked target: a Classifier whose runs go through one MicroBatcher. */
async function loadPredictor(target: ModelTarget, threads: number | undefined): Promise<Predictor> {
  const source = target.kind === 'catalog' ? target.name : target.path;
  let c: Classifier;
  try {
    c = await Classifier.load(source, { threads });
  } catch (err) {
    if (err instanceof GraftError && /no classifier output/.test(err.message)) throw new RequestError(`model=${source}: this model has no classifier output; train a head on it (a project, or graft train) and predict with the run`, 400);
    throw err;
  }
  const batcher = new MicroBatcher({ rowLength: c.inputLength, lanes: Math.max(1, c.backbone.ort.concurrency), run: (input, n) => c.rows(input, n) });
  return {
    model: source,
    kind: c.kind,
    labels: c.classes,
    spec: c.spec,
    batcher,
    async predict(image, top, decode) {
      const inputs = await c.inputs(image, { ...decode, name: 'the upload' });
      const p = await c.probabilitiesOf(await Promise.all(inputs.map((x) => batcher.submit(x))));
      return topK(p, c.classes, Math.max(1, Math.min(top, p.length)));
    },
    async dispose() {
      await batcher.close();
      await c.dispose();
    },
  };
}

/**
 * Predictors kept warm, at most `max` of them (least recently used unloaded first). A run folder is keyed with its
 * config's modification time, so retraining into the same folder loads the new head.
 */
export class PredictorPool {
  private cache: WarmCache<Predictor>;

  constructor(
    private readonly access: ModelAccess,
    private readonly opts: { max?: number; threads?: number } = {},
  ) {
    this.cache = new WarmCache(opts.max ?? 3);
  }

  async get(param: string | undefined): Promise<Predictor> {
    const target = await resolveModelParam(param, this.access);
    let key = target.kind === 'catalog' ? `catalog:${target.name}` : `path:${target.path}`;
    if (target.kind === 'path' && target.run) key += `@${(await stat(resolve(target.path, 'config.json'))).mtimeMs}`;
    return this.cache.get(key, () => loadPredictor(target, this.opts.threads));
  }

  close(): Promise<void> {
    return this.cache.close();
  }
}
