/**
 * Model files are untrusted input. These checks run before anything is recorded, stored or handed to an importer:
 * paths named inside a model (TF.js weight shards, ONNX external data) must stay inside the model's folder, files
 * must be what they claim to be, and TF.js shards must hold exactly the bytes the manifest describes.
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { isAbsolute, join, posix, relative, resolve, sep } from 'node:path';
import onnxProto from 'onnx-proto';
import { GraftError } from '../errors.js';
import type { ModelFormat } from './catalog.js';
import { readFileHead } from '../util/fs.js';

const { onnx } = onnxProto;

/**
 * `p` as a safe relative path inside a model folder (forward slashes, normalised), or a GraftError naming `where`.
 * Refused: empty, absolute, drive letters, backslashes, URL schemes, query/fragment, percent-escapes, NUL, and any
 * path that normalises to '..' or above.
 */
export function safeRelativePath(p: unknown, where: string): string {
  if (typeof p !== 'string' || p.length === 0) throw new GraftError(`${where}: empty or non-text file path in the model`);
  const bad =
    p.includes('\0') ||
    p.includes('\\') ||
    p.includes('%') ||
    p.includes('?') ||
    p.includes('#') ||
    /^[A-Za-z][A-Za-z0-9+.-]*:/.test(p) ||
    p.startsWith('/') ||
    p.startsWith('//');
  const norm = posix.normalize(p);
  if (bad || norm === '.' || norm === '..' || norm.startsWith('../') || isAbsolute(norm)) {
    throw new GraftError(`${where}: refused file path '${p}': it leaves the model's folder (or is not a plain relative path)`);
  }
  return norm.replace(/^\.\//, '');
}

/** The absolute path of `rel` inside `dir`, after checking that it stays inside. */
export function insideFolder(dir: string, rel: string, where: string): string {
  const safe = safeRelativePath(rel, where);
  const full = resolve(dir, ...safe.split('/'));
  const r = relative(resolve(dir), full);
  if (r === '' || r.startsWith('..') || isAbsolute(r) || r.split(sep).includes('..')) {
    throw new GraftError(`${where}: refused file path '${rel}': it leaves the model's folder`);
  }
  return full;
}

// ---------------------------------------------------------------------------------------------------------------
// TF.js

export interface TfjsWeight { name: string; shape: number[]; dtype: string; quantization?: { dtype?: string } }
export interface TfjsGroup { paths: string[]; weights: TfjsWeight[] }
export interface TfjsModelJson {
  kind: 'tfjs-layers' | 'tfjs-graph';
  groups: TfjsGroup[];
  /** Shard paths in manifest order, checked safe. */
  shards: string[];
  /** Expected total shard bytes of each group (undefined when a group holds strings, whose size is not fixed). */
  groupBytes: (number | undefined)[];
}

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, int8: 1, uint16: 2, int16: 2, float16: 2, complex64: 8 };

