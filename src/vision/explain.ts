/**
 * Why did a photo get its label: class activation maps (Grad-CAM, Grad-CAM++, Score-CAM, EigenCAM) over a layer of
 * the classifier, drawn on the photo in its own pixel grid, and checked the way the field checks them: deletion and
 * insertion curves (remove or reveal pixels most-relevant first) against a random order.
 *
 * The gradient of the class score with respect to an inner tensor A comes from the gradient engine: the graph gets
 * a zero-valued input added to A (A' = A + probe), and the gradient with respect to that input is dScore/dA.
 */
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { GradientProgram } from '../engine/grad/program.js';
import { PIXEL_LOGITS, PIXELS, withPixelInput } from '../engine/grad/pixels.js';
import { createSession } from '../engine/ort.js';
import { GraftError, UsageError } from '../errors.js';
import type { RgbImage } from '../image/decode.js';
import { centreCropPixels, resizePixels } from '../image/preprocess.js';
import { findTensor, parseOnnx } from '../models/onnx-file.js';
import { valueInfo } from '../onnx/build.js';
import { mulberry32 } from '../util/random.js';
import { roundHalfEven } from '../util/numeric.js';
import { eigenCam, gradCam, gradCamPlusPlus, normaliseMap, type CamMethod, type LayerMaps } from './cam.js';
import { classifierGraph, type ClassifierGraph } from './classifier.js';
import { candidateTensors, runCut, tensorLayout } from './featuremaps.js';

const { onnx } = onnxProto;
const PROBE = 'cam/probe';
const WEIGHTS = 'cam/w';

/** Where the model's input picture sits in the photo: input pixel u ↔ photo x = (u + left + 0.5) / sx − 0.5. */
export interface Geometry { sx: number; sy: number; left: number; top: number; width: number; height: number }

export interface Explanation {
  /** The class explained and the classifier's probability for it. */
  classIndex: number;
  label: string;
  probability: number;
  /** Normalised map over the model's input picture [H*W], in [0, 1]. */
  inputMap: Float32Array;
  /** The layer's grid size. */
  grid: { h: number; w: number };
  /** The model's input picture (what the network saw). */
  input: RgbImage;
  geometry: Geometry;
}

export interface Explainer {
  readonly layer: string;
  readonly classes: string[];
  readonly spec: ClassifierGraph['spec'];
  explain(photo: RgbImage, opts: { method: CamMethod; classIndex?: number }): Promise<Explanation>;
  /** Class probabilities of model-input pictures [n, H, W, 3] in [0, 1] (batched forward). */
  probabilities(pixels: Float32Array, n: number): Promise<Float32Array>;
  dispose(): Promise<void>;
}

/** The graph with `tensor` replaced, for its readers, by tensor + a new zero input (whose gradient is dScore/dtensor). */
function withProbe(bytes: Uint8Array, tensor: string, dims: number[]): Uint8Array {
  const m = onnx.ModelProto.decode(bytes);
  const g = m.graph!;
  const probed = `${tensor}__probed`;
  for (const n of g.node ?? []) n.input = (n.input ?? []).map((i) => (i === tensor ? probed : i));
  // Right after the node that makes the tensor: nodes stay in topological order.
  const at = (g.node ?? []).findIndex((n) => (n.output ?? []).includes(tensor));
  g.node!.splice(at + 1, 0, onnx.NodeProto.create({ name: 'cam/add_probe', opType: 'Add', input: [tensor, PROBE], output: [probed] }));
  g.input!.push(valueInfo(PROBE, ['N', ...dims.slice(1)]));
  g.output!.push(valueInfo(tensor));
  return onnx.ModelProto.encode(m).finish();
}

