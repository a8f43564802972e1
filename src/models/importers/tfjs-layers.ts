import { readFile, realpath, stat } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { GraftError } from '../../errors.js';
import { OnnxBuilder } from './onnx-builder.js';
import { halfToFloat } from '../../util/numeric.js';

/**
 * TF.js layers models (Keras exports) → ONNX. The graph is written NCHW (ONNX convention): the input is [N, 3, H, W]
 * and every 4-D tensor stays NCHW; layers whose meaning depends on the layout (Flatten, Reshape, Dense after them,
 * channel axes) are translated. Outputs: `features` (the global pooling output, when there is one), `logits` (the
 * input of a final softmax, flattened to [N, classes]) and the model's own last output.
 */

interface KerasLayer {
  class_name: string;
  name?: string;
  config: Record<string, unknown> & { name: string };
  inbound_nodes: unknown[];
}

interface WeightSpec { name: string; shape: number[]; dtype: string; quantization?: { dtype: string; scale?: number; min?: number } }
interface ModelJson {
  modelTopology: { model_config?: { class_name: string; config: unknown }; class_name?: string; config?: unknown };
  weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
  format?: string;
}

/** A tensor in the graph being built: its ONNX name and rank (4-D tensors are NCHW). */
interface T { name: string; rank: number; channels?: number }

function fail(file: string, msg: string): never {
  throw new GraftError(`${file}: ${msg}`);
}

/** Read every weight of the manifest, refusing shard paths that leave the model folder and shards of the wrong size. */
export async function readTfjsWeights(modelJsonPath: string, manifest: ModelJson['weightsManifest']): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const folder = await realpath(dirname(modelJsonPath));
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const group of manifest) {
    const chunks: Buffer[] = [];
    for (const p of group.paths) {
      const full = resolve(folder, p);
      if (!full.startsWith(folder + sep)) fail(modelJsonPath, `weight shard path '${p}' leaves the model folder; refused`);
      let real: string;
      try {
        real = await realpath(full);
      } catch {
        fail(modelJsonPath, `weight shard '${p}' is missing`);
      }
      if (!real.startsWith(folder + sep)) fail(modelJsonPath, `weight shard '${p}' links outside the model folder; refused`);
      chunks.push(await readFile(real));
    }
    const buf = Buffer.concat(chunks);
    let off = 0;
    for (const w of group.weights) {
      const count = w.shape.reduce((a, b) => a * b, 1);
      const q = w.quantization;
      const bytesPer = q ? (q.dtype === 'uint8' ? 1 : 2) : w.dtype === 'float32' || w.dtype === 'int32' ? 4 : fail(modelJsonPath, `weight ${w.name}: dtype ${w.dtype} not supported`);
      const len = count * bytesPer;
      if (off + len > buf.length) fail(modelJsonPath, `weight shards of group [${group.paths.join(', ')}] hold ${buf.length} bytes, fewer than the ${off + len} the manifest needs (truncated or wrong shard)`);
      const bytes = buf.subarray(off, off + len);
      let data: Float32Array;
      if (!q) {
        data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + len));
      } else if (q.dtype === 'float16') {
        data = Float32Array.from({ length: count }, (_, i) => halfToFloat(bytes.readUInt16LE(2 * i)));
      } else {
        const read = q.dtype === 'uint8' ? (i: number) => bytes[i]! : (i: number) => bytes.readUInt16LE(2 * i);
        data = Float32Array.from({ length: count }, (_, i) => read(i) * (q.scale ?? 1) + (q.min ?? 0));
      }
      out.set(w.name, { shape: w.shape, data });
      off += len;
    }
    if (off !== buf.length) fail(modelJsonPath, `weight shards of group [${group.paths.join(', ')}] hold ${buf.length} bytes, the manifest describes ${off} (wrong shard?)`);
  }
  return out;
}

