/**
 * Feature maps: what a CNN's inner layers compute for one image. Forward only, on ONNX Runtime with the graph cut at
 * the chosen tensors (one session, one pass).
 */
import * as ort from 'onnxruntime-node';
import { GraftError } from '../errors.js';
import type { RgbImage } from '../image/decode.js';
import { loadImageAndTensor } from '../image/preprocess.js';
import type { PreprocessSpec } from '../image/spec.js';
import { createSession } from '../engine/ort.js';
import { findTensor, type LoadedOnnx, type NodeInfo, type OnnxInfo } from '../models/onnx-file.js';
import { withOutputs } from '../onnx/cut.js';
import { intsAttr } from '../onnx/proto.js';
import { consumerIndex, producerIndex } from '../onnx/walk.js';
import { resolveModel, type ResolveOptions } from '../models/resolve.js';
import { editDistance } from '../util/numeric.js';

export type MapLayout = 'NCHW' | 'NHWC';
export type ChannelSelection = 'first' | 'strongest';

export interface FeatureMapsOptions {
  /** Node names or tensor names (see `graft layers`). Default: an early, a middle and a late block, picked from the graph. */
  layers?: string[];
  /** Channels to return per layer (default 32; all of them when the layer has fewer). */
  channels?: number;
  /** 'strongest' (default): the channels with the highest mean activation, strongest first. 'first': channels 0..n-1. */
  select?: ChannelSelection;
  /** ONNX Runtime intra-op threads (default: all cores). */
  threads?: number;
  /** Preprocessing overrides (as the model flags give them). */
  preprocess?: ResolveOptions['preprocess'];
  onDownload?: ResolveOptions['onDownload'];
}

export interface ChannelStats { min: number; max: number; mean: number }

export interface LayerStats {
  /** Over the whole tensor (all channels, all positions). */
  min: number;
  max: number;
  mean: number;
  /** Share of values that are exactly 0 (how sparse a ReLU layer is). */
  zeroFraction: number;
  /** Channels whose map is constant (often dead ReLUs). */
  flatChannels: number;
}

export interface LayerMaps {
  /**
   * The name asked for (a node or tensor name; a scope-less node name like `Clip_5` becomes the full `/n/Clip_5`), or
   * the node name when the layer was picked automatically.
   */
  layer: string;
  /** The node producing the tensor and its op ('' when the tensor is a graph input). */
  node: string;
  op: string;
  tensor: string;
  /** As ONNX Runtime returned it, batch first: [1, C, H, W] or [1, H, W, C]. */
  shape: number[];
  layout: MapLayout;
  height: number;
  width: number;
  /** Channels the tensor has in all. */
  channelCount: number;
  /** Why an automatically picked layer was picked. */
  role?: 'early' | 'middle' | 'late';
  /** How the channels were chosen. */
  selection: ChannelSelection;
  /** Indices of the channels returned, in display order. */
  channels: number[];
  /** One height*width map (row-major) per returned channel, raw activations. */
  maps: Float32Array[];
  channelStats: ChannelStats[];
  stats: LayerStats;
}

export interface FeatureMapsResult {
  model: string;
  imagePath: string;
  spec: PreprocessSpec;
  /** The image as the model sees it: resized (and centre-cropped) to the model's input size. */
  image: RgbImage;
  layers: LayerMaps[];
  /** Guesses made about the preprocessing (e.g. no normalisation in the model). */
  warnings: string[];
  /** Wall-clock seconds: model + image loading, session creation, the forward pass. */
  timings: { load: number; session: number; run: number };
}

// ---------------------------------------------------------------------------------------------------------------------
// Running a cut graph

export interface ProbedTensor { data: ort.Tensor['data']; dims: number[]; type: string }

/**
 * Run one input through the graph cut at `tensors` (any inner tensors, any element type) and return them. The cut
 * declares the outputs without a type, so ONNX Runtime infers it (int64 shape arithmetic works as well as float
 * activations). One intra-op session, released before returning.
 */
