import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { GraftError } from '../errors.js';
import { readJsonFile } from '../util/json.js';
import { assetPath } from '../util/paths.js';

let imagenet: string[] | undefined;

/** The 1000 ImageNet-1k class names in index order (shipped with the package). */
export async function imagenetClasses(): Promise<string[]> {
  if (!imagenet) {
    imagenet = (await readJsonFile(assetPath('imagenet-classes.json'), z.object({ names: z.array(z.string()).length(1000) }), 'ImageNet class list')).names;
  }
  return imagenet;
}

/** Default labels for a classifier with `n` outputs and none given: ImageNet-1k, with a background class if 1001. */
export async function defaultLabels(n: number): Promise<string[] | undefined> {
  if (n === 1000) return imagenetClasses();
  if (n === 1001) return ['background', ...(await imagenetClasses())];
  return undefined;
}

/** A labels file: a JSON array of names, or text with one name per line. */
export async function readLabelsFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new GraftError(`labels file not found: ${path}`);
  }
  const trimmed = text.trim();
  if (trimmed.startsWith('[')) {
    try {
      const arr = JSON.parse(trimmed);
      if (Array.isArray(arr) && arr.every((s) => typeof s === 'string')) return arr;
    } catch {
      /* fall through to the error below */
    }
    throw new GraftError(`${path}: not a JSON array of class names`);
  }
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  if (lines.length === 0) throw new GraftError(`${path}: no class names in labels file`);
  return lines;
}

/** metadata_props key under which graft stores class names (a JSON array) in the ONNX files it writes. */
export const LABELS_METADATA_KEY = 'graft.labels';

/** Class names stored in a model's metadata, if any and well-formed (a bad entry is ignored, not fatal). */
export function labelsFromMetadata(metadata: Record<string, string>): string[] | undefined {
  const raw = metadata[LABELS_METADATA_KEY];
  if (!raw) return undefined;
  try {
    const arr: unknown = JSON.parse(raw);
    return Array.isArray(arr) && arr.length > 0 && arr.every((s) => typeof s === 'string') ? arr : undefined;
  } catch {
    return undefined;
  }
}
