/**
 * One classifier, two engines: a differentiable TF.js version (for dreams and attacks) and an ONNX Runtime version
 * (to check what the saved 8-bit picture really gets). Built from an ImageNet backbone (its logits) or from a graft
 * run (backbone features + the trained head, rebuilt in TF.js ops).
 */
import { Backbone, softmaxRows } from '../engine/backbone.js';
import { TfExecutor } from '../engine/tf/executor.js';
import { tf, type TfBackendName } from '../engine/tf/backend.js';
import { GraftError } from '../errors.js';
import type { RgbImage } from '../image/decode.js';
import { normaliseInto } from '../image/preprocess.js';
import type { PreprocessSpec } from '../image/spec.js';
import { decodeFloat32, HeadJsonSchema } from '../learn/heads.js';
import { isRunDir, loadRun } from '../learn/run.js';
import { resolveModel } from '../models/resolve.js';
import { editDistance } from '../util/numeric.js';

export interface DiffClassifier {
  spec: PreprocessSpec;
  classes: string[];
  /** Class scores (pre-softmax) of images given as [N, H, W, 3] pixels in [0, 1]. Differentiable. */
  logits(pixels: tf.Tensor4D): tf.Tensor2D;
  /** ONNX Runtime probabilities of 8-bit pictures at the model's input size (what a saved PNG gets). */
  probabilities(images: RgbImage[]): Promise<Float32Array[]>;
  dispose(): Promise<void>;
}

/** [N,H,W,3] pixels in [0,1] → the model's input tensor (normalisation, channel order, layout). */
function toModelInput(x: tf.Tensor4D, spec: PreprocessSpec): tf.Tensor4D {
  let y = x;
  if (spec.channelOrder === 'BGR') y = tf.reverse(y, -1);
  y = tf.div(tf.sub(y, tf.tensor1d(spec.mean)), tf.tensor1d(spec.std));
  return spec.layout === 'NCHW' ? tf.transpose(y, [0, 3, 1, 2]) : y;
}

async function ortProbabilities(backbone: Backbone, images: RgbImage[], post: (out: Float32Array, n: number) => Float32Array, tensor: string): Promise<Float32Array[]> {
  const spec = backbone.spec;
  const per = 3 * spec.size[0] * spec.size[1];
  const input = new Float32Array(images.length * per);
  images.forEach((im, i) => normaliseInto(input, i * per, im.data, im.width, im.height, spec));
  const out = (await backbone.runTensor(input, images.length))[tensor]!.data;
  const p = post(out, images.length);
  const c = p.length / images.length;
  return images.map((_, i) => p.slice(i * c, (i + 1) * c));
}

/** A differentiable classifier from a model (path, URL, catalog name) or a run folder. */
export async function loadClassifier(target: string, opts: { backend?: TfBackendName } = {}): Promise<DiffClassifier> {
  if (await isRunDir(target)) {
    const run = await loadRun(target);
    const json = HeadJsonSchema.parse(run.head.toJSON());
    if (json.kind === 'knn') throw new GraftError(`${target}: a kNN head has no gradient; train a linear or mlp head for this`);
    const ref = await resolveModel(run.config.model.path, { preprocess: run.config.preprocess, featureNode: run.config.model.featureTensor });
    const ex = await TfExecutor.load(ref.onnx, { outputs: [ref.featureTensor], backend: opts.backend });
    const d = json.dim;
    const C = json.classes.length;
    const src = `${target}/head.json`;
    const mean = tf.tensor1d(decodeFloat32(json.mean, [d], 'mean', src));
    const std = tf.tensor1d(decodeFloat32(json.std, [d], 'std', src));
    const p = json.params as Record<string, { base64: string; shape: number[] }>;
    const mat = (k: string, shape: [number, number]) => tf.tensor2d(decodeFloat32(p[k] as never, shape, k, src), shape);
    const vec = (k: string, n: number) => tf.tensor1d(decodeFloat32(p[k] as never, [n], k, src));
    const H = json.kind === 'mlp' ? p.W1!.shape[0]! : 0;
    const linear = json.kind === 'linear' ? { W: mat('W', [C, d]), b: vec('b', C) } : undefined;
    const mlp = json.kind === 'mlp' ? { W1: mat('W1', [H, d]), b1: vec('b1', H), W2: mat('W2', [C, H]), b2: vec('b2', C) } : undefined;
    const weights: tf.Tensor[] = [...Object.values(linear ?? {}), ...Object.values(mlp ?? {})];
    const backbone = await Backbone.load(run.config.model.path, { preprocess: run.config.preprocess, featureNode: run.config.model.featureTensor, parallelism: 'intra-op' });
    const head = (f: tf.Tensor2D): tf.Tensor2D => {
      const z = tf.div(tf.sub(f, mean), std) as tf.Tensor2D;
      if (linear) return tf.add(tf.matMul(z, linear.W, false, true), linear.b);
      const h = tf.relu(tf.add(tf.matMul(z, mlp!.W1, false, true), mlp!.b1)) as tf.Tensor2D;
      return tf.add(tf.matMul(h, mlp!.W2, false, true), mlp!.b2);
    };
    return {
      spec: ref.spec,
      classes: run.config.classes,
      logits: (x) => head(ex.run(toModelInput(x, ref.spec))[ref.featureTensor] as tf.Tensor2D),
      probabilities: (images) => ortProbabilities(backbone, images, (f, n) => run.head.predictProba(f, n), ref.featureTensor),
      dispose: async () => {
        ex.dispose();
        await backbone.dispose();
        for (const t of [mean, std, ...weights]) t.dispose();
      },
    };
  }
  const ref = await resolveModel(target);
  if (!ref.logitsTensor || !ref.labels) throw new GraftError(`${target}: not a classifier with known classes (give a graft run, or a model with class scores)`);
  const logitsTensor = ref.logitsTensor;
  const ex = await TfExecutor.load(ref.onnx, { outputs: [logitsTensor], backend: opts.backend });
  const backbone = await Backbone.load(target, { parallelism: 'intra-op' });
  const probs = ref.logitsAreProbabilities;
  return {
    spec: ref.spec,
    classes: ref.labels,
    logits: (x) => {
      const out = ex.run(toModelInput(x, ref.spec))[logitsTensor] as tf.Tensor2D;
      // A graph ending in Softmax gives probabilities: their log is a fine stand-in for logits.
      return probs ? (tf.log(tf.add(out, 1e-12)) as tf.Tensor2D) : out;
    },
    probabilities: (images) => ortProbabilities(backbone, images, (l, n) => (probs ? l : softmaxRows(l, n)), logitsTensor),
    dispose: async () => {
      ex.dispose();
      await backbone.dispose();
    },
  };
}

/** A class by index or by name (exact, case-insensitive, spaces or underscores); unknown → close matches listed. */
export function resolveClass(classes: string[], wanted: string): number {
  const n = Number(wanted);
  if (/^\d+$/.test(wanted) && n < classes.length) return n;
  const norm = (s: string) => s.toLowerCase().replace(/[\s_-]+/g, ' ').trim();
  const w = norm(wanted);
  const exact = classes.findIndex((c) => norm(c) === w);
  if (exact >= 0) return exact;
  const close = classes
    .map((c, i) => ({ c, i, score: norm(c).includes(w) || w.includes(norm(c)) ? 0 : editDistance(norm(c), w) }))
    .sort((a, b) => a.score - b.score)
    .slice(0, 5)
    .map((x) => `${x.c} (${x.i})`);
  throw new GraftError(`unknown class '${wanted}'; close matches: ${close.join(', ')}`);
}