/** Transpose a row-major array of `shape` by `perm`. */
function transpose(data: Float32Array, shape: number[], perm: number[]): Float32Array {
  const out = new Float32Array(data.length);
  const newShape = perm.map((p) => shape[p]!);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const idx = new Array(shape.length).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let k = 0; k < perm.length; k++) src += idx[k] * strides[perm[k]!]!;
    out[o] = data[src]!;
    for (let k = perm.length - 1; k >= 0; k--) {
      if (++idx[k] < newShape[k]!) break;
      idx[k] = 0;
    }
  }
  return out;
}

function inboundNames(layer: KerasLayer): string[] {
  const nodes = layer.inbound_nodes as unknown[];
  if (!nodes.length) return [];
  const first = nodes[0];
  // Keras 2 format: [[["name", 0, 0, {}], ...]]; newer: [{args: [{config: {keras_history: ["name", 0, 0]}}]}]
  if (Array.isArray(first)) return (first as unknown[][]).map((e) => String(e[0]));
  const args = (first as { args?: unknown[] }).args ?? [];
  const names: string[] = [];
  const visit = (a: unknown): void => {
    if (Array.isArray(a)) a.forEach(visit);
    else if (a && typeof a === 'object') {
      const hist = (a as { config?: { keras_history?: unknown[] } }).config?.keras_history;
      if (hist) names.push(String(hist[0]));
    }
  };
  visit(args);
  return names;
}

const pair = (v: unknown, d: number): [number, number] => (Array.isArray(v) ? [Number(v[0]), Number(v[1] ?? v[0])] : [Number(v ?? d), Number(v ?? d)]);

