/** The parts of a TF.js graph model.json the importer reads, checked as they are read. */
import { fail } from '../fail.js';
import { count } from '../layout.js';
import type { TfjsConst } from '../tfjs-weights.js';

export interface GraphNode {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, AttrValue>;
}
export interface AttrValue {
  i?: string | number;
  f?: number | string;
  b?: boolean;
  s?: string;
  type?: string;
  shape?: { dim?: { size?: string | number }[]; unknownRank?: boolean };
  tensor?: TensorValue;
  list?: { i?: (string | number)[]; f?: (number | string)[]; s?: string[]; type?: string[] };
}
export interface TensorValue {
  dtype?: string;
  tensorShape?: { dim?: { size?: string | number }[] };
  floatVal?: (number | string)[];
  intVal?: (number | string)[];
  int64Val?: (number | string)[];
  boolVal?: boolean[];
  tensorContent?: string;
}
interface WeightEntry { name: string; shape: number[]; dtype: string; quantization?: { dtype?: string; scale?: number; min?: number; original_dtype?: string } }
export interface GraphModelJson {
  format?: string;
  generatedBy?: string;
  convertedBy?: string;
  modelTopology: { node?: GraphNode[]; library?: { function?: unknown[] } };
  weightsManifest: { paths: string[]; weights: WeightEntry[] }[];
  signature?: { inputs?: Record<string, { name?: string }>; outputs?: Record<string, { name?: string }> };
  userDefinedMetadata?: { signature?: GraphModelJson['signature'] };
}

/** A constant written inline in a Const node (`attr.value.tensor`). */
export function inlineTensor(t: TensorValue, file: string, where: string): TfjsConst {
  const shape = (t.tensorShape?.dim ?? []).map((d) => Number(d.size ?? 0));
  if (!shape.every((d) => Number.isInteger(d) && d >= 0)) fail(file, `${where}: bad constant shape [${shape.join(', ')}]`);
  const n = count(shape);
  const dt = t.dtype ?? 'DT_FLOAT';
  const dtype: TfjsConst['dtype'] = dt === 'DT_FLOAT' ? 'float32' : dt === 'DT_INT32' || dt === 'DT_INT64' ? 'int32' : dt === 'DT_BOOL' ? 'bool' : fail(file, `${where}: constant of type ${dt} is not supported`);
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

export function readModelJson(text: string, file: string): GraphModelJson {
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