function softmax(v: Float32Array, probabilities: boolean): Float32Array {
  // A graph that ends in Softmax gave log-probabilities (withPixelInput): softmax of those is the probabilities.
  void probabilities;
  let max = -Infinity;
  for (const x of v) max = Math.max(max, x);
  const e = v.map((x) => Math.exp(x - max));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

/** A layer's maps as channels-first arrays. */
function toChannelsFirst(data: Float32Array, dims: number[], layout: 'NCHW' | 'NHWC'): { k: number; h: number; w: number; data: Float32Array } {
  if (layout === 'NCHW') return { k: dims[1]!, h: dims[2]!, w: dims[3]!, data };
  const [h, w, k] = [dims[1]!, dims[2]!, dims[3]!];
  const out = new Float32Array(data.length);
  for (let i = 0; i < h * w; i++) for (let c = 0; c < k; c++) out[c * h * w + i] = data[i * k + c]!;
  return { k, h, w, data: out };
}

/** The value of an [h, w] map at continuous cell coordinates (u, v), bilinear, clamped to the edges. */
function sampleAt(map: Float32Array, h: number, w: number, u: number, v: number): number {
  const y = Math.min(Math.max(v, 0), h - 1);
  const x = Math.min(Math.max(u, 0), w - 1);
  const y0 = Math.floor(y);
  const x0 = Math.floor(x);
  const y1 = Math.min(y0 + 1, h - 1);
  const x1 = Math.min(x0 + 1, w - 1);
  const fy = y - y0;
  const fx = x - x0;
  const top = map[y0 * w + x0]! * (1 - fx) + map[y0 * w + x1]! * fx;
  const bot = map[y1 * w + x0]! * (1 - fx) + map[y1 * w + x1]! * fx;
  return top * (1 - fy) + bot * fy;
}

/** Bilinear upsampling of an [h, w] map to [H, W] (half-pixel centres, edges clamped). */
export function upsample(map: Float32Array, h: number, w: number, H: number, W: number): Float32Array {
  const out = new Float32Array(H * W);
  for (let y = 0; y < H; y++) {
    const v = (y + 0.5) * (h / H) - 0.5;
    for (let x = 0; x < W; x++) out[y * W + x] = sampleAt(map, h, w, (x + 0.5) * (w / W) - 0.5, v);
  }
  return out;
}

/** The input-grid map drawn in the photo's own pixel grid (what the model did not see, outside a crop, is 0). */
export function mapOnPhoto(inputMap: Float32Array, g: Geometry, photoW: number, photoH: number): Float32Array {
  const out = new Float32Array(photoW * photoH);
  for (let y = 0; y < photoH; y++) {
    const v = (y + 0.5) * g.sy - 0.5 - g.top;
    if (v < -0.5 || v > g.height - 0.5) continue;
    for (let x = 0; x < photoW; x++) {
      const u = (x + 0.5) * g.sx - 0.5 - g.left;
      if (u < -0.5 || u > g.width - 0.5) continue;
      out[y * photoW + x] = sampleAt(inputMap, g.height, g.width, u, v);
    }
  }
  return out;
}

/** Load a classifier (run folder or model) for explanations at `layer` (default: the last spatial map before pooling). */
export async function loadExplainer(target: string, opts: { layer?: string; threads?: number } = {}): Promise<Explainer> {
  const cg = await classifierGraph(target);
  const spec = cg.spec;
  const [H, W] = spec.size;
  const model = parseOnnx(cg.bytes, cg.ref.path);
  const pix = withPixelInput(cg.bytes, spec, { logits: { tensor: cg.logits, probabilities: cg.probabilities } }, target);
  const pixModel = parseOnnx(pix, cg.ref.path);

  // Candidate layers (or the one asked for), their shapes from one forward pass on a grey picture.
  let wanted: string[];
  if (opts.layer !== undefined) {
    const t = findTensor(model.info, opts.layer);
    if (!t) throw new UsageError(`--layer ${opts.layer}: no node or tensor of that name in ${target} (graft layers lists them)`);
    wanted = [t];
  } else {
    wanted = candidateTensors(model.info).map((c) => c.tensor);
  }
  const probe = await runCut(pixModel, wanted, { data: new Float32Array(H * W * 3).fill(0.5), dims: [1, H, W, 3] }, { threads: opts.threads });
  const spatial = wanted
    .map((t) => ({ t, dims: probe.outputs[t]!.dims, layout: tensorLayout(model, t, spec.layout) }))
    .filter((c) => c.dims.length === 4 && c.layout !== undefined && (c.layout === 'NCHW' ? c.dims[2]! * c.dims[3]! : c.dims[1]! * c.dims[2]!) > 1);
  const chosen = spatial.at(-1);
  if (!chosen) {
    throw new GraftError(
      opts.layer !== undefined
        ? `--layer ${opts.layer}: not a spatial feature map (shape [${probe.outputs[wanted[0]!]?.dims.join(', ')}]); choose a convolution's output`
        : `${target}: no spatial feature map found to explain with; give one with --layer`,
    );
  }
  const layer = chosen.t;
  const layout = chosen.layout!;
  const bytes = withProbe(pix, layer, chosen.dims);
  const prog = await GradientProgram.create(bytes, { batch: 1, wrt: [PROBE], loss: [{ kind: 'dot', output: PIXEL_LOGITS, weights: WEIGHTS }], outputs: [layer, PIXEL_LOGITS] }, { threads: opts.threads, where: target });
  const fwd = await createSession(pix, { where: target, threads: opts.threads });
  const C = cg.classes.length;
  const probeZeros = new Float32Array(chosen.dims.slice(1).reduce((a, b) => a * b, 1));

  const probabilities = async (pixels: Float32Array, n: number): Promise<Float32Array> => {
    const out = new Float32Array(n * C);
    const per = H * W * 3;
    for (let s = 0; s < n; s += 32) {
      const m = Math.min(32, n - s);
      const r = await fwd.run({ [PIXELS]: new ort.Tensor('float32', pixels.subarray(s * per, (s + m) * per), [m, H, W, 3]) });
      const logits = r[PIXEL_LOGITS]!.data as Float32Array;
      for (let i = 0; i < m; i++) out.set(softmax(logits.subarray(i * C, (i + 1) * C), cg.probabilities), (s + i) * C);
    }
    return out;
  };

  return {
    layer,
    classes: cg.classes,
    spec,
    probabilities,
    async explain(photo, o) {
      const resized = await resizePixels(photo, spec);
      const input = centreCropPixels(resized, spec);
      const geometry: Geometry = {
        sx: resized.width / photo.width,
        sy: resized.height / photo.height,
        left: resized.width === W ? 0 : roundHalfEven((resized.width - W) / 2),
        top: resized.height === H ? 0 : roundHalfEven((resized.height - H) / 2),
        width: W,
        height: H,
      };
      const x = Float32Array.from(input.data, (v) => v / 255);
      const p0 = await probabilities(x, 1);
      const classIndex = o.classIndex ?? p0.reduce((best, v, i) => (v > p0[best]! ? i : best), 0);
      if (!(classIndex >= 0 && classIndex < C)) throw new UsageError(`class ${classIndex} is out of range (0-${C - 1})`);
      const w = new Float32Array(C);
      w[classIndex] = 1;
      const r = await prog.run({ [PIXELS]: x, [PROBE]: probeZeros, [WEIGHTS]: w });
      const act = toChannelsFirst(r.outputs[layer]!.data, chosen.dims, layout);
      const grad = toChannelsFirst(r.grads[PROBE]!, chosen.dims, layout).data;
      const maps: LayerMaps = { k: act.k, h: act.h, w: act.w, activations: act.data, gradient: grad };
      let cam: Float32Array;
      if (o.method === 'gradcam') cam = gradCam(maps);
      else if (o.method === 'gradcam++') cam = gradCamPlusPlus(maps);
      else if (o.method === 'eigencam') cam = eigenCam(maps);
      else cam = await scoreCam(maps, x, classIndex, probabilities, H, W);
      const inputMap = normaliseMap(upsample(normaliseMap(cam), act.h, act.w, H, W));
      return { classIndex, label: cg.classes[classIndex] ?? String(classIndex), probability: p0[classIndex]!, inputMap, grid: { h: act.h, w: act.w }, input, geometry };
    },
    async dispose() {
      await prog.release();
      await fwd.release();
    },
  };
}

/**
 * Score-CAM (Wang et al.): each channel, upsampled and scaled to [0, 1], masks the picture; the class probability
 * of the masked picture, softmaxed over channels, is the channel's weight. Forward passes only (K of them, batched);
 * channels that are zero everywhere mask everything away and are skipped.
 */
async function scoreCam(m: LayerMaps, x: Float32Array, c: number, probabilities: (p: Float32Array, n: number) => Promise<Float32Array>, H: number, W: number): Promise<Float32Array> {
  const hw = m.h * m.w;
  const live: number[] = [];
  for (let k = 0; k < m.k; k++) {
    let max = 0;
    for (let i = 0; i < hw; i++) max = Math.max(max, m.activations[k * hw + i]!);
    if (max > 0) live.push(k);
  }
  const scores = new Float64Array(m.k).fill(-Infinity);
  const per = H * W * 3;
  for (let s = 0; s < live.length; s += 32) {
    const ks = live.slice(s, s + 32);
    const batch = new Float32Array(ks.length * per);
    ks.forEach((k, j) => {
      const mask = normaliseMap(upsample(normaliseMap(m.activations.slice(k * hw, (k + 1) * hw)), m.h, m.w, H, W));
      for (let i = 0; i < H * W; i++) for (let ch = 0; ch < 3; ch++) batch[j * per + i * 3 + ch] = x[i * 3 + ch]! * mask[i]!;
    });
    const p = await probabilities(batch, ks.length);
    const C = p.length / ks.length;
    ks.forEach((k, j) => (scores[k] = p[j * C + c]!));
  }
  let max = -Infinity;
  for (const k of live) max = Math.max(max, scores[k]!);
  const weights = new Float64Array(m.k);
  let sum = 0;
  for (const k of live) sum += weights[k] = Math.exp(scores[k]! - max);
  for (const k of live) weights[k]! /= sum;
  const out = new Float32Array(hw);
  for (const k of live) for (let i = 0; i < hw; i++) out[i]! += weights[k]! * m.activations[k * hw + i]!;
  for (let i = 0; i < hw; i++) if (!(out[i]! > 0)) out[i] = 0;
  return out;
}

export interface Curve { fractions: number[]; probabilities: number[]; auc: number }
export interface Faithfulness {
  deletion: Curve;
  insertion: Curve;
  randomDeletion: Curve;
  randomInsertion: Curve;
  /** Class probability lost when the 20% most relevant pixels are replaced (and when a random 20% is). */
  drop20: number;
  drop20Random: number;
}

/** Trapezoid area under a curve over [0, 1]. */
function auc(fr: number[], p: number[]): number {
  let a = 0;
  for (let i = 1; i < fr.length; i++) a += ((p[i]! + p[i - 1]!) / 2) * (fr[i]! - fr[i - 1]!);
  return a;
}

/** A strongly blurred copy of the picture: what "removed" pixels are replaced with (keeps colour statistics). */
export function blurred(img: Float32Array, H: number, W: number, radius = 12): Float32Array {
  const tmp = new Float32Array(img.length);
  const out = new Float32Array(img.length);
  // Two passes of a box filter (separable), edges clamped.
  const pass = (src: Float32Array, dst: Float32Array, horizontal: boolean) => {
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++)
        for (let c = 0; c < 3; c++) {
          let s = 0;
          for (let d = -radius; d <= radius; d++) {
            const xx = horizontal ? Math.min(W - 1, Math.max(0, x + d)) : x;
            const yy = horizontal ? y : Math.min(H - 1, Math.max(0, y + d));
            s += src[(yy * W + xx) * 3 + c]!;
          }
          dst[(y * W + x) * 3 + c] = s / (2 * radius + 1);
        }
  };
  pass(img, tmp, true);
  pass(tmp, out, false);
  return out;
}

