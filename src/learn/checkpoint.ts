/**
 * Training checkpoints: one file, written atomically (temp file + rename, so a half-written file never replaces a good
 * one): "GRFT", u32 JSON length, JSON {meta, tensor names and lengths}, padding to 4 bytes, float32 blobs.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { GraftError } from '../errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { issuesText } from '../util/json.js';

/** The JSON header; `meta` is the caller's (checked against the schema it passes to readCheckpoint). */
const CkptJsonSchema = z.object({
  meta: z.record(z.string(), z.unknown()),
  tensors: z.array(z.object({ name: z.string(), length: z.number().int().nonnegative() })),
});
type CkptJson = z.infer<typeof CkptJsonSchema>;

export async function writeCheckpoint(path: string, meta: Record<string, unknown>, tensors: Record<string, Float32Array>): Promise<void> {
  const names = Object.keys(tensors);
  const json = Buffer.from(JSON.stringify({ meta, tensors: names.map((name) => ({ name, length: tensors[name]!.length })) } satisfies CkptJson));
  const head = 8 + json.length;
  const pad = (4 - (head % 4)) % 4;
  const total = head + pad + names.reduce((a, n) => a + tensors[n]!.length * 4, 0);
  const buf = Buffer.alloc(total);
  buf.write('GRFT', 0, 'latin1');
  buf.writeUInt32LE(json.length, 4);
  json.copy(buf, 8);
  let off = head + pad;
  for (const n of names) {
    const t = tensors[n]!;
    Buffer.from(t.buffer, t.byteOffset, t.byteLength).copy(buf, off);
    off += t.byteLength;
  }
  await writeFileAtomic(path, buf);
}

/**
 * Read a checkpoint; `meta` is checked against `metaSchema` (a damaged or hand-edited file is a GraftError naming the
 * file and the field, e.g. "last.ckpt: damaged checkpoint (meta.bestEpoch: expected number, received string)").
 */
export async function readCheckpoint<S extends z.ZodType = z.ZodType<Record<string, unknown>>>(
  path: string,
  metaSchema?: S,
): Promise<{ meta: z.output<S>; tensors: Record<string, Float32Array> }> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch {
    throw new GraftError(`checkpoint not found: ${path}`);
  }
  if (buf.length < 8 || buf.toString('latin1', 0, 4) !== 'GRFT') throw new GraftError(`${path}: not a graft checkpoint`);
  const len = buf.readUInt32LE(4);
  let raw: unknown;
  try {
    raw = JSON.parse(buf.toString('utf8', 8, 8 + len));
  } catch {
    throw new GraftError(`${path}: damaged checkpoint (header)`);
  }
  const header = CkptJsonSchema.safeParse(raw);
  if (!header.success) throw new GraftError(`${path}: damaged checkpoint (${issuesText(header.error)})`);
  const parsed: CkptJson = header.data;
  const meta = (metaSchema ?? CkptJsonSchema.shape.meta).safeParse(parsed.meta);
  if (!meta.success) throw new GraftError(`${path}: damaged checkpoint (${issuesText(meta.error, 'meta')})`);
  let off = 8 + len;
  off += (4 - (off % 4)) % 4;
  const tensors: Record<string, Float32Array> = {};
  for (const t of parsed.tensors) {
    if (off + t.length * 4 > buf.length) throw new GraftError(`${path}: damaged checkpoint (truncated)`);
    tensors[t.name] = new Float32Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + off + t.length * 4));
    off += t.length * 4;
  }
  return { meta: meta.data as z.output<S>, tensors };
}