/** Parse and check a TF.js model.json: JSON, a model topology, a well-formed weights manifest, safe shard paths. */
export function parseTfjsModelJson(text: string, where: string): TfjsModelJson {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (err) {
    throw new GraftError(`${where}: not a TF.js model.json (not valid JSON: ${(err as Error).message})`);
  }
  if (!j || typeof j !== 'object' || Array.isArray(j)) throw new GraftError(`${where}: not a TF.js model.json (not a JSON object)`);
  const o = j as Record<string, unknown>;
  const topo = o.modelTopology as Record<string, unknown> | undefined;
  if (!topo || typeof topo !== 'object') throw new GraftError(`${where}: not a TF.js model.json (no modelTopology)`);
  const kind: TfjsModelJson['kind'] =
    o.format === 'graph-model' || Array.isArray((topo as { node?: unknown }).node) ? 'tfjs-graph' : 'tfjs-layers';
  const wm = o.weightsManifest;
  if (!Array.isArray(wm)) throw new GraftError(`${where}: TF.js model.json has no weightsManifest list`);
  const groups: TfjsGroup[] = [];
  const shards: string[] = [];
  const seen = new Set<string>();
  const groupBytes: (number | undefined)[] = [];
  wm.forEach((g, gi) => {
    const grp = g as { paths?: unknown; weights?: unknown };
    if (!grp || !Array.isArray(grp.paths) || !Array.isArray(grp.weights)) {
      throw new GraftError(`${where}: weightsManifest[${gi}] is not {paths: [...], weights: [...]}`);
    }
    const paths = grp.paths.map((p, pi) => safeRelativePath(p, `${where}: weightsManifest[${gi}].paths[${pi}]`));
    for (const p of paths) {
      if (seen.has(p)) throw new GraftError(`${where}: shard '${p}' is listed twice`);
      seen.add(p);
      shards.push(p);
    }
    let bytes: number | undefined = 0;
    const weights = grp.weights.map((w, wi) => {
      const ww = w as TfjsWeight;
      if (!ww || typeof ww.name !== 'string' || !Array.isArray(ww.shape) || typeof ww.dtype !== 'string') {
        throw new GraftError(`${where}: weightsManifest[${gi}].weights[${wi}] is not {name, shape, dtype}`);
      }
      if (!ww.shape.every((d) => Number.isInteger(d) && d >= 0)) {
        throw new GraftError(`${where}: weight '${ww.name}' has a bad shape [${ww.shape.join(', ')}]`);
      }
      const qd = ww.quantization?.dtype;
      const per = qd ? DTYPE_BYTES[qd] : DTYPE_BYTES[ww.dtype];
      if (per === undefined || bytes === undefined) bytes = undefined;
      else bytes += per * ww.shape.reduce((a, b) => a * b, 1);
      return ww;
    });
    groups.push({ paths, weights });
    groupBytes.push(bytes);
  });
  return { kind, groups, shards, groupBytes };
}

/**
 * Check a TF.js model folder: model.json parses, every shard exists inside the folder, and each group's shards hold
 * exactly the bytes its weights need. Returns the parsed model.json.
 */
export async function checkTfjsFolder(dir: string, modelJson = 'model.json', label = join(dir, modelJson)): Promise<TfjsModelJson> {
  const where = label;
  let text: string;
  try {
    text = await readFile(insideFolder(dir, modelJson, dir), 'utf8');
  } catch (err) {
    if (err instanceof GraftError) throw err;
    throw new GraftError(`${where}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const m = parseTfjsModelJson(text, where);
  const base = posix.dirname(safeRelativePath(modelJson, where));
  const realDir = await realpath(dir);
  for (let gi = 0; gi < m.groups.length; gi++) {
    const g = m.groups[gi]!;
    let sum = 0;
    for (const p of g.paths) {
      const rel = base === '.' ? p : `${base}/${p}`;
      const full = insideFolder(dir, rel, where);
      let st;
      try {
        st = await stat(full);
      } catch {
        throw new GraftError(`${where}: weight shard '${p}' is missing`);
      }
      if (!st.isFile()) throw new GraftError(`${where}: weight shard '${p}' is not a file`);
      // A link inside the folder may not lead outside it either.
      const real = await realpath(full);
      const r = relative(realDir, real);
      if (r.startsWith('..') || isAbsolute(r)) throw new GraftError(`${where}: refused weight shard '${p}': it is a link leading out of the model's folder`);
      sum += st.size;
    }
    const want = m.groupBytes[gi];
    if (want !== undefined && sum !== want) {
      const what = sum < want ? 'truncated or missing data' : 'too long';
      throw new GraftError(`${where}: weight shards [${g.paths.join(', ')}] hold ${sum} bytes, the manifest needs ${want} (${what}: wrong shard?)`);
    }
  }
  return m;
}

// ---------------------------------------------------------------------------------------------------------------
// TFLite and format sniffing