export async function runCut(
  model: LoadedOnnx,
  tensors: string[],
  input: { data: Float32Array; dims: number[] },
  opts: { threads?: number } = {},
): Promise<{ outputs: Record<string, ProbedTensor>; sessionSeconds: number; runSeconds: number }> {
  const names = [...new Set(tensors)];
  const t0 = performance.now();
  const session = await createSession(withOutputs(model.bytes, names), { where: model.info.path, threads: opts.threads });
  const t1 = performance.now();
  try {
    if (session.inputNames.length !== 1) {
      throw new GraftError(`${model.info.path}: the model has ${session.inputNames.length} inputs (${session.inputNames.join(', ')}); graft feeds models with one image input`);
    }
    let res: ort.InferenceSession.ReturnType;
    try {
      res = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', input.data, input.dims) }, names);
    } catch (err) {
      throw new GraftError(`${model.info.path}: ONNX Runtime failed on an input of shape [${input.dims.join(', ')}]: ${String((err as Error)?.message ?? err).split('\n')[0]}`);
    }
    const outputs: Record<string, ProbedTensor> = {};
    for (const n of names) outputs[n] = { data: res[n]!.data, dims: res[n]!.dims.map(Number), type: res[n]!.type };
    return { outputs, sessionSeconds: (t1 - t0) / 1000, runSeconds: (performance.now() - t1) / 1000 };
  } finally {
    await session.release();
  }
}

/** The input dims for one image of `spec`: [1, 3, H, W] or [1, H, W, 3]. */
export function inputDims(spec: PreprocessSpec): number[] {
  const [h, w] = spec.size;
  return spec.layout === 'NCHW' ? [1, 3, h, w] : [1, h, w, 3];
}

// ---------------------------------------------------------------------------------------------------------------------
// Graph helpers: layouts, candidate layers, names

/** Tensor name → the node producing it (graph inputs and initializers have none). */
function producers(info: OnnxInfo): Map<string, NodeInfo> {
  return new Map([...producerIndex(info.nodes)].map(([t, i]) => [t, info.nodes[i]!]));
}

/** Ops ONNX defines on NCHW tensors: their outputs are NCHW whatever the model's input layout. */
const NCHW_OPS = new Set([
  'Conv', 'ConvTranspose', 'ConvInteger', 'QLinearConv', 'MaxPool', 'AveragePool', 'LpPool', 'GlobalAveragePool', 'GlobalMaxPool',
  'BatchNormalization', 'InstanceNormalization', 'LRN', 'DepthToSpace', 'SpaceToDepth', 'MaxUnpool',
]);
/** Ops whose output has the layout of their (first activation) input. */
const LAYOUT_PRESERVING = new Set([
  'Relu', 'Clip', 'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Celu', 'Sigmoid', 'HardSigmoid', 'HardSwish', 'Tanh', 'Softplus',
  'Softsign', 'Gelu', 'Mish', 'ThresholdedRelu', 'Erf', 'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Sqrt', 'Exp', 'Log', 'Abs', 'Neg',
  'Max', 'Min', 'Sum', 'Mean', 'Pad', 'Dropout', 'Identity', 'Cast', 'Concat', 'Split', 'Slice', 'Resize', 'Upsample',
  'Where', 'Floor', 'Ceil', 'Round', 'Reciprocal', 'QuantizeLinear', 'DequantizeLinear',
]);

/**
 * The layout of an inner 4-D tensor, found by walking back through the graph: outputs of NCHW ops (Conv, pooling,
 * BatchNormalization) are NCHW, Transposes permute the layout they are given, element-wise ops keep it, and the
 * graph input has the model's input layout. Undefined when the walk ends anywhere else.
 */
export function tensorLayout(model: LoadedOnnx, tensor: string, inputLayout: MapLayout): MapLayout | undefined {
  const info = model.info;
  const prod = producerIndex(info.nodes);
  const inputs = new Set(info.inputs.map((i) => i.name));
  const seen = new Set<string>();
  const walk = (t: string, depth: number): string | undefined => {
    if (inputs.has(t)) return inputLayout;
    if (depth > 200 || seen.has(t)) return undefined;
    seen.add(t);
    const p = prod.get(t);
    if (p === undefined) return undefined;
    const node = info.nodes[p]!;
    if (NCHW_OPS.has(node.opType)) return 'NCHW';
    if (node.opType === 'Transpose') {
      const inner = walk(node.inputs[0]!, depth + 1);
      const perm = intsAttr(model.proto.graph!.node![p]!, 'perm') ?? [];
      if (!inner || inner.length !== 4) return undefined;
      // Default perm reverses the axes.
      const order = perm.length === 4 ? perm : [3, 2, 1, 0];
      return order.map((a) => inner[a]).join('');
    }
    if (LAYOUT_PRESERVING.has(node.opType)) {
      // Follow the first input computed from the image (constants and initializers have no producer).
      for (const i of node.inputs) {
        if (i && (inputs.has(i) || (prod.has(i) && info.nodes[prod.get(i)!]!.opType !== 'Constant'))) return walk(i, depth + 1);
      }
    }
    return undefined;
  };
  const l = walk(tensor, 0);
  return l === 'NCHW' || l === 'NHWC' ? l : undefined;
}

