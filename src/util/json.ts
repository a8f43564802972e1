/**
 * Reading back the JSON files graft wrote (run configs, metrics, options, manifests, checkpoint headers): each through
 * a zod schema, so that a damaged or hand-edited file is one GraftError naming the file and the field, never a stack
 * trace from deep inside the code that trusted a cast.
 */
import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import { GraftError } from '../errors.js';

/** What is wrong, field by field: "history.0.trainLoss: Invalid input: expected number, received string". */
export function issuesText(error: z.ZodError, prefix?: string): string {
  const shown = error.issues.slice(0, 3).map((i) => {
    const path = [...(prefix ? [prefix] : []), ...i.path.map(String)].join('.');
    return `${path || 'the file'}: ${i.message}`;
  });
  const more = error.issues.length - shown.length;
  return shown.join('; ') + (more > 0 ? ` (and ${more} more)` : '');
}

/** `text` (the contents of `path`) parsed and checked against `schema`; errors name `path`. */
export function parseJsonText<S extends z.ZodType>(text: string, schema: S, path: string, what = 'file'): z.output<S> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new GraftError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new GraftError(`${path}: not a valid ${what} (${issuesText(r.error)})`);
  return r.data;
}

/**
 * Read the JSON file `path` written by graft and check it against `schema`. `what` names the file in messages
 * ("run config", "fine-tuning options"); a missing file is "<what> not found: <path>".
 */
export async function readJsonFile<S extends z.ZodType>(path: string, schema: S, what = 'file'): Promise<z.output<S>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw Object.assign(new GraftError(code === 'ENOENT' ? `${what} not found: ${path}` : `cannot read ${path} (${code ?? (err as Error).message})`), { code });
  }
  return parseJsonText(text, schema, path, what);
}

/** Like readJsonFile, but undefined when the file is absent (optional files such as skipped.json in older runs). */
export async function readJsonFileIfExists<S extends z.ZodType>(path: string, schema: S, what = 'file'): Promise<z.output<S> | undefined> {
  try {
    return await readJsonFile(path, schema, what);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return undefined;
    throw err;
  }
}
