import type { PreprocessSpec } from '../image/spec.js';
import { resolveModel, ModelRef, ResolveOptions } from '../models/resolve.js';
import { ExtractOptions, ExtractResult, extractFeatures } from './extract.js';
import { defaultFeatureCacheDir, FeatureCache } from './feature-cache.js';
import { OrtModel, type OrtOptions, type OrtRunner } from './ort.js';

export interface BackboneOptions extends ResolveOptions, OrtOptions {}

export interface Prediction { index: number; label: string; probability: number }

/** Softmax over each row of `n` rows; returns a new array. */
export function softmaxRows(logits: Float32Array, n: number): Float32Array {
  const c = logits.length / n;
  const out = new Float32Array(logits.length);
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    for (let j = 0; j < c; j++) max = Math.max(max, logits[i * c + j]!);
    let sum = 0;
    for (let j = 0; j < c; j++) sum += out[i * c + j] = Math.exp(logits[i * c + j]! - max);
    for (let j = 0; j < c; j++) out[i * c + j]! /= sum;
  }
  return out;
}

/** The `k` most probable classes of one row of probabilities. */
export function topK(proba: Float32Array, labels: string[] | undefined, k: number): Prediction[] {
  return Array.from(proba, (p, i) => ({ index: i, label: labels?.[i] ?? String(i), probability: p }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, k);
}

/**
 * A pre-trained network on ONNX Runtime, ready to give pooled features (for transfer learning) and, when it is a
 * classifier, class scores. One session computes both tensors in one pass.
 */
export class Backbone {
  private constructor(
    readonly ref: ModelRef,
    readonly ort: OrtRunner,
    /** How the model was resolved (preprocessing overrides, chosen nodes): a queue worker resolves it the same way. */
    readonly resolved: Pick<ResolveOptions, 'preprocess' | 'featureNode' | 'logitsNode'>,
  ) {}

  static async load(source: string, opts: BackboneOptions = {}): Promise<Backbone> {
    const ref = await resolveModel(source, opts);
    const outputs = [ref.featureTensor, ...(ref.logitsTensor ? [ref.logitsTensor] : [])];
    const preprocess = Object.fromEntries(Object.entries(opts.preprocess ?? {}).filter(([, v]) => v !== undefined));
    const resolved = {
      ...(Object.keys(preprocess).length > 0 && { preprocess: preprocess as ResolveOptions['preprocess'] }),
      ...(opts.featureNode && { featureNode: opts.featureNode }),
      ...(opts.logitsNode && { logitsNode: opts.logitsNode }),
    };
    return new Backbone(ref, await OrtModel.create(ref.onnx, outputs, opts), resolved);
  }

  get spec(): PreprocessSpec {
    return this.ref.spec;
  }

  /** A cache for this model's features (or logits), under `root` (default: graft's cache dir). */
  cacheFor(tensor: string = this.ref.featureTensor, root = defaultFeatureCacheDir()): FeatureCache {
    return new FeatureCache(root, this.ref.onnx.info.sha256, tensor, this.spec);
  }

  /** Pooled features of image files (see extractFeatures). */
  features(paths: string[], opts: ExtractOptions = {}): Promise<ExtractResult> {
    return extractFeatures(this.ort, this.ref.featureTensor, this.spec, paths, opts);
  }

  /** Class scores (pre-softmax) of image files; throws if the model has no classifier output. */
  logits(paths: string[], opts: ExtractOptions = {}): Promise<ExtractResult> {
    if (!this.ref.logitsTensor) throw new Error(`${this.ref.path}: the model has no classifier output`);
    return extractFeatures(this.ort, this.ref.logitsTensor, this.spec, paths, opts);
  }

  /** Run an already-preprocessed batch; returns every tensor this backbone computes. */
  runTensor(input: Float32Array, n: number) {
    const [h, w] = this.spec.size;
    return this.ort.run(input, this.spec.layout === 'NCHW' ? [n, 3, h, w] : [n, h, w, 3]);
  }

  dispose(): Promise<void> {
    return this.ort.dispose();
  }
}