const ACTIVATIONS = new Set([
  'Relu', 'Clip', 'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Celu', 'Sigmoid', 'HardSigmoid', 'HardSwish', 'Tanh', 'Softplus',
  'Gelu', 'Mish', 'ThresholdedRelu',
]);
/** Used when a graph has no activation nodes (e.g. fused ones): the outputs of these are the next best thing. */
const FALLBACK_OPS = new Set(['Conv', 'MaxPool', 'AveragePool', 'Add', 'BatchNormalization', 'Concat']);

function isActivation(node: NodeInfo, prod: Map<string, NodeInfo>): boolean {
  if (ACTIVATIONS.has(node.opType)) return true;
  // x * sigmoid(x) (SiLU / swish) and x * hardsigmoid(x) (hard swish) spelled out as two nodes.
  if (node.opType === 'Mul' && node.inputs.length === 2) {
    const [a, b] = node.inputs as [string, string];
    for (const [x, g] of [[a, b], [b, a]] as const) {
      const p = prod.get(g);
      if (p && (p.opType === 'Sigmoid' || p.opType === 'HardSigmoid') && p.inputs[0] === x) return true;
    }
  }
  return false;
}

/**
 * Tensors that may be block outputs, in graph order: the last activation of each chain (Relu -> Clip gives the
 * Clip; x * sigmoid(x) gives the Mul), else (no activations at all) Conv/pool/Add/BatchNormalization outputs.
 */
export function candidateTensors(info: OnnxInfo): { tensor: string; node: NodeInfo }[] {
  const prod = producers(info);
  const cons = consumerIndex(info.nodes);
  const acts = info.nodes.filter((n) => isActivation(n, prod));
  const ends = acts.filter((n) => {
    const users = cons.get(n.outputs[0]!) ?? [];
    return users.length === 0 || !users.every((u) => isActivation(info.nodes[u]!, prod));
  });
  const picked = ends.length ? ends : info.nodes.filter((n) => FALLBACK_OPS.has(n.opType));
  return picked.filter((n) => n.outputs[0]).map((node) => ({ tensor: node.outputs[0]!, node }));
}

interface Sized { tensor: string; node: NodeInfo; index: number; h: number; w: number }

/**
 * An early, a middle and a late block among 4-D candidates (graph order): late is the last one (the end of the last
 * stage, before global pooling); early is the end of the first downsampled stage (stride ~2); middle is the end of the
 * stage whose stride is the geometric mean of the other two (e.g. 112x112 -> 28x28 -> 7x7 on a 224 MobileNet).
 * Falls back to evenly spaced candidates when the graph has fewer resolutions.
 */
export function pickDefaultLayers(cands: Sized[], inputSize: [number, number]): { c: Sized; role: 'early' | 'middle' | 'late' }[] {
  if (!cands.length) return [];
  const inArea = inputSize[0] * inputSize[1];
  const stride = (c: Sized) => Math.sqrt(inArea / (c.h * c.w));
  const key = (c: Sized) => `${c.h}x${c.w}`;
  const lastIdx = cands.length - 1;
  const late = cands[lastIdx]!;
  const before = cands.slice(0, lastIdx);
  const down = before.filter((c) => stride(c) >= 1.5 && key(c) !== key(late));
  let early: Sized;
  if (down.length) {
    const biggest = down.reduce((a, c) => (c.h * c.w > a.h * a.w ? c : a));
    early = down.filter((c) => key(c) === key(biggest)).at(-1)!;
  } else {
    early = cands[0]!;
  }
  if (early === late) return [{ c: late, role: 'late' }];
  const out: { c: Sized; role: 'early' | 'middle' | 'late' }[] = [{ c: early, role: 'early' }];
  const ei = cands.indexOf(early);
  const between = cands.slice(ei + 1, lastIdx).filter((c) => key(c) !== key(early) && key(c) !== key(late));
  if (between.length) {
    const target = (Math.log(stride(early)) + Math.log(stride(late))) / 2;
    const best = between.reduce((a, c) => (Math.abs(Math.log(stride(c)) - target) < Math.abs(Math.log(stride(a)) - target) ? c : a));
    out.push({ c: between.filter((c) => key(c) === key(best)).at(-1)!, role: 'middle' });
  } else if (lastIdx - ei > 1) {
    out.push({ c: cands[Math.round((ei + lastIdx) / 2)]!, role: 'middle' });
  }
  out.push({ c: late, role: 'late' });
  return out.sort((a, b) => a.c.index - b.c.index);
}

