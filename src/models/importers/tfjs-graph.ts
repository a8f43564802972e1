import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, posix } from 'node:path';
import { GraftError } from '../../errors.js';
import { checkTfjsFolder, insideFolder, type TfjsModelJson } from '../store-checks.js';
import { OnnxBuilder, type Attr } from './onnx-builder.js';
import { halfToFloat } from '../../util/numeric.js';

/**
 * TF.js graph models (`format: "graph-model"`: a TensorFlow GraphDef in JSON, as written by tensorflowjs_converter,
 * e.g. the TF Hub TF.js releases) → ONNX (opset 13).
 *
 * - The files are untrusted: the folder is checked first with `checkTfjsFolder` (shard paths inside the folder, no
 *   links out of it, every shard present, shard bytes exactly what the manifest needs), then model.json and the shards
 *   are read through the same checked paths. Nothing outside the model's folder is opened.
 * - Weights are the Const nodes' values: float32 / int32 / bool from the manifest, quantised ones (uint8 / uint16 with
 *   scale and min, float16) dequantised to float32, and small values written inline in the node (`attr.value.tensor`).
 * - Only the nodes the outputs need are translated, in dependency order. The graph is NCHW: the input is `input`
 *   [N, 3, H, W] and every 4-D tensor stays NCHW. TF is NHWC (`data_format` NCHW graphs are refused), so conv weights
 *   are transposed (HWIO → OIHW; depthwise HW·C·M → (C·M)·1·HW with group = C), constants broadcast against 4-D
 *   tensors are laid out NCHW, and the ops whose meaning depends on the layout (reshape, squeeze, mean, pad, concat,
 *   softmax axes) are translated. TF SAME padding is ONNX auto_pad SAME_UPPER; EXPLICIT padding becomes `pads`.
 * - Outputs: `features` (the last global pooling, a mean over H and W or a pool whose window covers the whole map,
 *   flattened to [N, C]); `logits` (a classifier's output after that pooling, or the input of a final Softmax);
 *   the graph's own outputs as `output`, `output_1`, … when they are neither (4-D ones NCHW).
 * - Preprocessing is written as Windows ML image metadata: RGB, Image.NominalPixelRange Normalized_0_1 (TF Hub image
 *   models take RGB in [0, 1]; a graph scaling its input itself, like the TF Hub ones, does so inside the graph).
 * - An op outside SUPPORTED_TFJS_GRAPH_OPS (or an attribute value this importer cannot honour) is a GraftError naming
 *   the op and the node, before anything is written.
 */

/** The TF ops this importer translates. */
export const SUPPORTED_TFJS_GRAPH_OPS = [
  'Placeholder', 'PlaceholderWithDefault', 'Const', 'Identity', 'StopGradient', 'Snapshot', 'NoOp',
  'Conv2D', '_FusedConv2D', 'DepthwiseConv2dNative', 'FusedDepthwiseConv2dNative', 'BiasAdd',
  'FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3',
  'Add', 'AddV2', 'AddN', 'Sub', 'Mul', 'RealDiv', 'Div', 'Maximum', 'Minimum',
  'Relu', 'Relu6', 'Elu', 'LeakyRelu', 'Prelu', 'Sigmoid', 'Tanh', 'Softmax', 'Neg', 'Sqrt', 'Rsqrt', 'Square', 'Exp',
  'AvgPool', 'MaxPool', 'Mean', 'Max', 'Squeeze', 'Reshape', 'Pad', 'PadV2', 'ConcatV2', 'MatMul', '_FusedMatMul',
] as const;
const SUPPORTED = new Set<string>(SUPPORTED_TFJS_GRAPH_OPS);

const NCHW_OF_NHWC = [0, 2, 3, 1]; // NHWC axis a is NCHW axis NCHW_OF_NHWC[a]
const TO_NHWC = [0, 2, 3, 1];
const TO_NCHW = [0, 3, 1, 2];
const RESERVED = new Set(['input', 'features', 'logits', 'output']);

interface GraphNode {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, AttrValue>;
}
interface AttrValue {
  i?: string | number;
  f?: number | string;
  b?: boolean;
  s?: string;
  type?: string;
  shape?: { dim?: { size?: string | number }[]; unknownRank?: boolean };
  tensor?: TensorValue;
  list?: { i?: (string | number)[]; f?: (number | string)[]; s?: string[]; type?: string[] };
}
interface TensorValue {
  dtype?: string;
  tensorShape?: { dim?: { size?: string | number }[] };
  floatVal?: (number | string)[];
  intVal?: (number | string)[];
  int64Val?: (number | string)[];
  boolVal?: boolean[];
  tensorContent?: string;
}
interface WeightEntry { name: string; shape: number[]; dtype: string; quantization?: { dtype?: string; scale?: number; min?: number; original_dtype?: string } }
interface GraphModelJson {
  format?: string;
  generatedBy?: string;
  convertedBy?: string;
  modelTopology: { node?: GraphNode[]; library?: { function?: unknown[] } };
  weightsManifest: { paths: string[]; weights: WeightEntry[] }[];
  signature?: { inputs?: Record<string, { name?: string }>; outputs?: Record<string, { name?: string }> };
  userDefinedMetadata?: { signature?: GraphModelJson['signature'] };
}

/** A constant's value, in TF order (NHWC for 4-D). Integers and bools are kept as numbers in `data`. */
interface ConstValue { shape: number[]; data: Float32Array; dtype: 'float32' | 'int32' | 'bool' }

/**
 * A tensor of the graph being built. `shape` is in TF order (NHWC for rank 4), null where unknown; rank is always
 * known. A rank-4 tensor with an ONNX `name` is NCHW. Constants are kept as values (`konst`) and written as
 * initializers only where they are used as data, in the layout the use needs.
 */
interface T {
  name?: string;
  shape: (number | null)[];
  konst?: ConstValue;
  /** For a constant: the Const node's name (its initializer's name). */
  cname?: string;
  /** Derived from a global pooling with only reshaping since (the feature vector). */
  pooled?: boolean;
}

function fail(file: string, msg: string): never {
  throw new GraftError(`${file}: ${msg}`);
}