/**
 * Deletion and insertion curves (Petsiuk et al.), in the model's input grid: pixels ordered by the map (most
 * relevant first) are replaced by a blurred copy (deletion) or revealed on it (insertion), `steps` fractions from 0
 * to 1 plus 20%; the same with a seeded random order as the baseline a useful map must beat.
 */
export async function faithfulness(
  ex: Pick<Explainer, 'probabilities'>,
  x: Float32Array,
  map: Float32Array,
  classIndex: number,
  H: number,
  W: number,
  opts: { steps?: number; seed?: number } = {},
): Promise<Faithfulness> {
  const steps = opts.steps ?? 10;
  const fractions = [...new Set([...Array.from({ length: steps + 1 }, (_, i) => i / steps), 0.2])].sort((a, b) => a - b);
  const n = H * W;
  const base = blurred(x, H, W);
  const byMap = Array.from({ length: n }, (_, i) => i).sort((a, b) => map[b]! - map[a]! || a - b);
  const rng = mulberry32(opts.seed ?? 0);
  const random = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [random[i], random[j]] = [random[j]!, random[i]!];
  }
  const per = n * 3;
  const pictures = new Float32Array(4 * fractions.length * per);
  let slot = 0;
  for (const order of [byMap, random]) {
    for (const insert of [false, true]) {
      for (const f of fractions) {
        const pic = pictures.subarray(slot * per, (slot + 1) * per);
        pic.set(insert ? base : x);
        const from = insert ? x : base;
        const count = Math.round(f * n);
        for (let r = 0; r < count; r++) {
          const i = order[r]!;
          pic[i * 3] = from[i * 3]!;
          pic[i * 3 + 1] = from[i * 3 + 1]!;
          pic[i * 3 + 2] = from[i * 3 + 2]!;
        }
        slot++;
      }
    }
  }
  const p = await ex.probabilities(pictures, slot);
  const C = p.length / slot;
  const curve = (k: number): Curve => {
    const probs = fractions.map((_, i) => p[(k * fractions.length + i) * C + classIndex]!);
    return { fractions, probabilities: probs, auc: auc(fractions, probs) };
  };
  const [deletion, insertion, randomDeletion, randomInsertion] = [curve(0), curve(1), curve(2), curve(3)];
  const at20 = fractions.indexOf(0.2);
  return {
    deletion,
    insertion,
    randomDeletion,
    randomInsertion,
    drop20: deletion.probabilities[0]! - deletion.probabilities[at20]!,
    drop20Random: randomDeletion.probabilities[0]! - randomDeletion.probabilities[at20]!,
  };
}