/** Import a TF.js layers model (model.json + shards) as ONNX bytes. */
export async function importTfjsLayers(modelJsonPath: string): Promise<Uint8Array> {
  let json: ModelJson;
  try {
    json = JSON.parse(await readFile(modelJsonPath, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') fail(modelJsonPath, 'not found');
    fail(modelJsonPath, `not a TF.js model.json (${(err as Error).message})`);
  }
  const topo = json?.modelTopology;
  const cfg = topo?.model_config ?? topo;
  if (!cfg || !Array.isArray(json.weightsManifest)) fail(modelJsonPath, 'not a TF.js layers model (no modelTopology / weightsManifest)');
  const config = cfg.config as { layers?: KerasLayer[] } | KerasLayer[];
  const layers: KerasLayer[] = Array.isArray(config) ? config : config?.layers ?? fail(modelJsonPath, 'model topology has no layers');
  const sequential = cfg.class_name === 'Sequential';
  const weights = await readTfjsWeights(modelJsonPath, json.weightsManifest);
  const w = (layer: string, short: string, required = true) => {
    const hit = weights.get(`${layer}/${short}`) ?? [...weights.entries()].find(([k]) => k.endsWith(`${layer}/${short}`) || k.endsWith(`${layer}/${short}:0`))?.[1];
    if (!hit && required) fail(modelJsonPath, `weight '${layer}/${short}' not found in the weights manifest`);
    return hit!;
  };

  const b = new OnnxBuilder();
  const tensors = new Map<string, T>();
  let last: T | undefined;
  let features: T | undefined;
  let logits: T | undefined;
  let inputDims: number[] | undefined;

  const act = (x: T, a: string, name: string): T => {
    switch (a) {
      case 'linear':
        return x;
      case 'relu':
        return { ...x, name: b.node('Relu', [x.name], b.fresh(name)) };
      case 'relu6':
        return { ...x, name: b.node('Clip', [x.name, b.floats(b.fresh('zero'), [], new Float32Array([0])), b.floats(b.fresh('six'), [], new Float32Array([6]))], b.fresh(name)) };
      case 'sigmoid':
        return { ...x, name: b.node('Sigmoid', [x.name], b.fresh(name)) };
      case 'hard_sigmoid':
        return { ...x, name: b.node('HardSigmoid', [x.name], b.fresh(name), { alpha: { f: 0.2 }, beta: { f: 0.5 } }) };
      case 'tanh':
        return { ...x, name: b.node('Tanh', [x.name], b.fresh(name)) };
      case 'swish':
      case 'silu':
        return { ...x, name: b.node('Mul', [x.name, b.node('Sigmoid', [x.name], b.fresh(`${name}_sig`))], b.fresh(name)) };
      case 'softmax': {
        // Softmax over channels; the input is what the lesson calls logits.
        const flat = x.rank === 4 ? b.node('Flatten', [x.name], b.fresh(`${name}_flat`), { axis: 1 }) : x.name;
        logits = { name: flat, rank: 2, channels: x.channels };
        return { name: b.node('Softmax', [flat], b.fresh(name), { axis: 1 }), rank: 2, channels: x.channels };
      }
      default:
        fail(modelJsonPath, `layer ${name}: activation '${a}' is not supported`);
    }
  };

  for (let li = 0; li < layers.length; li++) {
    const layer = layers[li]!;
    const c = layer.config;
    const name = c.name ?? layer.name;
    const ins = sequential ? (li === 0 ? [] : [layers[li - 1]!.config.name]) : inboundNames(layer);
    const inputs = ins.map((n) => tensors.get(n) ?? fail(modelJsonPath, `layer ${name}: unknown input layer '${n}'`));
    const x = inputs[0]!;
    let y: T;
    const cls = layer.class_name;
    if (cls === 'InputLayer' || (sequential && li === 0 && !x)) {
      const shape = (c.batch_input_shape ?? c.batch_shape) as (number | null)[];
      if (!shape || shape.length !== 4) fail(modelJsonPath, `layer ${name}: only image inputs [batch, H, W, C] are supported`);
      inputDims = shape.slice(1).map(Number);
      const [h, wd, ch] = inputDims as [number, number, number];
      y = { name: b.input('input', ['batch', ch, h, wd]), rank: 4, channels: ch };
      tensors.set(name, y);
      if (cls === 'InputLayer') {
        last = y;
        continue;
      }
      inputs.push(y);
    }
    const xin = inputs[0] ?? last!;
    switch (cls) {
      case 'Conv2D':
      case 'DepthwiseConv2D': {
        const [sh, sw] = pair(c.strides, 1);
        const [dh, dw] = pair(c.dilation_rate, 1);
        const depthwise = cls === 'DepthwiseConv2D';
        const k = w(name, depthwise ? 'depthwise_kernel' : 'kernel');
        const [kh, kw, cin, cout] = k.shape as [number, number, number, number];
        // Keras [kh, kw, in, out|mult] → ONNX [out, in/group, kh, kw]; depthwise: out channel = in * mult + m.
        const W = depthwise ? transpose(k.data, k.shape, [2, 3, 0, 1]) : transpose(k.data, k.shape, [3, 2, 0, 1]);
        const outC = depthwise ? cin * cout : cout;
        const wName = b.floats(`${name}/kernel`, depthwise ? [outC, 1, kh, kw] : [cout, cin, kh, kw], W);
        const convIn = [xin.name, wName];
        if (c.use_bias !== false) {
          const bias = w(name, 'bias', false);
          if (bias) convIn.push(b.floats(`${name}/bias`, [outC], bias.data));
        }
        const attrs: Record<string, import('./onnx-builder.js').Attr> = { kernel_shape: [kh, kw], strides: [sh, sw], dilations: [dh, dw], group: depthwise ? cin : 1 };
        if (c.padding === 'same') attrs.auto_pad = 'SAME_UPPER';
        else attrs.pads = [0, 0, 0, 0];
        y = { name: b.node('Conv', convIn, b.fresh(name), attrs, name), rank: 4, channels: outC };
        y = act(y, String(c.activation ?? 'linear'), `${name}_act`);
        break;
      }
      case 'Dense': {
        const k = w(name, 'kernel');
        const [din, dout] = k.shape as [number, number];
        const bias = c.use_bias !== false ? w(name, 'bias', false) : undefined;
        const inputs2 = [xin.name, b.floats(`${name}/kernel`, [din, dout], k.data), b.floats(`${name}/bias`, [dout], bias?.data ?? new Float32Array(dout))];
        if (xin.rank !== 2) fail(modelJsonPath, `layer ${name}: Dense on a ${xin.rank}-D input is not supported`);
        y = { name: b.node('Gemm', inputs2, b.fresh(name), {}, name), rank: 2, channels: dout };
        y = act(y, String(c.activation ?? 'linear'), `${name}_act`);
        break;
      }
      case 'BatchNormalization': {
        const ch = xin.channels ?? fail(modelJsonPath, `layer ${name}: unknown channel count`);
        const gamma = c.scale !== false ? w(name, 'gamma').data : new Float32Array(ch).fill(1);
        const beta = c.center !== false ? w(name, 'beta').data : new Float32Array(ch);
        const bn = [xin.name, b.floats(`${name}/gamma`, [ch], gamma), b.floats(`${name}/beta`, [ch], beta), b.floats(`${name}/moving_mean`, [ch], w(name, 'moving_mean').data), b.floats(`${name}/moving_variance`, [ch], w(name, 'moving_variance').data)];
        y = { ...xin, name: b.node('BatchNormalization', bn, b.fresh(name), { epsilon: { f: Number(c.epsilon ?? 1e-3) } }, name) };
        break;
      }
      case 'Activation':
        y = act(xin, String(c.activation), name);
        break;
      case 'ReLU': {
        const max = c.max_value == null ? undefined : Number(c.max_value);
        const slope = Number(c.negative_slope ?? 0);
        if (slope !== 0) y = { ...xin, name: b.node('LeakyRelu', [xin.name], b.fresh(name), { alpha: { f: slope } }) };
        else if (max !== undefined) y = { ...xin, name: b.node('Clip', [xin.name, b.floats(b.fresh('zero'), [], new Float32Array([0])), b.floats(b.fresh('max'), [], new Float32Array([max]))], b.fresh(name)) };
        else y = { ...xin, name: b.node('Relu', [xin.name], b.fresh(name)) };
        break;
      }
      case 'ZeroPadding2D': {
        const p = c.padding as unknown;
        const [[t, bo], [l, r]] = Array.isArray(p) && Array.isArray(p[0]) ? (p as [[number, number], [number, number]]) : [pair(p, 0), pair(p, 0)].map((q) => q) as [[number, number], [number, number]];
        y = { ...xin, name: b.node('Pad', [xin.name, b.ints(b.fresh('pads'), [0, 0, t, l, 0, 0, bo, r])], b.fresh(name)) };
        break;
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const k = pair(c.pool_size, 2);
        const s = pair(c.strides ?? c.pool_size, 2);
        const attrs: Record<string, import('./onnx-builder.js').Attr> = { kernel_shape: k, strides: s };
        if (c.padding === 'same') attrs.auto_pad = 'SAME_UPPER';
        y = { ...xin, name: b.node(cls === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', [xin.name], b.fresh(name), attrs) };
        break;
      }
      case 'GlobalAveragePooling2D':
      case 'GlobalMaxPooling2D': {
        const pooled = b.node(cls === 'GlobalAveragePooling2D' ? 'GlobalAveragePool' : 'GlobalMaxPool', [xin.name], b.fresh(name));
        y = c.keepdims ? { name: pooled, rank: 4, channels: xin.channels } : { name: b.node('Flatten', [pooled], b.fresh(`${name}_flat`), { axis: 1 }), rank: 2, channels: xin.channels };
        features = { name: y.rank === 4 ? b.node('Flatten', [pooled], b.fresh(`${name}_feat`), { axis: 1 }) : y.name, rank: 2, channels: xin.channels };
        break;
      }
      case 'Flatten': {
        // Keras flattens NHWC: go back to that order first so following Dense weights line up.
        const src = xin.rank === 4 ? b.node('Transpose', [xin.name], b.fresh(`${name}_nhwc`), { perm: [0, 2, 3, 1] }) : xin.name;
        y = { name: b.node('Flatten', [src], b.fresh(name), { axis: 1 }), rank: 2 };
        break;
      }
      case 'Reshape': {
        const target = (c.target_shape as number[]).map(Number);
        const src = xin.rank === 4 ? b.node('Transpose', [xin.name], b.fresh(`${name}_nhwc`), { perm: [0, 2, 3, 1] }) : xin.name;
        const reshaped = b.node('Reshape', [src, b.ints(b.fresh('shape'), [0, ...target])], b.fresh(name));
        if (target.length === 3) y = { name: b.node('Transpose', [reshaped], b.fresh(`${name}_nchw`), { perm: [0, 3, 1, 2] }), rank: 4, channels: target[2] };
        else y = { name: reshaped, rank: target.length + 1, channels: target.at(-1) };
        break;
      }
      case 'Dropout':
      case 'SpatialDropout2D':
        y = xin;
        break;
      case 'Add':
      case 'Multiply': {
        let acc = inputs[0]!;
        for (const other of inputs.slice(1)) acc = { ...acc, name: b.node(cls === 'Add' ? 'Add' : 'Mul', [acc.name, other.name], b.fresh(name)) };
        y = acc;
        break;
      }
      case 'Concatenate': {
        const axis = Number(c.axis ?? -1);
        if (x!.rank === 4 && axis !== -1 && axis !== 3) fail(modelJsonPath, `layer ${name}: concatenation on axis ${axis} is not supported`);
        y = { name: b.node('Concat', inputs.map((t) => t.name), b.fresh(name), { axis: x!.rank === 4 ? 1 : axis < 0 ? x!.rank + axis : axis }), rank: x!.rank, channels: inputs.reduce((a, t) => a + (t.channels ?? 0), 0) };
        break;
      }
      case 'Rescaling': {
        const scale = Number(c.scale ?? 1);
        const offset = Number(c.offset ?? 0);
        const mul = b.node('Mul', [xin.name, b.floats(b.fresh('scale'), [], new Float32Array([scale]))], b.fresh(`${name}_mul`));
        y = { ...xin, name: b.node('Add', [mul, b.floats(b.fresh('offset'), [], new Float32Array([offset]))], b.fresh(name)) };
        break;
      }
      case 'Normalization': {
        const ch = xin.channels ?? 1;
        const mean = w(name, 'mean').data;
        const variance = w(name, 'variance').data;
        const dims = xin.rank === 4 ? [1, ch, 1, 1] : [1, ch];
        const sub = b.node('Sub', [xin.name, b.floats(`${name}/mean`, dims, mean)], b.fresh(`${name}_sub`));
        const std = Float32Array.from(variance, (v) => Math.sqrt(Math.max(v, 1e-7)));
        y = { ...xin, name: b.node('Div', [sub, b.floats(`${name}/std`, dims, std)], b.fresh(name)) };
        break;
      }
      default:
        fail(modelJsonPath, `layer ${name}: Keras layer type ${cls} is not supported by the TF.js importer`);
    }
    tensors.set(name, y);
    last = y;
  }
  if (!last || !inputDims) fail(modelJsonPath, 'model has no input layer');
  // Name the outputs the way graft looks for them.
  const named = (t: T, as: string) => b.node('Identity', [t.name], as);
  if (features) {
    named(features, 'features');
    b.output('features', ['batch', features.channels ?? '?']);
  }
  if (logits) {
    named(logits, 'logits');
    b.output('logits', ['batch', logits.channels ?? '?']);
  }
  if (last.rank === 2 && last !== features && last !== logits) {
    named(last, 'output');
    b.output('output', ['batch', last.channels ?? '?']);
  }
  if (!features && !logits && last.rank !== 2) {
    named(last, 'output');
    b.output('output', ['batch', ...(last.rank === 4 ? [last.channels ?? '?', '?', '?'] : [])]);
  }
  return b.build({ producer: 'graft tfjs-layers importer', graphName: modelJsonPath.split(sep).slice(-2, -1)[0] ?? 'model' });
}

export async function isTfjsLayersModel(path: string): Promise<boolean> {
  try {
    const p = (await stat(path)).isDirectory() ? join(path, 'model.json') : path;
    const j = JSON.parse(await readFile(p, 'utf8'));
    return Boolean(j.modelTopology && j.weightsManifest) && j.format !== 'graph-model';
  } catch {
    return false;
  }
}
