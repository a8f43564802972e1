import { stat } from 'node:fs/promises';
import { basename, isAbsolute, join, relative, resolve } from 'node:path';
import { z } from 'zod';
import { GraftError } from '../errors.js';
import { PreprocessSpecSchema } from '../image/spec.js';
import { defaultStore } from '../models/store.js';
import { writeJsonAtomic, writeFileAtomic } from '../util/fs.js';
import { readJsonFile } from '../util/json.js';
import { Head, headFromJSON } from './heads.js';

export const RUN_FORMAT = 'graft-run';
export const RUN_VERSION = 1;

/** config.json of a run: everything needed to reproduce it and to use it on new images. */
export const RunConfigSchema = z.object({
  format: z.literal(RUN_FORMAT),
  version: z.literal(RUN_VERSION),
  createdAt: z.string(),
  model: z.object({
    source: z.string(),
    /**
     * The backbone file, relative to the run folder (written so since 2026-12: a run folder moved together with
     * what it points at, or a fine-tuned run with its own model.onnx, still loads); absolute in older runs.
     * `loadRun` hands it out resolved to an absolute path.
     */
    path: z.string(),
    /** Where the file was when the run was written: tried when `path` no longer leads to it (the run moved alone). */
    absolutePath: z.string().optional(),
    sha256: z.string(),
    featureTensor: z.string(),
  }),
  preprocess: PreprocessSpecSchema,
  classes: z.array(z.string()).min(2),
  data: z.object({
    train: z.string(),
    val: z.string().optional(),
    layout: z.string(),
    label: z.string().optional(),
    valFraction: z.number().optional(),
    splitSeed: z.number().optional(),
    trainCount: z.number(),
    valCount: z.number(),
  }),
  head: z.record(z.string(), z.unknown()),
  /** Test-time augmentation the head was trained with (features averaged over views); eval and predict use it too. */
  tta: z.enum(['flip', 'crop']).optional(),
  /** The backbone (model.path) is an int8 version of model.source, calibrated on this many training images. */
  int8: z.object({ floatSha256: z.string(), calibrationImages: z.number().int() }).optional(),
});
export type RunConfig = z.infer<typeof RunConfigSchema>;

export interface LoadedRun { dir: string; config: RunConfig; head: Head }

export const RUN_FILES = {
  config: 'config.json',
  head: 'head.json',
  labels: 'labels.txt',
  metrics: 'metrics.json',
  history: 'history.json',
  skipped: 'skipped.json',
  confusion: 'confusion.png',
  curves: 'training-curve.png',
  topLosses: 'top-losses.png',
} as const;

export async function isRunDir(dir: string): Promise<boolean> {
  try {
    return (await stat(join(dir, RUN_FILES.config))).isFile();
  } catch {
    return false;
  }
}

export interface LoadRunOptions {
  /**
   * Find the run's backbone file (default true): a run whose backbone cannot be found is an error naming the config,
   * the path tried and the SHA-256. false for uses that only read the run's files (report).
   */
  model?: boolean;
}

/** Load a run directory written by `saveRun`; every problem is a GraftError naming the file. */
export async function loadRun(dir: string, opts: LoadRunOptions = {}): Promise<LoadedRun> {
  try {
    if (!(await stat(dir)).isDirectory()) throw new GraftError(`not a run directory: ${dir}`);
  } catch (err) {
    if (err instanceof GraftError) throw err;
    throw new GraftError(`run directory not found: ${dir}`);
  }
  const cfgPath = join(dir, RUN_FILES.config);
  const config = await readJsonFile(cfgPath, RunConfigSchema, 'run config');
  const headPath = join(dir, RUN_FILES.head);
  const head = headFromJSON(await readJsonFile(headPath, z.unknown(), 'head weights'), headPath);
  const found = await locateModel(dir, config.model, opts.model !== false);
  if (!found.path && opts.model !== false) {
    throw new GraftError(
      `${cfgPath}: the run's backbone is not at ${found.tried.join(' nor ')} and graft's model store has no file with its SHA-256 ` +
        `${config.model.sha256}; put the model file (${basename(config.model.source)}) at ${found.tried[0]}, its place relative to the run folder`,
    );
  }
  config.model = { ...config.model, path: found.path ?? found.tried[0]! };
  return { dir, config, head };
}

/**
 * The run's backbone as an absolute path: `path` relative to the run folder (or absolute, in older runs), else the
 * absolute path it had when the run was written, else a file with its SHA-256 in graft's model store (a run shared
 * with someone who pulled the same catalog model). Whichever is used, callers check its SHA-256 against the run's.
 */
async function locateModel(dir: string, model: RunConfig['model'], searchStore: boolean): Promise<{ path?: string; tried: string[] }> {
  const tried = [...new Set([isAbsolute(model.path) ? model.path : resolve(dir, model.path), ...(model.absolutePath ? [model.absolutePath] : [])])];
  for (const c of tried) {
    try {
      if ((await stat(c)).isFile()) return { path: c, tried };
    } catch {
      // try the next
    }
  }
  return { path: searchStore ? await defaultStore().findBySha256(model.sha256) : undefined, tried };
}

/** The `model` block of a run's config for a backbone file at `modelPath`, written into run folder `runDir`. */
export function runModelPaths(runDir: string, modelPath: string): { path: string; absolutePath: string } {
  const abs = resolve(modelPath);
  return { path: relative(resolve(runDir), abs) || abs, absolutePath: abs };
}

/** Write the run's core files (config, head, labels); each file is written atomically. */
export async function saveRun(dir: string, config: RunConfig, head: Head): Promise<void> {
  await writeJsonAtomic(join(dir, RUN_FILES.head), head.toJSON());
  await writeFileAtomic(join(dir, RUN_FILES.labels), config.classes.join('\n') + '\n');
  // Config last: a run directory counts as a run once its config exists.
  await writeJsonAtomic(join(dir, RUN_FILES.config), config);
}
