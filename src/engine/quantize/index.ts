/**
 * Static int8 quantisation of a float ONNX model, in QDQ form, calibrated on images: fold batch-norm-like ops into
 * the convs (fold.ts), choose what to quantise (plan.ts), calibrate activation ranges (calibrate.ts, ranges.ts),
 * rewrite the graph (qdq.ts), and check the result's outputs against the float model's (cosine similarity).
 */
import onnxProto from 'onnx-proto';
import { GraftError } from '../../errors.js';
import { parseOnnx, type LoadedOnnx } from '../../models/onnx-file.js';
import { OrtModel } from '../ort.js';
import { calibrateRanges, channelMaxima, sampleSize, type CalibrationImages } from './calibrate.js';
import { equalize, equalizablePairs } from './equalize.js';
import { evaluateShapeTensors } from './evaluate.js';
import { foldConstantFlatten, foldConvAffine, foldPadsIntoConv, padsToEvaluate } from './fold.js';
import { finishGraph, GraphIndex } from './graph.js';
import { planQuantization, type FloatNode, type PlanOptions } from './plan.js';
import { rewriteQdq, type ActivationType } from './qdq.js';
import { DEFAULT_METHOD, type CalibrationMethod } from './ranges.js';

const { onnx } = onnxProto;

export { CALIBRATION_METHODS, DEFAULT_METHOD, type CalibrationMethod } from './ranges.js';
export { loadCalibrationFiles, loadCalibrationImages, spreadPick, type CalibrationImages } from './calibrate.js';
export type { ActivationType } from './qdq.js';

export interface QuantizeOptions extends PlanOptions {
  method?: CalibrationMethod;
  percentile?: number;
  activationType?: ActivationType;
  perChannel?: boolean;
  /**
   * Fold zero Pads into the following Conv (default on). Pads computed from the input shape are folded only when the
   * model's input size is fixed.
   */
  foldPads?: boolean;
  /** Weight bias correction from the calibrated input means (default on; see qdq.ts). */
  biasCorrection?: boolean;
  /** Channel range equalisation between consecutive convs (default off: see equalize.ts for why). */
  equalize?: boolean;
  threads?: number;
  signal?: AbortSignal;
}

export interface QuantizeOutcome {
  /** The model to write: quantised, or the float model unchanged when nothing could be quantised. */
  bytes: Uint8Array;
  quantized: boolean;
  /**
   * The float model the quantised one approximates: after folding and equalisation, before QDQ (same function as
   * the input model up to float rounding and, for equalisation, up to clipping beyond the calibrated maxima).
   */
  prepared?: Uint8Array;
  /** Why the model stayed float, when it did. */
  fallback?: string;
  nodes: { node: string; op: string; depthwise: boolean }[];
  float: FloatNode[];
  /** Batch-norm-like ops folded into convs before quantising. */
  folded: number;
  /** Pads folded into the following conv. */
  foldedPads: number;
  removedActivations: number;
  /** Channels rescaled by equalisation. */
  equalizedChannels: number;
  calibratedTensors: number;
  calibrationSeconds: number;
}

/** What the quantised file records about how it was made (deterministic: no times, no paths). */
function stamp(proto: InstanceType<typeof onnx.ModelProto>, value: Record<string, unknown>): void {
  const props = (proto.metadataProps ?? []).filter((p) => p.key !== 'graft.quantization');
  props.push(onnx.StringStringEntryProto.create({ key: 'graft.quantization', value: JSON.stringify(value) }));
  proto.metadataProps = props;
}

/**
 * Quantise `model` with ranges calibrated on `images` (preprocessed as the model is fed). Same model, images and options give
 * byte-identical output. When nothing can be quantised, `bytes` is the float model and `fallback` says why.
 */
