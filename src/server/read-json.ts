import { readFile } from 'node:fs/promises';

/** A JSON file graft wrote itself (run history, metrics): parsed, or an error naming the file. */
export async function readJsonFile(path: string): Promise<unknown> {
  const text = await readFile(path, 'utf8');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
}
