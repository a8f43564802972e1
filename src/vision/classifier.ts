/**
 * One classifier, two uses: a gradient program on ONNX Runtime (cross-entropy and its gradient with respect to the
 * pixels, for dreams and attacks) and a plain ONNX Runtime forward pass (to check what the saved 8-bit picture
 * really gets). Built from an ImageNet classifier (its logits) or from a graft run (backbone features + the trained
 * head, as in `graft export`).
 */
import { availableParallelism } from 'node:os';
import { Backbone, softmaxRows } from '../engine/backbone.js';
import { GradientProgram } from '../engine/grad/program.js';
import { PIXEL_LOGITS, PIXELS, withPixelInput } from '../engine/grad/pixels.js';
import { GraftError } from '../errors.js';
import type { RgbImage } from '../image/decode.js';
import { normaliseInto } from '../image/preprocess.js';
import type { PreprocessSpec } from '../image/spec.js';
import { buildExportGraph, EXPORT_OUTPUTS } from '../learn/export.js';
import { HeadJsonSchema } from '../learn/heads.js';
import { isRunDir, loadRun, type LoadedRun } from '../learn/run.js';
import { checkRunModel, runBackbone } from '../learn/run-backbone.js';
import { resolveModel, type ModelRef } from '../models/resolve.js';
import { editDistance } from '../util/numeric.js';

export interface ClassGradient {
  /** Σ over the batch of −Σ_k targets[k]·log softmax(logits)[k]. */
  loss: number;
  /** [N, C] class scores. */
  logits: Float32Array;
  /** d loss / d pixels, [N, H, W, 3]. */
  grad: Float32Array;
}

export interface DiffClassifier {
  spec: PreprocessSpec;
  classes: string[];
  /**
   * Cross-entropy against `targets` ([N, C] class weights: one-hot rows for a class) of `n` images given as
   * [N, H, W, 3] pixels in [0, 1], and its gradient with respect to those pixels.
   */
  crossEntropy(pixels: Float32Array, n: number, targets: Float32Array): Promise<ClassGradient>;
  /** ONNX Runtime probabilities of 8-bit pictures at the model's input size (what a saved PNG gets). */
  probabilities(images: RgbImage[]): Promise<Float32Array[]>;
  /**
   * The graphs behind it, for other gradient programs (feature visualisation of layers and channels): the classifier
   * graph (node names as the model has them) and the same with the pixel input and `pixel_logits` (withPixelInput).
   */
  graph?: { onnx: Uint8Array; pixels: Uint8Array; where: string };
  dispose(): Promise<void>;
}

async function ortProbabilities(backbone: Backbone, images: RgbImage[], post: (out: Float32Array, n: number) => Float32Array | Promise<Float32Array>, tensor: string): Promise<Float32Array[]> {
  const spec = backbone.spec;
  const per = 3 * spec.size[0] * spec.size[1];
  const input = new Float32Array(images.length * per);
  images.forEach((im, i) => normaliseInto(input, i * per, im.data, im.width, im.height, spec));
  const out = (await backbone.runTensor(input, images.length))[tensor]!.data;
  const p = await post(out, images.length);
  const c = p.length / images.length;
  return images.map((_, i) => p.slice(i * c, (i + 1) * c));
}

/** Gradient programs of one pixel model, one per batch size, made on first use. */
function programs(bytes: Uint8Array, where: string): { get(n: number): Promise<GradientProgram>; release(): Promise<void> } {
  const made = new Map<number, Promise<GradientProgram>>();
  return {
    get(n) {
      let p = made.get(n);
      if (!p) {
        p = GradientProgram.create(bytes, { batch: n, wrt: [PIXELS], loss: [{ kind: 'cross-entropy', logits: PIXEL_LOGITS, targets: 'targets' }], outputs: [PIXEL_LOGITS] }, { threads: availableParallelism(), where });
        made.set(n, p);
      }
      return p;
    },
    async release() {
      for (const p of made.values()) await (await p).release();
      made.clear();
    },
  };
}