export async function quantizeOnnx(model: LoadedOnnx, images: CalibrationImages, opts: QuantizeOptions = {}): Promise<QuantizeOutcome> {
  const method = opts.method ?? DEFAULT_METHOD;
  const proto = onnx.ModelProto.decode(model.bytes);
  const graph = proto.graph!;
  const { folded } = foldConvAffine(graph);
  foldConstantFlatten(graph);
  // Drop the float weights the fold replaced (ORT warns about each unused initializer).
  finishGraph(graph);
  let foldedPads = 0;
  if (opts.foldPads !== false) {
    const computed = padsToEvaluate(graph);
    const values = computed.length ? await evaluateShapeTensors(parseOnnx(onnx.ModelProto.encode(proto).finish(), model.info.path), computed) : new Map<string, number[]>();
    foldedPads = foldPadsIntoConv(graph, values ?? new Map());
    finishGraph(graph);
  }
  const idx = new GraphIndex(graph);
  const plan = planQuantization(idx, model.info.opset, opts);
  const base = { nodes: [], float: plan.float, folded, foldedPads, removedActivations: 0, equalizedChannels: 0, calibratedTensors: 0, calibrationSeconds: 0 };
  if (plan.nodes.length === 0) {
    const why = plan.float.length
      ? `nothing to quantise: ${plan.float.map((f) => `${f.op} ${f.node} (${f.reason})`).join('; ')}`
      : 'nothing to quantise: no Conv, Gemm or MatMul with constant weights';
    return { ...base, bytes: model.bytes, quantized: false, fallback: why };
  }
  if (images.n === 0) throw new GraftError(`${model.info.path}: no readable calibration images`);
  const t0 = performance.now();
  let equalizedChannels = 0;
  if (opts.equalize) {
    // Only pairs whose both convs get quantised: a float conv gains nothing from it.
    const planned = new Set(plan.nodes.map((p) => p.node));
    const pairs = equalizablePairs(idx).filter((p) => planned.has(p.a) && planned.has(p.b));
    const pre = parseOnnx(onnx.ModelProto.encode(proto).finish(), model.info.path);
    const maxima = await channelMaxima(pre, [...new Set(pairs.map((p) => p.end))], images, { threads: opts.threads, signal: opts.signal });
    equalizedChannels = equalize(graph, pairs, maxima);
    finishGraph(graph);
  }
  const foldedModel = parseOnnx(onnx.ModelProto.encode(proto).finish(), model.info.path);
  const { ranges, means } = await calibrateRanges(foldedModel, plan.roots, images, {
    method,
    percentile: opts.percentile,
    threads: opts.threads,
    signal: opts.signal,
  });
  const calibrationSeconds = (performance.now() - t0) / 1000;
  const rw = rewriteQdq(graph, plan, ranges, {
    activationType: opts.activationType ?? 'uint8',
    perChannel: opts.perChannel ?? true,
    ...(opts.biasCorrection !== false && { means }),
  });
  stamp(proto, {
    method,
    ...(method === 'percentile' ? { percentile: opts.percentile ?? 99.99 } : {}),
    images: images.n,
    activations: opts.activationType ?? 'uint8',
    weights: opts.perChannel === false ? 'int8 per-tensor' : 'int8 per-channel',
    biasCorrection: opts.biasCorrection !== false,
    equalizedChannels,
    float: plan.float.map((f) => f.node),
    source: model.info.sha256,
  });
  const bytes = onnx.ModelProto.encode(proto).finish();
  return {
    bytes,
    quantized: true,
    prepared: foldedModel.bytes,
    nodes: rw.quantized,
    float: plan.float,
    folded,
    foldedPads,
    removedActivations: rw.removedActivations,
    equalizedChannels,
    calibratedTensors: plan.roots.length,
    calibrationSeconds,
  };
}

export interface Agreement {
  tensor: string;
  /** Mean and minimum over images of the cosine similarity between float and quantised rows. */
  meanCosine: number;
  minCosine: number;
  /** For class scores: share of images whose top class is the same. */
  top1Agreement?: number;
}

function cosineRows(a: Float32Array, b: Float32Array, n: number): number[] {
  const d = a.length / n;
  return Array.from({ length: n }, (_, i) => {
    let ab = 0, aa = 0, bb = 0;
    for (let j = i * d; j < (i + 1) * d; j++) {
      ab += a[j]! * b[j]!;
      aa += a[j]! * a[j]!;
      bb += b[j]! * b[j]!;
    }
    return aa === 0 && bb === 0 ? 1 : ab / Math.sqrt(aa * bb || 1e-300);
  });
}

function argmaxRows(a: Float32Array, n: number): number[] {
  const d = a.length / n;
  return Array.from({ length: n }, (_, i) => {
    let best = i * d;
    for (let j = i * d; j < (i + 1) * d; j++) if (a[j]! > a[best]!) best = j;
    return best - i * d;
  });
}

/** Compare `tensors` of the float and the quantised model on the images (cosine per image, top-1 for `scores`). */
export async function compareModels(
  float: LoadedOnnx,
  quantised: LoadedOnnx,
  tensors: { name: string; scores?: boolean }[],
  images: CalibrationImages,
  threads?: number,
): Promise<Agreement[]> {
  const names = tensors.map((t) => t.name);
  const per = sampleSize(images);
  const outputs = async (m: LoadedOnnx) => {
    const r = await OrtModel.create(m, names, { threads, parallelism: 'intra-op' });
    const rows = new Map(names.map((t) => [t, [] as Float32Array[]]));
    try {
      for (let s = 0; s < images.n; s += 16) {
        const k = Math.min(16, images.n - s);
        const out = await r.run(images.data.subarray(s * per, (s + k) * per), [k, ...images.shape]);
        for (const t of names) rows.get(t)!.push(out[t]!.data.slice());
      }
    } finally {
      await r.dispose();
    }
    return new Map([...rows].map(([t, parts]) => {
      const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
      let o = 0;
      for (const p of parts) (all.set(p, o), (o += p.length));
      return [t, all];
    }));
  };
  const a = await outputs(float);
  const b = await outputs(quantised);
  return tensors.map(({ name, scores }) => {
    const cos = cosineRows(a.get(name)!, b.get(name)!, images.n);
    const res: Agreement = { tensor: name, meanCosine: cos.reduce((x, y) => x + y, 0) / cos.length, minCosine: Math.min(...cos) };
    if (scores) {
      const ta = argmaxRows(a.get(name)!, images.n);
      const tb = argmaxRows(b.get(name)!, images.n);
      res.top1Agreement = ta.filter((v, i) => v === tb[i]).length / images.n;
    }
    return res;
  });
}