/** A TFLite flatbuffer carries the identifier "TFL3" at bytes 4-7. */
export async function checkTflite(path: string): Promise<void> {
  const h = await readFileHead(path, 8);
  if (h.length < 8 || h.subarray(4, 8).toString('latin1') !== 'TFL3') {
    throw new GraftError(`${path}: not a TFLite model (no TFL3 identifier)`);
  }
}

/**
 * What a local path holds, judged by content: 'onnx' is the default guess for anything not recognisably TF.js or
 * TFLite (the ONNX loader then says clearly if it is not ONNX either). `file` is the entry file (model.json for a
 * TF.js folder).
 */
export async function sniffModel(path: string): Promise<{ format: ModelFormat; file: string } | undefined> {
  let st;
  try {
    st = await stat(path);
  } catch {
    return undefined;
  }
  // A model.json that exists but does not parse is reported as such (its parse error names the problem), rather
  // than falling through to "not an ONNX model".
  const json = st.isDirectory() ? join(path, 'model.json') : /\.json$/i.test(path) ? path : undefined;
  if (json) {
    let text: string;
    try {
      text = await readFile(json, 'utf8');
    } catch {
      return undefined;
    }
    const m = parseTfjsModelJson(text, json);
    return { format: m.kind, file: json };
  }
  const h = await readFileHead(path, 8).catch(() => Buffer.alloc(0));
  if (h.length >= 8 && h.subarray(4, 8).toString('latin1') === 'TFL3') return { format: 'tflite', file: path };
  return { format: 'onnx', file: path };
}

// ---------------------------------------------------------------------------------------------------------------
// ONNX external data

type TensorProto = InstanceType<typeof onnx.TensorProto>;
type GraphProto = InstanceType<typeof onnx.GraphProto>;
const EXTERNAL = 1;

function* tensorsOf(g: GraphProto | null | undefined): Generator<TensorProto> {
  if (!g) return;
  for (const t of g.initializer ?? []) yield t as TensorProto;
  for (const s of g.sparseInitializer ?? []) {
    if (s.values) yield s.values as TensorProto;
    if (s.indices) yield s.indices as TensorProto;
  }
  for (const n of g.node ?? []) {
    for (const a of n.attribute ?? []) {
      if (a.t) yield a.t as TensorProto;
      for (const t of a.tensors ?? []) yield t as TensorProto;
      if (a.g) yield* tensorsOf(a.g as GraphProto);
      for (const sg of a.graphs ?? []) yield* tensorsOf(sg as GraphProto);
    }
  }
}

/**
 * Check the external-data references of an ONNX model whose file is `modelPath`: every location must be a relative
 * path inside the model's folder, name an existing file, and (offset, length) must lie within it. Returns the
 * relative locations used. Nothing outside the folder is opened.
 */
export async function checkOnnxExternalData(model: Uint8Array | InstanceType<typeof onnx.ModelProto>, modelPath: string, dir: string): Promise<string[]> {
  let proto = model as InstanceType<typeof onnx.ModelProto>;
  if (model instanceof Uint8Array) {
    try {
      proto = onnx.ModelProto.decode(model);
    } catch (err) {
      throw new GraftError(`${modelPath}: not an ONNX model (${(err as Error).message.split('\n')[0]})`);
    }
  }
  const used = new Set<string>();
  for (const t of tensorsOf(proto.graph as GraphProto)) {
    if (t.dataLocation !== EXTERNAL) continue;
    const kv = Object.fromEntries((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
    const where = `${modelPath}: tensor '${t.name ?? '?'}' external data`;
    const full = insideFolder(dir, kv.location ?? '', where);
    let st;
    try {
      st = await stat(full);
    } catch {
      throw new GraftError(`${where}: file '${kv.location}' is missing`);
    }
    const offset = Number(kv.offset ?? 0);
    const length = kv.length !== undefined ? Number(kv.length) : st.size - offset;
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > st.size) {
      throw new GraftError(`${where}: bytes ${offset}..${offset + length} are outside '${kv.location}' (${st.size} bytes)`);
    }
    used.add(safeRelativePath(kv.location, where));
  }
  return [...used];
}