/** `names` ordered by closeness to `wanted`: substring matches first, then by edit distance (also to the last path part). */
export function closeMatches(wanted: string, names: string[]): string[] {
  const w = wanted.toLowerCase();
  const score = (name: string) => {
    const n = name.toLowerCase();
    const tail = n.slice(n.lastIndexOf('/') + 1);
    if (n === w) return -4;
    if (tail === w) return -3;
    if (n.includes(w)) return -2 + n.length / 1e4;
    if (tail.length >= 3 && w.includes(tail)) return -1 + (w.length - tail.length) / 1e2;
    return Math.min(editDistance(w, n), editDistance(w, tail)) / Math.max(1, w.length);
  };
  return names
    .map((name, i) => ({ name, s: score(name), i }))
    .sort((a, b) => a.s - b.s || a.i - b.i)
    .map((x) => x.name);
}

/** Ops that only move constants or shapes around (as `graft layers` filters them). */
const PLUMBING = new Set(['Constant', 'Shape', 'Gather', 'Unsqueeze', 'Squeeze', 'Concat', 'Reshape', 'Cast', 'Identity', 'ConstantOfShape', 'Range', 'Slice']);

/** The one node whose name ends in `/<wanted>` (exporters prefix scopes: `Clip_5` for `/n/Clip_5`), if exactly one does. */
function uniqueByLastPart(info: OnnxInfo, wanted: string): string | undefined {
  if (wanted.includes('/')) return undefined;
  const hits = info.nodes.filter((n) => n.name.endsWith(`/${wanted}`));
  return hits.length === 1 ? hits[0]!.name : undefined;
}

function unknownLayer(info: OnnxInfo, wanted: string, source: string): GraftError {
  const valid = info.nodes.filter((n) => !PLUMBING.has(n.opType)).map((n) => n.name);
  const close = closeMatches(wanted, valid);
  const shown = close.slice(0, 10);
  const more = close.length - shown.length;
  return new GraftError(
    `layer '${wanted}' not found in ${info.path}; valid layers, closest first: ${shown.join(', ')}` +
      (more > 0 ? ` (and ${more} more)` : '') +
      `; 'graft layers ${source}' lists them with their shapes`,
  );
}

// ---------------------------------------------------------------------------------------------------------------------
// The image as the model sees it

// ---------------------------------------------------------------------------------------------------------------------
// Maps

function layerMaps(
  t: ProbedTensor,
  meta: { layer: string; node: string; op: string; tensor: string; layout: MapLayout; role?: LayerMaps['role'] },
  count: number,
  select: ChannelSelection,
): LayerMaps {
  const [, a, b, c] = t.dims as [number, number, number, number];
  const nchw = meta.layout === 'NCHW';
  const C = nchw ? a : c;
  const h = nchw ? b : a;
  const w = nchw ? c : b;
  const hw = h * w;
  const data = t.data as Float32Array;
  const at = nchw ? (ch: number, p: number) => data[ch * hw + p]! : (ch: number, p: number) => data[p * C + ch]!;
  const cs: ChannelStats[] = [];
  let zeros = 0;
  let flat = 0;
  for (let ch = 0; ch < C; ch++) {
    let min = Infinity, max = -Infinity, sum = 0;
    for (let p = 0; p < hw; p++) {
      const v = at(ch, p);
      if (v < min) min = v;
      if (v > max) max = v;
      if (v === 0) zeros++;
      sum += v;
    }
    if (!(max > min)) flat++;
    cs.push({ min, max, mean: sum / hw });
  }
  const n = Math.min(count, C);
  const order = Array.from({ length: C }, (_, i) => i);
  if (select === 'strongest') order.sort((i, j) => cs[j]!.mean - cs[i]!.mean || i - j);
  const channels = order.slice(0, n);
  const maps = channels.map((ch) => {
    if (nchw) return data.slice(ch * hw, (ch + 1) * hw);
    const m = new Float32Array(hw);
    for (let p = 0; p < hw; p++) m[p] = data[p * C + ch]!;
    return m;
  });
  const total = C * hw;
  return {
    ...meta,
    selection: select,
    shape: t.dims,
    height: h,
    width: w,
    channelCount: C,
    channels,
    maps,
    channelStats: channels.map((ch) => cs[ch]!),
    stats: {
      min: Math.min(...cs.map((s) => s.min)),
      max: Math.max(...cs.map((s) => s.max)),
      mean: cs.reduce((s, x) => s + x.mean, 0) / C,
      zeroFraction: zeros / total,
      flatChannels: flat,
    },
  };
}

