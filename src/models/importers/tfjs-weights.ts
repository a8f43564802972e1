/**
 * The one TF.js weight decoder (weights manifest + .bin shards → Float32Arrays), for both the layers and the graph
 * importer. The files are untrusted: the folder is checked first with `checkTfjsFolder` (shard paths safe relative
 * paths inside the folder, no links out of it, every shard present, exactly the bytes the manifest needs), and each
 * shard is opened again through the same check plus its real path, so a file swapped for a link between the check
 * and the read is refused too.
 */
import { readFile, realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, relative } from 'node:path';
import { checkTfjsFolder, insideFolder, type TfjsModelJson, type TfjsWeight } from '../store-checks.js';
import { halfToFloat } from '../../util/numeric.js';
import { fail } from './fail.js';
import { count } from './layout.js';

/** A weight's value in TF order (NHWC for 4-D). Integers and bools are kept as numbers in `data`. */
export interface TfjsConst { shape: number[]; data: Float32Array; dtype: 'float32' | 'int32' | 'bool' }

/** A manifest entry; quantised weights carry their storage dtype and, for uint8 / uint16, scale and min. */
type WeightEntry = TfjsWeight & { quantization?: { dtype?: string; scale?: number; min?: number } };

/** Bytes per stored element, by storage dtype (the quantisation dtype when there is one). */
const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };

/** Decode one weight from its bytes (exactly the right length). */
function decodeWeight(w: WeightEntry, bytes: Buffer, file: string): TfjsConst {
  const n = count(w.shape);
  const q = w.quantization;
  const dtype: TfjsConst['dtype'] = w.dtype === 'float32' ? 'float32' : w.dtype === 'int32' ? 'int32' : w.dtype === 'bool' ? 'bool' : fail(file, `weight '${w.name}': dtype ${w.dtype} is not supported`);
  const data = new Float32Array(n);
  if (q?.dtype) {
    if (q.dtype === 'float16') for (let i = 0; i < n; i++) data[i] = halfToFloat(bytes.readUInt16LE(2 * i));
    else if (q.dtype === 'uint8' || q.dtype === 'uint16') {
      const scale = Number(q.scale ?? 1);
      const min = Number(q.min ?? 0);
      for (let i = 0; i < n; i++) data[i] = (q.dtype === 'uint8' ? bytes[i]! : bytes.readUInt16LE(2 * i)) * scale + min;
    } else fail(file, `weight '${w.name}': quantisation dtype ${q.dtype} is not supported`);
    // Quantised integer weights dequantise to whole numbers again.
    if (dtype !== 'float32') for (let i = 0; i < n; i++) data[i] = Math.round(data[i]!);
  } else if (dtype === 'float32') {
    for (let i = 0; i < n; i++) data[i] = bytes.readFloatLE(4 * i);
  } else if (dtype === 'int32') {
    for (let i = 0; i < n; i++) data[i] = bytes.readInt32LE(4 * i);
  } else {
    for (let i = 0; i < n; i++) data[i] = bytes[i] ? 1 : 0;
  }
  return { shape: w.shape, data, dtype };
}

/** Read one shard by its manifest path, refusing any path or link that leads out of `dir`. */
async function readShard(dir: string, realDir: string, p: string, file: string): Promise<Buffer> {
  const full = insideFolder(dir, p, file);
  let real: string;
  try {
    real = await realpath(full);
  } catch {
    fail(file, `weight shard '${p}' is missing`);
  }
  const r = relative(realDir, real);
  if (r === '' || r.startsWith('..') || isAbsolute(r)) fail(file, `refused weight shard '${p}': it is a link leading out of the model's folder`);
  return readFile(real);
}

export interface CheckedTfjsFolder {
  /** model.json's path, as given (errors name it). */
  file: string;
  /** model.json as checked by checkTfjsFolder (kind, groups, safe shard paths). */
  checked: TfjsModelJson;
  /** model.json's text, read through the same checked path. */
  text: string;
}

/** Check a TF.js model folder (see the top of this file) and read its model.json. `file` is the model.json path. */
export async function checkedTfjsFolder(file: string): Promise<CheckedTfjsFolder> {
  const dir = dirname(file);
  const checked = await checkTfjsFolder(dir, basename(file), file);
  const text = await readFile(insideFolder(dir, basename(file), file), 'utf8');
  return { file, checked, text };
}

/** Read every weight of a checked folder's manifest, by name. */
export async function readTfjsWeights({ file, checked }: CheckedTfjsFolder): Promise<Map<string, TfjsConst>> {
  const dir = dirname(file);
  const realDir = await realpath(dir);
  const weights = new Map<string, TfjsConst>();
  for (const g of checked.groups) {
    const chunks: Buffer[] = [];
    for (const p of g.paths) chunks.push(await readShard(dir, realDir, p, file));
    const buf = Buffer.concat(chunks);
    let off = 0;
    for (const w of g.weights as WeightEntry[]) {
      const per = BYTES[w.quantization?.dtype ?? w.dtype] ?? fail(file, `weight '${w.name}': dtype ${w.quantization?.dtype ?? w.dtype} is not supported`);
      const len = per * count(w.shape);
      if (off + len > buf.length) fail(file, `weight shards [${g.paths.join(', ')}] hold ${buf.length} bytes, fewer than the manifest needs (truncated shard?)`);
      weights.set(w.name, decodeWeight(w, buf.subarray(off, off + len), file));
      off += len;
    }
    if (off !== buf.length) fail(file, `weight shards [${g.paths.join(', ')}] hold ${buf.length} bytes, the manifest describes ${off} (wrong shard?)`);
  }
  return weights;
}
