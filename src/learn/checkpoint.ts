/**
 * Training checkpoints: one file, written atomically (temp file + rename, so a half-written file never replaces a good
 * one): "GRFT", u32 JSON length, JSON {meta, tensor names and lengths}, padding to 4 bytes, float32 blobs.
 */
import { readFile } from 'node:fs/promises';
import { GraftError } from '../errors.js';
import { writeFileAtomic } from '../util/fs.js';


interface CkptJson { meta: Record<string, unknown>; tensors: { name: string; length: number }[] }

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

export async function readCheckpoint(path: string): Promise<{ meta: Record<string, unknown>; tensors: Record<string, Float32Array> }> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch {
    throw new GraftError(`checkpoint not found: ${path}`);
  }
  if (buf.length < 8 || buf.toString('latin1', 0, 4) !== 'GRFT') throw new GraftError(`${path}: not a graft checkpoint`);
  const len = buf.readUInt32LE(4);
  let parsed: CkptJson;
  try {
    parsed = JSON.parse(buf.toString('utf8', 8, 8 + len)) as CkptJson;
  } catch {
    throw new GraftError(`${path}: damaged checkpoint (header)`);
  }
  let off = 8 + len;
  off += (4 - (off % 4)) % 4;
  const tensors: Record<string, Float32Array> = {};
  for (const t of parsed.tensors) {
    if (off + t.length * 4 > buf.length) throw new GraftError(`${path}: damaged checkpoint (truncated)`);
    tensors[t.name] = new Float32Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + off + t.length * 4));
    off += t.length * 4;
  }
  return { meta: parsed.meta, tensors };
}