function classifier(spec: PreprocessSpec, classes: string[], progs: ReturnType<typeof programs>, probabilities: DiffClassifier['probabilities'], backbone: Backbone, graph: DiffClassifier['graph']): DiffClassifier {
  return {
    spec,
    classes,
    graph,
    async crossEntropy(pixels, n, targets) {
      const prog = await progs.get(n);
      const r = await prog.run({ [PIXELS]: pixels, targets });
      return { loss: r.loss, logits: r.outputs[PIXEL_LOGITS]!.data, grad: r.grads[PIXELS]! };
    },
    probabilities,
    dispose: async () => {
      await progs.release();
      await backbone.dispose();
    },
  };
}

/**
 * A classifier as one ONNX graph from the image tensor to class scores: a bare classifier as it is, or a run's
 * backbone with its head appended (what `graft export` writes). What dream, attack and explain differentiate.
 */
export interface ClassifierGraph {
  bytes: Uint8Array;
  logits: string;
  /** The scores are probabilities (the graph ends in Softmax). */
  probabilities: boolean;
  classes: string[];
  spec: PreprocessSpec;
  ref: ModelRef;
  run?: LoadedRun;
}

export async function classifierGraph(target: string): Promise<ClassifierGraph> {
  if (await isRunDir(target)) {
    const run = await loadRun(target);
    const json = HeadJsonSchema.parse(run.head.toJSON());
    if (json.kind === 'knn') throw new GraftError(`${target}: a kNN head has no gradient; train a linear or mlp head for this`);
    const ref = await resolveModel(run.config.model.path, { preprocess: run.config.preprocess, featureNode: run.config.model.featureTensor });
    checkRunModel(run, ref.onnx.info);
    const graph = buildExportGraph(ref.onnx, { featureTensor: ref.featureTensor, head: json });
    return { bytes: graph.bytes, logits: EXPORT_OUTPUTS.logits, probabilities: false, classes: run.config.classes, spec: ref.spec, ref, run };
  }
  const ref = await resolveModel(target);
  if (!ref.logitsTensor || !ref.labels) throw new GraftError(`${target}: not a classifier with known classes (give a graft run, or a model with class scores)`);
  return { bytes: ref.onnx.bytes, logits: ref.logitsTensor, probabilities: ref.logitsAreProbabilities, classes: ref.labels, spec: ref.spec, ref };
}

/** A differentiable classifier from a model (path, URL, catalog name) or a run folder. */
export async function loadClassifier(target: string): Promise<DiffClassifier> {
  const cg = await classifierGraph(target);
  if (cg.run) {
    const { run, ref } = cg;
    const bytes = withPixelInput(cg.bytes, ref.spec, { logits: { tensor: cg.logits, probabilities: false } }, target);
    const backbone = await runBackbone(run, { parallelism: 'intra-op' });
    const probabilities = (images: RgbImage[]) => ortProbabilities(backbone, images, (f, n) => run.head.predictProba(f, n), ref.featureTensor);
    const c = classifier(ref.spec, run.config.classes, programs(bytes, target), probabilities, backbone, { onnx: cg.bytes, pixels: bytes, where: target });
    const release = c.dispose;
    c.dispose = async () => {
      await run.head.dispose();
      await release();
    };
    return c;
  }
  const { ref, logits: logitsTensor, probabilities: probs } = cg;
  const bytes = withPixelInput(cg.bytes, ref.spec, { logits: { tensor: logitsTensor, probabilities: probs } }, target);
  const backbone = await Backbone.load(target, { parallelism: 'intra-op' });
  const probabilities = (images: RgbImage[]) => ortProbabilities(backbone, images, (l, n) => (probs ? l : softmaxRows(l, n)), logitsTensor);
  return classifier(ref.spec, cg.classes, programs(bytes, target), probabilities, backbone, { onnx: cg.bytes, pixels: bytes, where: target });
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