const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Transpose a row-major array of `shape` by `perm`. */
function transposeData<A extends Float32Array>(data: A, shape: number[], perm: number[]): A {
  const out = new (data.constructor as new (n: number) => A)(data.length);
  const newShape = perm.map((p) => shape[p]!);
  const strides = shape.map((_, i) => count(shape.slice(i + 1)));
  const idx = new Array<number>(shape.length).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let k = 0; k < perm.length; k++) src += idx[k]! * strides[perm[k]!]!;
    out[o] = data[src]!;
    for (let k = perm.length - 1; k >= 0; k--) {
      if (++idx[k]! < newShape[k]!) break;
      idx[k] = 0;
    }
  }
  return out;
}

/** Decode one weight of the manifest from its bytes (already checked to be exactly the right length). */
function decodeWeight(w: WeightEntry, bytes: Buffer, file: string): ConstValue {
  const n = count(w.shape);
  const q = w.quantization;
  const dtype: ConstValue['dtype'] = w.dtype === 'float32' ? 'float32' : w.dtype === 'int32' ? 'int32' : w.dtype === 'bool' ? 'bool' : fail(file, `weight '${w.name}': dtype ${w.dtype} is not supported`);
  const data = new Float32Array(n);
  if (q?.dtype) {
    if (q.dtype === 'float16') for (let i = 0; i < n; i++) data[i] = halfToFloat(bytes.readUInt16LE(2 * i));
    else if (q.dtype === 'uint8' || q.dtype === 'uint16') {
      const scale = Number(q.scale ?? 1);
      const min = Number(q.min ?? 0);
      for (let i = 0; i < n; i++) data[i] = (q.dtype === 'uint8' ? bytes[i]! : bytes.readUInt16LE(2 * i)) * scale + min;
    } else fail(file, `weight '${w.name}': quantisation dtype ${q.dtype} is not supported`);
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

const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };

/**
 * Read every weight of a checked TF.js folder. `checked` comes from checkTfjsFolder (paths inside the folder, sizes
 * exact); the shard files are opened through insideFolder again, so nothing else can be read.
 */
async function readWeights(dir: string, modelJson: string, checked: TfjsModelJson, json: GraphModelJson, file: string): Promise<Map<string, ConstValue>> {
  const base = posix.dirname(modelJson);
  const out = new Map<string, ConstValue>();
  for (let gi = 0; gi < checked.groups.length; gi++) {
    const g = checked.groups[gi]!;
    const chunks: Buffer[] = [];
    for (const p of g.paths) chunks.push(await readFile(insideFolder(dir, base === '.' ? p : `${base}/${p}`, file)));
    const buf = Buffer.concat(chunks);
    let off = 0;
    for (const w of json.weightsManifest[gi]!.weights) {
      const per = BYTES[w.quantization?.dtype ?? w.dtype] ?? fail(file, `weight '${w.name}': dtype ${w.quantization?.dtype ?? w.dtype} is not supported`);
      const len = per * count(w.shape);
      if (off + len > buf.length) fail(file, `weight shards [${g.paths.join(', ')}] hold ${buf.length} bytes, fewer than the manifest needs (truncated shard?)`);
      out.set(w.name, decodeWeight(w, buf.subarray(off, off + len), file));
      off += len;
    }
    if (off !== buf.length) fail(file, `weight shards [${g.paths.join(', ')}] hold ${buf.length} bytes, the manifest describes ${off} (wrong shard?)`);
  }
  return out;
}

/** A constant written inline in a Const node (`attr.value.tensor`). */
function inlineTensor(t: TensorValue, file: string, where: string): ConstValue {
  const shape = (t.tensorShape?.dim ?? []).map((d) => Number(d.size ?? 0));
  if (!shape.every((d) => Number.isInteger(d) && d >= 0)) fail(file, `${where}: bad constant shape [${shape.join(', ')}]`);
  const n = count(shape);
  const dt = t.dtype ?? 'DT_FLOAT';
  const dtype: ConstValue['dtype'] = dt === 'DT_FLOAT' ? 'float32' : dt === 'DT_INT32' || dt === 'DT_INT64' ? 'int32' : dt === 'DT_BOOL' ? 'bool' : fail(file, `${where}: constant of type ${dt} is not supported`);
  if (n > 1 << 26) fail(file, `${where}: constant of ${n} elements is too large`);
  const data = new Float32Array(n);
  if (t.tensorContent) {
    const bytes = Buffer.from(t.tensorContent, 'base64');
    const per = dt === 'DT_INT64' ? 8 : dt === 'DT_BOOL' ? 1 : 4;
    if (bytes.length !== n * per) fail(file, `${where}: constant holds ${bytes.length} bytes, its shape needs ${n * per}`);
    for (let i = 0; i < n; i++) {
      data[i] = dt === 'DT_FLOAT' ? bytes.readFloatLE(4 * i) : dt === 'DT_INT32' ? bytes.readInt32LE(4 * i) : dt === 'DT_INT64' ? Number(bytes.readBigInt64LE(8 * i)) : bytes[i]! ? 1 : 0;
    }
  } else {
    const vals = (dtype === 'float32' ? t.floatVal : dtype === 'bool' ? t.boolVal : dt === 'DT_INT64' ? t.int64Val : t.intVal) ?? [];
    const nums = (vals as unknown[]).map((v) => (typeof v === 'boolean' ? Number(v) : Number(v)));
    if (nums.length === 0 && n > 0) fail(file, `${where}: constant has no values`);
    // TF repeats the last value to fill the shape.
    for (let i = 0; i < n; i++) data[i] = nums[Math.min(i, nums.length - 1)]!;
  }
  return { shape, data, dtype };
}

function readModelJson(text: string, file: string): GraphModelJson {
  let j: GraphModelJson;
  try {
    j = JSON.parse(text);
  } catch (err) {
    fail(file, `not a TF.js model.json (${(err as Error).message})`);
  }
  if (!j || typeof j !== 'object' || !j.modelTopology || !Array.isArray(j.modelTopology.node)) fail(file, 'not a TF.js graph model (no modelTopology.node list)');
  if (!Array.isArray(j.weightsManifest)) fail(file, 'not a TF.js graph model (no weightsManifest)');
  for (const [i, n] of j.modelTopology.node.entries()) {
    if (!n || typeof n.name !== 'string' || typeof n.op !== 'string') fail(file, `modelTopology.node[${i}] is not {name, op, ...}`);
    if (n.input !== undefined && (!Array.isArray(n.input) || !n.input.every((s) => typeof s === 'string'))) fail(file, `node ${n.name}: input is not a list of names`);
  }
  return j;
}

/** Import a TF.js graph model (model.json + shards, or the folder holding them) as ONNX bytes. */
export async function importTfjsGraph(modelJsonPath: string): Promise<Uint8Array> {
  let st;
  try {
    st = await stat(modelJsonPath);
  } catch {
    fail(modelJsonPath, 'not found');
  }
  const file = st.isDirectory() ? join(modelJsonPath, 'model.json') : modelJsonPath;
  const dir = dirname(file);
  const checked = await checkTfjsFolder(dir, basename(file), file);
  if (checked.kind !== 'tfjs-graph') fail(file, 'a TF.js layers model, not a graph model (use the tfjs-layers importer)');
  const json = readModelJson(await readFile(insideFolder(dir, basename(file), file), 'utf8'), file);
  const weights = await readWeights(dir, basename(file), checked, json, file);
  return translate(json, weights, file);
}

// ---------------------------------------------------------------------------------------------------------------
// The translation

function translate(json: GraphModelJson, weights: Map<string, ConstValue>, file: string): Uint8Array {
  const nodes = json.modelTopology.node!;
  if (json.modelTopology.library?.function?.length) fail(file, 'graph has functions (control flow); not supported');
  const byName = new Map<string, GraphNode>();
  for (const n of nodes) {
    if (byName.has(n.name)) fail(file, `two nodes are named '${n.name}'`);
    byName.set(n.name, n);
  }
  const where = (n: GraphNode) => `node '${n.name}' (op ${n.op})`;
  const dataInputs = (n: GraphNode) => (n.input ?? []).filter((s) => !s.startsWith('^'));
  const ref = (s: string): { node: string; index: number } => {
    const m = /^(.*?)(?::(\d+))?$/.exec(s)!;
    return { node: m[1]!, index: Number(m[2] ?? 0) };
  };

  // ---- outputs of the graph and the nodes they need, in dependency order ---------------------------------------
  const sig = json.signature ?? json.userDefinedMetadata?.signature;
  let outRefs = Object.values(sig?.outputs ?? {}).map((o) => o?.name).filter((s): s is string => typeof s === 'string');
  if (outRefs.length && !outRefs.every((s) => byName.has(ref(s).node))) outRefs = [];
  if (!outRefs.length) {
    const used = new Set<string>();
    for (const n of nodes) for (const s of n.input ?? []) used.add(ref(s.replace(/^\^/, '')).node);
    outRefs = nodes.filter((n) => !used.has(n.name) && !['Const', 'NoOp', 'Placeholder'].includes(n.op)).map((n) => n.name);
  }
  if (!outRefs.length) fail(file, 'graph has no output');
  const order: GraphNode[] = [];
  {
    const state = new Map<string, 1 | 2>();
    for (const o of outRefs) {
      const stack: [GraphNode, number][] = [[byName.get(ref(o).node)!, 0]];
      while (stack.length) {
        const top = stack[stack.length - 1]!;
        const [n, i] = top;
        if (i === 0) {
          if (state.get(n.name) === 2) {
            stack.pop();
            continue;
          }
          state.set(n.name, 1);
        }
        const ins = dataInputs(n);
        if (i < ins.length) {
          top[1]++;
          const dep = byName.get(ref(ins[i]!).node) ?? fail(file, `${where(n)}: input '${ins[i]}' is not a node of the graph`);
          const s = state.get(dep.name);
          if (s === 1) fail(file, `${where(n)}: the graph has a cycle through '${dep.name}'`);
          if (s !== 2) stack.push([dep, 0]);
        } else {
          state.set(n.name, 2);
          order.push(n);
          stack.pop();
        }
      }
    }
  }
  // Refuse what cannot be translated before building anything.
  for (const n of order) if (!SUPPORTED.has(n.op)) fail(file, `${where(n)} is not supported by the TF.js graph importer`);

  // ---- attributes -------------------------------------------------------------------------------------------
  const attr = (n: GraphNode, k: string) => n.attr?.[k];
  const str = (n: GraphNode, k: string, d?: string): string => {
    const v = attr(n, k)?.s;
    if (v === undefined) return d ?? fail(file, `${where(n)}: attribute ${k} missing`);
    return Buffer.from(v, 'base64').toString('utf8');
  };
  const ints = (n: GraphNode, k: string, d?: number[]): number[] => {
    const v = attr(n, k)?.list?.i;
    if (!v) return d ?? fail(file, `${where(n)}: attribute ${k} missing`);
    return v.map(Number);
  };
  const strs = (n: GraphNode, k: string): string[] => (attr(n, k)?.list?.s ?? []).map((s) => Buffer.from(s, 'base64').toString('utf8'));
  const flt = (n: GraphNode, k: string, d: number): number => {
    const v = attr(n, k)?.f;
    return v === undefined ? d : Number(v);
  };
  const int = (n: GraphNode, k: string, d: number): number => {
    const v = attr(n, k)?.i;
    return v === undefined ? d : Number(v);
  };
  const bool = (n: GraphNode, k: string, d = false): boolean => attr(n, k)?.b ?? d;
  const nhwcOnly = (n: GraphNode) => {
    const f = str(n, 'data_format', 'NHWC');
    if (f !== 'NHWC') fail(file, `${where(n)}: data_format ${f} is not supported (only NHWC)`);
  };
  const floatType = (n: GraphNode) => {
    const t = attr(n, 'T')?.type ?? attr(n, 'dtype')?.type;
    if (t !== undefined && t !== 'DT_FLOAT') fail(file, `${where(n)}: type ${t} is not supported (only float)`);
  };

  // ---- building blocks ----------------------------------------------------------------------------------------
  const b = new OnnxBuilder();
  const values = new Map<string, T>();
  const used = new Set<string>(['input']);
  /** `base` itself the first time (TF names are unique), a fresh variant after; never a name graft gives outputs. */
  const uniq = (base: string): string => {
    const name = used.has(base) || RESERVED.has(base) || /^output_\d+$/.test(base) ? b.fresh(base) : base;
    used.add(name);
    return name;
  };
  const outName = (n: GraphNode) => uniq(n.name);
  const materialised = new Map<ConstValue, Map<string, string>>();
  /** An initializer for constant `c` in layout `how` (written once per layout). */
  const initializer = (c: ConstValue, hint: string, how: string, dims: number[], values: () => Float32Array): string => {
    const m = materialised.get(c) ?? new Map<string, string>();
    materialised.set(c, m);
    const hit = m.get(how);
    if (hit) return hit;
    const name = b.floats(uniq(hint), dims, values());
    m.set(how, name);
    return name;
  };

  /** An ONNX name for `t` as a data input: constants become float initializers, 4-D ones NCHW. */
  const data = (t: T, hint: string): string => {
    if (t.name) return t.name;
    const c = t.konst!;
    const four = c.shape.length === 4;
    return initializer(c, t.cname ?? hint, 'data', four ? TO_NCHW.map((p) => c.shape[p]!) : c.shape, () => (four ? transposeData(c.data, c.shape, TO_NCHW) : c.data));
  };
  const constOf = (n: GraphNode, i: number, what: string): ConstValue => {
    const t = input(n, i);
    return t.konst ?? fail(file, `${where(n)}: the ${what} must be a constant`);
  };
  const input = (n: GraphNode, i: number): T => {
    const s = dataInputs(n)[i] ?? fail(file, `${where(n)}: input ${i} missing`);
    const r = ref(s);
    const t = values.get(r.index ? `${r.node}:${r.index}` : r.node);
    if (!t) fail(file, `${where(n)}: input '${s}' is not computed (only output 0 of ${byName.get(r.node)?.op ?? 'that node'} is supported)`);
    return t;
  };
  const floats = (v: number[] | Float32Array, dims?: number[]) => b.floats(b.fresh('c'), dims ?? [v.length], Float32Array.from(v));
  const clip = (x: string, lo: number, hi: number, out: string) => b.node('Clip', [x, floats([lo], []), floats([hi], [])], out);

  /** `t` broadcast against a 4-D NCHW tensor: constants re-laid out, other lower-rank tensors unsqueezed + transposed. */
  const as4d = (t: T, hint: string): string => {
    const r = t.shape.length;
    if (r === 4 || r === 0) return data(t, hint);
    if (t.konst) {
      const c = t.konst;
      const s4 = [...new Array<number>(4 - r).fill(1), ...c.shape];
      return initializer(c, t.cname ?? hint, 'nchw', TO_NCHW.map((p) => s4[p]!), () => transposeData(c.data, s4, TO_NCHW));
    }
    const u = b.node('Unsqueeze', [t.name!, b.ints(b.fresh('axes'), [...Array(4 - r).keys()])], b.fresh(`${hint}_4d`));
    return b.node('Transpose', [u], b.fresh(`${hint}_nchw`), { perm: TO_NCHW });
  };
  const broadcastShape = (shapes: (number | null)[][]): (number | null)[] => {
    const r = Math.max(...shapes.map((s) => s.length));
    return [...Array(r).keys()].map((i) => {
      let d: number | null = 1;
      for (const s of shapes) {
        const v = s[s.length - r + i];
        if (v === undefined || v === 1) continue;
        if (v === null) d = d === 1 ? null : d;
        else d = v;
      }
      return d;
    });
  };
  /** An elementwise op on TF-broadcast inputs (constants folded when all inputs are constant floats). */
  const elementwise = (n: GraphNode, op: string, ins: T[], out: string, fold?: (...v: number[]) => number): T => {
    const shape = broadcastShape(ins.map((t) => t.shape));
    if (fold && ins.every((t) => t.konst) && ins.every((t) => count(t.konst!.shape) === 1 || t.konst!.shape.join() === shape.join())) {
      const len = count(shape as number[]);
      const d = Float32Array.from({ length: len }, (_, i) => fold(...ins.map((t) => t.konst!.data[count(t.konst!.shape) === 1 ? 0 : i]!)));
      return { shape, konst: { shape: shape as number[], data: d, dtype: 'float32' } };
    }
    const names = shape.length === 4 ? ins.map((t, i) => as4d(t, `${n.name}/in${i}`)) : ins.map((t, i) => data(t, `${n.name}/in${i}`));
    return { name: b.node(op, names, out), shape };
  };
  const toNhwc = (t: T, hint: string): string => (t.shape.length === 4 ? b.node('Transpose', [data(t, hint)], b.fresh(`${hint}_nhwc`), { perm: TO_NHWC }) : data(t, hint));
  const toNchw = (x: string, rank: number, out: string): string => (rank === 4 ? b.node('Transpose', [x], out, { perm: TO_NCHW }) : b.node('Identity', [x], out));

  /**
   * Remove TF axes `axes` of a 4-D NCHW tensor with `op` (a reduction, or Squeeze), keeping TF's order of the
   * remaining dimensions; with `keep` the result is 4-D (NCHW).
   */
  const dropAxes4d = (x: T, axes: number[], keep: boolean, out: string, op: (x: string, nchwAxes: number[], keep: boolean, out: string) => string): string => {
    const nchwAxes = axes.map((a) => NCHW_OF_NHWC[a]!).sort((p, q) => p - q);
    if (keep) return op(x.name!, nchwAxes, true, out);
    const remaining = [0, 1, 2, 3].filter((a) => !axes.includes(a)).map((a) => NCHW_OF_NHWC[a]!);
    const sorted = [...remaining].sort((p, q) => p - q);
    if (remaining.every((v, i) => v === sorted[i])) return op(x.name!, nchwAxes, false, out);
    const reduced = op(x.name!, nchwAxes, false, b.fresh(`${out}_nchw`));
    return b.node('Transpose', [reduced], out, { perm: remaining.map((v) => sorted.indexOf(v)) });
  };
  const normAxes = (axes: number[], rank: number, n: GraphNode): number[] => {
    const out = [...new Set(axes.map((a) => (a < 0 ? a + rank : a)))];
    if (!out.every((a) => a >= 0 && a < rank)) fail(file, `${where(n)}: axis out of range for a ${rank}-D tensor`);
    return out.sort((p, q) => p - q);
  };

  /** Conv2D / depthwise, with an optional bias and fused activation; returns the NCHW output. */
  const conv = (n: GraphNode, depthwise: boolean, out: string): T => {
    floatType(n);
    nhwcOnly(n);
    const x = input(n, 0);
    if (x.shape.length !== 4) fail(file, `${where(n)}: input is ${x.shape.length}-D, expected 4-D`);
    const k = constOf(n, 1, 'filter');
    if (k.shape.length !== 4) fail(file, `${where(n)}: filter is ${k.shape.length}-D, expected 4-D`);
    const [kh, kw, cin, cm] = k.shape as [number, number, number, number];
    const strides = ints(n, 'strides', [1, 1, 1, 1]);
    const dil = ints(n, 'dilations', [1, 1, 1, 1]);
    if (strides.length !== 4 || strides[0] !== 1 || strides[3] !== 1) fail(file, `${where(n)}: strides [${strides}] not supported`);
    if (dil.length !== 4 || dil[0] !== 1 || dil[3] !== 1) fail(file, `${where(n)}: dilations [${dil}] not supported`);
    const outC = depthwise ? cin * cm : cm;
    const W = depthwise ? transposeData(k.data, k.shape, [2, 3, 0, 1]) : transposeData(k.data, k.shape, [3, 2, 0, 1]);
    const wName = initializer(k, input(n, 1).cname ?? `${n.name}/filter`, depthwise ? 'dw' : 'conv', depthwise ? [outC, 1, kh, kw] : [outC, cin, kh, kw], () => W);
    const attrs: Record<string, Attr> = { kernel_shape: [kh, kw], strides: [strides[1]!, strides[2]!], dilations: [dil[1]!, dil[2]!], group: depthwise ? cin : 1 };
    const pad = padding(n, attrs, x.shape, [kh, kw], [strides[1]!, strides[2]!], [dil[1]!, dil[2]!]);
    const convIn = [x.name!, wName];

    // Fused ops: [BiasAdd | FusedBatchNorm]? [activation]?
    let fused = n.op === '_FusedConv2D' || n.op === 'FusedDepthwiseConv2dNative' ? strs(n, 'fused_ops') : [];
    const numArgs = int(n, 'num_args', dataInputs(n).length - 2);
    let arg = 2;
    let bn: { scale: ConstValue; offset: ConstValue; mean: ConstValue; variance: ConstValue; eps: number } | undefined;
    if (fused[0] === 'BiasAdd') {
      const bias = constOf(n, arg++, 'bias');
      if (count(bias.shape) !== outC) fail(file, `${where(n)}: bias has ${count(bias.shape)} values for ${outC} channels`);
      convIn.push(initializer(bias, input(n, arg - 1).cname ?? `${n.name}/bias`, 'vec', [outC], () => bias.data));
      fused = fused.slice(1);
    } else if (fused[0] === 'FusedBatchNorm') {
      bn = { scale: constOf(n, arg++, 'scale'), offset: constOf(n, arg++, 'offset'), mean: constOf(n, arg++, 'mean'), variance: constOf(n, arg++, 'variance'), eps: flt(n, 'epsilon', 1e-3) };
      fused = fused.slice(1);
    }
    if (fused.length > 1) fail(file, `${where(n)}: fused ops [${strs(n, 'fused_ops').join(', ')}] not supported`);
    if (arg - 2 > numArgs) fail(file, `${where(n)}: num_args ${numArgs} is fewer than its fused ops need`);
    const shape = [x.shape[0]!, convDim(x.shape[1]!, kh, strides[1]!, dil[1]!, pad.h), convDim(x.shape[2]!, kw, strides[2]!, dil[2]!, pad.w), outC];
    let y = b.node('Conv', convIn, fused.length || bn ? b.fresh(n.name) : out, attrs);
    if (bn) {
      const { scale, offset, mean, variance, eps } = bn;
      const f = (c: ConstValue, what: string) => (count(c.shape) === outC ? b.floats(b.fresh(`${n.name}/${what}`), [outC], c.data) : fail(file, `${where(n)}: batch norm ${what} has ${count(c.shape)} values for ${outC} channels`));
      y = b.node('BatchNormalization', [y, f(scale, 'scale'), f(offset, 'offset'), f(mean, 'mean'), f(variance, 'variance')], fused.length ? b.fresh(n.name) : out, { epsilon: { f: eps } });
    }
    if (fused.length) {
      const preluAlpha = fused[0] === 'Prelu' ? input(n, arg++) : undefined;
      y = activation(n, fused[0]!, { name: y, shape }, out, preluAlpha).name!;
    }
    return { name: y, shape };
  };
  const convDim = (inp: number | null, k: number, s: number, d: number, p: 'same' | [number, number]): number | null => {
    if (inp === null) return null;
    if (p === 'same') return Math.ceil(inp / s);
    return Math.floor((inp + p[0] + p[1] - (k - 1) * d - 1) / s) + 1;
  };
  /**
   * TF padding → ONNX attrs (SAME → auto_pad SAME_UPPER, VALID → zeros, EXPLICIT → pads). ONNX Runtime has no auto_pad
   * with dilation, so a dilated SAME conv gets TF's SAME pads written out (which needs the input size).
   */
  const padding = (n: GraphNode, attrs: Record<string, Attr>, xs: (number | null)[], k: number[], s: number[], d = [1, 1]): { h: 'same' | [number, number]; w: 'same' | [number, number] } => {
    const p = str(n, 'padding');
    if (p === 'SAME') {
      if (d[0] === 1 && d[1] === 1) {
        attrs.auto_pad = 'SAME_UPPER';
        return { h: 'same', w: 'same' };
      }
      const same = (size: number | null, i: number): [number, number] => {
        if (size === null) fail(file, `${where(n)}: SAME padding with dilation needs a known input size`);
        const total = Math.max((Math.ceil(size / s[i]!) - 1) * s[i]! + (k[i]! - 1) * d[i]! + 1 - size, 0);
        return [Math.floor(total / 2), total - Math.floor(total / 2)];
      };
      const [h, w] = [same(xs[1]!, 0), same(xs[2]!, 1)];
      attrs.pads = [h[0], w[0], h[1], w[1]];
      return { h, w };
    }
    if (p === 'VALID') {
      attrs.pads = [0, 0, 0, 0];
      return { h: [0, 0], w: [0, 0] };
    }
    if (p === 'EXPLICIT') {
      const e = ints(n, 'explicit_paddings');
      if (e.length !== 8 || e[0] || e[1] || e[6] || e[7]) fail(file, `${where(n)}: explicit_paddings [${e}] not supported`);
      attrs.pads = [e[2]!, e[4]!, e[3]!, e[5]!];
      return { h: [e[2]!, e[3]!], w: [e[4]!, e[5]!] };
    }
    fail(file, `${where(n)}: padding '${p}' not supported`);
  };

  const activation = (n: GraphNode, kind: string, x: T, out: string, alpha?: T): T => {
    const xn = data(x, `${n.name}/x`);
    switch (kind) {
      case 'Relu':
        return { ...x, name: b.node('Relu', [xn], out) };
      case 'Relu6':
        return { ...x, name: clip(xn, 0, 6, out) };
      case 'Elu':
        return { ...x, name: b.node('Elu', [xn], out, { alpha: { f: 1 } }) };
      case 'LeakyRelu':
        return { ...x, name: b.node('LeakyRelu', [xn], out, { alpha: { f: flt(n, n.op === 'LeakyRelu' ? 'alpha' : 'leakyrelu_alpha', 0.2) } }) };
      case 'Sigmoid':
        return { ...x, name: b.node('Sigmoid', [xn], out) };
      case 'Tanh':
        return { ...x, name: b.node('Tanh', [xn], out) };
      case 'Prelu': {
        if (!alpha) fail(file, `${where(n)}: Prelu without its alpha`);
        return elementwise(n, 'PRelu', [{ ...x, name: xn }, alpha], out);
      }
      default:
        fail(file, `${where(n)}: fused activation ${kind} not supported`);
    }
  };

  // ---- the graph ----------------------------------------------------------------------------------------------
  let inputT: { node: GraphNode; dims: (number | string)[] } | undefined;
  let pooled: T | undefined;
  const softmaxInput = new Map<string, T>();

  for (const n of order) {
    const out = outName(n);
    let y: T;
    switch (n.op) {
      case 'Placeholder':
      case 'PlaceholderWithDefault': {
        if (inputT) fail(file, `${where(n)}: a second input (the first is '${inputT.node.name}'); only one image input is supported`);
        const t = attr(n, 'dtype')?.type ?? 'DT_FLOAT';
        if (t !== 'DT_FLOAT') fail(file, `${where(n)}: input type ${t} is not supported (only float images)`);
        const dims = (attr(n, 'shape')?.shape?.dim ?? []).map((d) => Number(d.size ?? -1));
        if (dims.length !== 4 || (dims[3] !== 3 && dims[3] !== -1)) fail(file, `${where(n)}: input shape [${dims.join(', ')}] is not an image batch [N, H, W, 3]`);
        const known = (d: number) => (d > 0 ? d : null);
        const ph = known(dims[1]!);
        const pw = known(dims[2]!);
        const onnxDims = ['batch', 3, ph ?? 'height', pw ?? 'width'];
        inputT = { node: n, dims: onnxDims };
        y = { name: b.input('input', onnxDims), shape: [null, ph, pw, 3] };
        break;
      }
      case 'Const': {
        const v = weights.get(n.name) ?? (attr(n, 'value')?.tensor ? inlineTensor(attr(n, 'value')!.tensor!, file, where(n)) : fail(file, `${where(n)}: no value (not in the weights manifest)`));
        y = { shape: v.shape, konst: v, cname: n.name };
        break;
      }
      case 'Identity':
      case 'StopGradient':
      case 'Snapshot':
        y = input(n, 0);
        break;
      case 'NoOp':
        continue;
      case 'Conv2D':
      case '_FusedConv2D':
        y = conv(n, false, out);
        break;
      case 'DepthwiseConv2dNative':
      case 'FusedDepthwiseConv2dNative':
        y = conv(n, true, out);
        break;
      case 'BiasAdd': {
        nhwcOnly(n);
        y = elementwise(n, 'Add', [input(n, 0), input(n, 1)], out);
        break;
      }
      case 'FusedBatchNorm':
      case 'FusedBatchNormV2':
      case 'FusedBatchNormV3': {
        nhwcOnly(n);
        if (bool(n, 'is_training')) fail(file, `${where(n)}: batch norm in training mode is not supported`);
        const x = input(n, 0);
        if (x.shape.length !== 4) fail(file, `${where(n)}: input is ${x.shape.length}-D, expected 4-D`);
        const ps = [1, 2, 3, 4].map((i) => constOf(n, i, ['scale', 'offset', 'mean', 'variance'][i - 1]!));
        const ch = count(ps[0]!.shape);
        const bnIn = [data(x, n.name), ...ps.map((p, i) => b.floats(b.fresh(`${n.name}/p${i}`), [ch], p.data))];
        y = { name: b.node('BatchNormalization', bnIn, out, { epsilon: { f: flt(n, 'epsilon', 1e-4) } }), shape: x.shape };
        break;
      }
      case 'Add':
      case 'AddV2':
        y = elementwise(n, 'Add', [input(n, 0), input(n, 1)], out, (p, q) => p + q);
        break;
      case 'Sub':
        y = elementwise(n, 'Sub', [input(n, 0), input(n, 1)], out, (p, q) => p - q);
        break;
      case 'Mul':
        y = elementwise(n, 'Mul', [input(n, 0), input(n, 1)], out, (p, q) => p * q);
        break;
      case 'RealDiv':
      case 'Div':
        y = elementwise(n, 'Div', [input(n, 0), input(n, 1)], out, (p, q) => p / q);
        break;
      case 'Maximum':
        y = elementwise(n, 'Max', [input(n, 0), input(n, 1)], out, Math.max);
        break;
      case 'Minimum':
        y = elementwise(n, 'Min', [input(n, 0), input(n, 1)], out, Math.min);
        break;
      case 'AddN':
        y = elementwise(n, 'Sum', dataInputs(n).map((_, i) => input(n, i)), out);
        break;
      case 'Relu':
      case 'Relu6':
      case 'Elu':
      case 'LeakyRelu':
      case 'Sigmoid':
      case 'Tanh':
        y = activation(n, n.op, input(n, 0), out);
        break;
      case 'Prelu':
        y = activation(n, 'Prelu', input(n, 0), out, input(n, 1));
        break;
      case 'Neg':
      case 'Sqrt':
      case 'Exp': {
        const x = input(n, 0);
        y = { shape: x.shape, name: b.node(n.op, [data(x, n.name)], out) };
        break;
      }
      case 'Rsqrt': {
        const x = input(n, 0);
        y = { shape: x.shape, name: b.node('Reciprocal', [b.node('Sqrt', [data(x, n.name)], b.fresh(`${n.name}_sqrt`))], out) };
        break;
      }
      case 'Square': {
        const x = input(n, 0);
        const xn = data(x, n.name);
        y = { shape: x.shape, name: b.node('Mul', [xn, xn], out) };
        break;
      }
      case 'Softmax': {
        const x = input(n, 0);
        const axis = x.shape.length === 4 ? 1 : x.shape.length - 1;
        y = { shape: x.shape, name: b.node('Softmax', [data(x, n.name)], out, { axis }) };
        softmaxInput.set(y.name!, x);
        break;
      }
      case 'AvgPool':
      case 'MaxPool': {
        nhwcOnly(n);
        const x = input(n, 0);
        if (x.shape.length !== 4) fail(file, `${where(n)}: input is ${x.shape.length}-D, expected 4-D`);
        const k = ints(n, 'ksize');
        const s = ints(n, 'strides');
        if (k.length !== 4 || k[0] !== 1 || k[3] !== 1 || s.length !== 4 || s[0] !== 1 || s[3] !== 1) fail(file, `${where(n)}: ksize [${k}] / strides [${s}] not supported`);
        const attrs: Record<string, Attr> = { kernel_shape: [k[1]!, k[2]!], strides: [s[1]!, s[2]!] };
        const pad = padding(n, attrs, x.shape, [k[1]!, k[2]!], [s[1]!, s[2]!]);
        const shape = [x.shape[0]!, convDim(x.shape[1]!, k[1]!, s[1]!, 1, pad.h), convDim(x.shape[2]!, k[2]!, s[2]!, 1, pad.w), x.shape[3]!];
        y = { shape, name: b.node(n.op === 'AvgPool' ? 'AveragePool' : 'MaxPool', [data(x, n.name)], out, attrs) };
        // A window covering the whole map is a global pooling: its output is the feature vector.
        if (pad.h !== 'same' && x.shape[1] === k[1] && x.shape[2] === k[2]) y.pooled = true;
        break;
      }
      case 'Mean':
      case 'Max': {
        const x = input(n, 0);
        const axes = normAxes([...constOf(n, 1, 'axes').data], x.shape.length, n);
        const keep = bool(n, 'keep_dims');
        const op = n.op === 'Mean' ? 'ReduceMean' : 'ReduceMax';
        const shape = keep ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
        const reduce = (xn: string, ax: number[], kd: boolean, o: string) => b.node(op, [xn], o, { axes: ax, keepdims: kd ? 1 : 0 });
        const name = x.shape.length === 4 ? dropAxes4d(x, axes, keep, out, reduce) : reduce(data(x, n.name), axes, keep, out);
        y = { shape, name, pooled: x.shape.length === 4 && axes.join() === '1,2' };
        break;
      }
      case 'Squeeze': {
        const x = input(n, 0);
        let axes = ints(n, 'squeeze_dims', []);
        if (!axes.length) axes = ints(n, 'axis', []);
        if (!axes.length) {
          if (x.shape.some((d) => d === null)) fail(file, `${where(n)}: squeezing every size-1 dimension of a tensor of unknown shape is not supported`);
          axes = x.shape.flatMap((d, i) => (d === 1 ? [i] : []));
        }
        axes = normAxes(axes, x.shape.length, n);
        if (axes.some((a) => x.shape[a] !== 1 && x.shape[a] !== null)) fail(file, `${where(n)}: squeezes a dimension that is not 1`);
        const shape = x.shape.filter((_, i) => !axes.includes(i));
        const squeeze = (xn: string, ax: number[], _kd: boolean, o: string) => b.node('Squeeze', [xn, b.ints(b.fresh('axes'), ax)], o);
        const name = x.konst ? undefined : x.shape.length === 4 ? dropAxes4d(x, axes, false, out, squeeze) : squeeze(x.name!, axes, false, out);
        y = name ? { shape, name, pooled: x.pooled } : { shape, konst: { ...x.konst!, shape: shape as number[] } };
        break;
      }
      case 'Reshape': {
        const x = input(n, 0);
        const target = [...constOf(n, 1, 'shape').data];
        if (target.some((d) => d === 0 || d < -1) || target.filter((d) => d === -1).length > 1) fail(file, `${where(n)}: shape [${target}] not supported`);
        // A batch of 1 written into the graph stays the free batch dimension.
        if (target[0] === 1 && x.shape[0] === null && !target.includes(-1)) target[0] = -1;
        const known = x.shape.every((d) => d !== null) ? count(x.shape as number[]) : undefined;
        const rest = count(target.filter((d) => d !== -1));
        const shape = target.map((d) => (d !== -1 ? d : known !== undefined ? known / rest : null));
        if (x.konst) {
          const kshape = shape.map((d) => (d === null ? count(x.konst!.shape) / rest : d));
          if (count(kshape) !== count(x.konst.shape) || !kshape.every(Number.isInteger)) fail(file, `${where(n)}: cannot reshape a constant of shape [${x.konst.shape}] to [${target}]`);
          y = { shape: kshape, konst: { ...x.konst, shape: kshape } };
          break;
        }
        const reshaped = b.node('Reshape', [toNhwc(x, n.name), b.ints(uniq(`${n.name}/shape`), target)], shape.length === 4 ? b.fresh(n.name) : out);
        y = { shape, name: shape.length === 4 ? toNchw(reshaped, 4, out) : reshaped, pooled: x.pooled && shape.length === 2 };
        break;
      }
      case 'Pad':
      case 'PadV2': {
        const x = input(n, 0);
        const p = constOf(n, 1, 'paddings');
        const r = x.shape.length;
        if (p.shape.join() !== `${r},2`) fail(file, `${where(n)}: paddings of shape [${p.shape}] for a ${r}-D input`);
        const tfAxisOf = r === 4 ? TO_NCHW : [...Array(r).keys()]; // ONNX axis j is TF axis tfAxisOf[j]
        const pads = [...tfAxisOf.map((a) => p.data[2 * a]!), ...tfAxisOf.map((a) => p.data[2 * a + 1]!)];
        const padIn = [data(x, n.name), b.ints(b.fresh(`${n.name}/pads`), pads)];
        if (n.op === 'PadV2') padIn.push(b.floats(b.fresh(`${n.name}/value`), [], new Float32Array([constOf(n, 2, 'constant value').data[0] ?? 0])));
        const shape = x.shape.map((d, i) => (d === null ? null : d + p.data[2 * i]! + p.data[2 * i + 1]!));
        y = { shape, name: b.node('Pad', padIn, out, { mode: 'constant' }) };
        break;
      }
      case 'ConcatV2': {
        const k = dataInputs(n).length - 1;
        const ins = [...Array(k).keys()].map((i) => input(n, i));
        const r = ins[0]!.shape.length;
        const [axis] = normAxes([constOf(n, k, 'axis').data[0]!], r, n);
        const shape = ins[0]!.shape.map((d, i) => (i === axis ? ins.reduce<number | null>((a, t) => (a === null || t.shape[i] === null ? null : a + t.shape[i]!), 0) : d));
        y = { shape, name: b.node('Concat', ins.map((t, i) => data(t, `${n.name}/in${i}`)), out, { axis: r === 4 ? NCHW_OF_NHWC[axis!]! : axis! }) };
        break;
      }
      case 'MatMul':
      case '_FusedMatMul': {
        const a = input(n, 0);
        const w = input(n, 1);
        if (a.shape.length !== 2 || w.shape.length !== 2) fail(file, `${where(n)}: only 2-D matrix products are supported`);
        const ta = bool(n, 'transpose_a');
        const tb = bool(n, 'transpose_b');
        const mOut = w.shape[tb ? 0 : 1]!;
        const shape = [a.shape[ta ? 1 : 0]!, mOut];
        let fused = n.op === '_FusedMatMul' ? strs(n, 'fused_ops') : [];
        const gemmIn = [data(a, `${n.name}/a`), data(w, `${n.name}/b`)];
        let arg = 2;
        if (fused[0] === 'BiasAdd') {
          gemmIn.push(data(input(n, arg++), `${n.name}/bias`));
          fused = fused.slice(1);
        }
        if (fused.length > 1) fail(file, `${where(n)}: fused ops [${strs(n, 'fused_ops').join(', ')}] not supported`);
        const attrs: Record<string, Attr> = { transA: ta ? 1 : 0, transB: tb ? 1 : 0 };
        let name = b.node('Gemm', gemmIn, fused.length ? b.fresh(n.name) : out, attrs);
        if (fused.length) name = activation(n, fused[0]!, { name, shape }, out, fused[0] === 'Prelu' ? input(n, arg++) : undefined).name!;
        y = { shape, name };
        break;
      }
      default:
        fail(file, `${where(n)} is not supported by the TF.js graph importer`);
    }
    if (y.pooled) pooled = y;
    values.set(n.name, y);
  }
  if (!inputT) fail(file, 'graph has no input (Placeholder)');

  // ---- outputs ------------------------------------------------------------------------------------------------
  const dimsOf = (t: T): (number | string)[] => {
    const d = t.shape.length === 4 ? TO_NCHW.map((p) => t.shape[p]!) : t.shape;
    return d.map((v, i) => (v === null ? (i === 0 ? 'batch' : `d${i}`) : v));
  };
  const flat = (t: T): { name: string; dims: (number | string)[] } => {
    if (t.shape.length === 2) return { name: t.name!, dims: dimsOf(t) };
    const rest = t.shape.slice(1);
    // NCHW flattening is the TF order only when H = W = 1 (a pooled map); otherwise go through NHWC.
    const src = t.shape.length === 4 && !(t.shape[1] === 1 && t.shape[2] === 1) ? toNhwc(t, 'flat') : t.name!;
    return { name: b.node('Flatten', [src], b.fresh('flat'), { axis: 1 }), dims: ['batch', rest.every((d) => d !== null) ? count(rest as number[]) : 'n'] };
  };
  const emit = (src: string, as: string, dims: (number | string)[]) => {
    b.node('Identity', [src], as);
    b.output(as, dims);
  };
  const outs = outRefs.map((o) => {
    const r = ref(o);
    const t = values.get(r.index ? `${r.node}:${r.index}` : r.node) ?? fail(file, `output '${o}' is not computed`);
    if (t.konst) fail(file, `output '${o}' is a constant`);
    return t;
  });
  const main = outs[0]!;
  const rest: T[] = [];
  let features: T | undefined;
  let logits: T | undefined;
  if (main.pooled) features = main;
  else {
    if (pooled) features = pooled;
    const sm = softmaxInput.get(main.name!);
    if (sm && !sm.konst) logits = sm;
    else if (main.shape.length === 2 && pooled) logits = main;
  }
  if (features) {
    const f = flat(features);
    emit(f.name, 'features', f.dims);
  }
  if (logits) {
    const l = flat(logits);
    emit(l.name, 'logits', l.dims);
  }
  for (const t of outs) if (t !== features && t !== logits) rest.push(t);
  rest.forEach((t, k) => emit(t.name!, k === 0 ? 'output' : `output_${k}`, dimsOf(t)));

  const metadata: Record<string, string> = {
    'Image.BitmapPixelFormat': 'Rgb8',
    'Image.ColorSpaceGamma': 'SRGB',
    'Image.NominalPixelRange': 'Normalized_0_1',
    'tfjs.format': 'graph-model',
  };
  if (json.convertedBy) metadata['tfjs.convertedBy'] = String(json.convertedBy);
  if (json.generatedBy) metadata['tfjs.generatedBy'] = String(json.generatedBy);
  return b.build({ producer: 'graft tfjs-graph importer', graphName: basename(dirname(file)) || 'model', metadata });
}

/** Whether `path` (a model.json or its folder) is a TF.js graph model. */
export async function isTfjsGraphModel(path: string): Promise<boolean> {
  try {
    const p = (await stat(path)).isDirectory() ? join(path, 'model.json') : path;
    const j = JSON.parse(await readFile(p, 'utf8'));
    return Boolean(j && j.modelTopology && j.weightsManifest) && (j.format === 'graph-model' || Array.isArray(j.modelTopology.node));
  } catch {
    return false;
  }
}