function describe(t: ProbedTensor | undefined): string {
  return t ? `a ${t.dims.length}-D ${t.type} tensor [${t.dims.join(', ')}]` : 'no tensor';
}

/**
 * Feature maps of one image at the given layers (default: an early, a middle and a late block). Each layer must
 * give a 4-D float tensor; its layout (NCHW or NHWC) is found from the graph, else taken from the model input.
 */
export async function featureMaps(model: string, imagePath: string, opts: FeatureMapsOptions = {}): Promise<FeatureMapsResult> {
  const count = opts.channels ?? 32;
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`channels must be a whole number >= 1, got ${count}`);
  const select = opts.select ?? 'strongest';
  const t0 = performance.now();
  const ref = await resolveModel(model, { preprocess: opts.preprocess, onDownload: opts.onDownload });
  const info = ref.onnx.info;
  const spec = ref.spec;
  const prod = producers(info);

  // What to run: the layers asked for, or every candidate (to learn their shapes and pick three).
  const asked = (opts.layers ?? []).map((wanted) => {
    const layer = findTensor(info, wanted) ? wanted : uniqueByLastPart(info, wanted);
    const tensor = layer === undefined ? undefined : findTensor(info, layer);
    if (layer === undefined || !tensor) throw unknownLayer(info, wanted, model);
    return { layer, tensor };
  });
  const cands = asked.length ? [] : candidateTensors(info);
  if (!asked.length && !cands.length) throw new GraftError(`${info.path}: found no layers to show; name one with --layer (see 'graft layers ${model}')`);

  const { image, tensor } = await loadImageAndTensor(imagePath, spec);
  const t1 = performance.now();
  const wanted = asked.length ? asked.map((a) => a.tensor) : cands.map((c) => c.tensor);
  const { outputs, sessionSeconds, runSeconds } = await runCut(ref.onnx, wanted, { data: tensor, dims: inputDims(spec) }, { threads: opts.threads });

  const metaOf = (layer: string, t: string, role?: LayerMaps['role']) => {
    const p = prod.get(t);
    return { layer, node: p?.name ?? '', op: p?.opType ?? 'Input', tensor: t, layout: tensorLayout(ref.onnx, t, spec.layout) ?? spec.layout, role };
  };
  let layers: LayerMaps[];
  if (asked.length) {
    layers = asked.map(({ layer, tensor: t }) => {
      const out = outputs[t];
      const node = prod.get(t);
      const what = `layer '${layer}'${node ? ` (${node.opType}${node.name !== layer ? ` ${node.name}` : ''})` : ''}`;
      if (!out || out.dims.length !== 4) {
        throw new GraftError(`${what} gives ${describe(out)}; feature maps need a 4-D tensor (N, C, H, W or N, H, W, C): pick a convolutional layer before the global pooling ('graft layers ${model}' shows the shapes)`);
      }
      if (out.type !== 'float32') throw new GraftError(`${what} gives ${describe(out)}; feature maps need float activations`);
      if (out.dims[0] !== 1) throw new GraftError(`${what} gives ${describe(out)}, which does not have the image's batch of 1 (not an activation of the image)`);
      return layerMaps(out, metaOf(layer, t), count, select);
    });
  } else {
    const sized: Sized[] = [];
    cands.forEach((c, index) => {
      const out = outputs[c.tensor];
      if (!out || out.dims.length !== 4 || out.type !== 'float32' || out.dims[0] !== 1) return;
      const layout = tensorLayout(ref.onnx, c.tensor, spec.layout) ?? spec.layout;
      const [h, w] = layout === 'NCHW' ? [out.dims[2]!, out.dims[3]!] : [out.dims[1]!, out.dims[2]!];
      if (h * w > 1) sized.push({ tensor: c.tensor, node: c.node, index, h, w });
    });
    if (!sized.length) throw new GraftError(`${info.path}: no layer gives 4-D feature maps with a spatial size above 1x1; name one with --layer (see 'graft layers ${model}')`);
    layers = pickDefaultLayers(sized, spec.size).map(({ c, role }) => layerMaps(outputs[c.tensor]!, metaOf(c.node.name, c.tensor, role), count, select));
  }
  return {
    model: info.path,
    imagePath,
    spec,
    image,
    layers,
    warnings: ref.warnings,
    timings: { load: (t1 - t0) / 1000, session: sessionSeconds, run: runSeconds },
  };
}
