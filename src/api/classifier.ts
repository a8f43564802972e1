/**
 * A trained classifier in memory: `await Classifier.load(run folder | .onnx | catalog name)`, then
 * `predict(images)`. What `graft predict` does for files, for a program that keeps the model loaded (the server
 * builds its endpoint on it). A run trained with test-time augmentation is used with it.
 */
import { Backbone, softmaxRows, topK, type Prediction } from '../engine/backbone.js';
import { GraftError, ImageError } from '../errors.js';
import { loadAugmentedInto, type AugmentParams } from '../image/augment.js';
import type { DecodeOptions, ImageInput } from '../image/decode.js';
import { loadInto } from '../image/preprocess.js';
import type { PreprocessSpec } from '../image/spec.js';
import { ttaViews, type TtaKind } from '../image/tta.js';
import { isRunDir, loadRun } from '../learn/run.js';
import { runBackbone } from '../learn/run-backbone.js';

export interface ClassifierOptions {
  /** ONNX Runtime threads (default: all cores). */
  threads?: number;
  /** Test-time augmentation; default: what the run was trained with ('none' turns it off). */
  tta?: TtaKind | 'none';
  /** Class names for a bare model without them (default: ImageNet for 1000/1001 outputs). */
  labelsFile?: string;
}

export interface ImagePrediction {
  /** The path, or `<buffer N>` for the N-th buffer given. */
  input: string;
  /** Most probable first; empty when the image could not be read. */
  top: Prediction[];
  /** Why the image could not be classified. */
  error?: string;
}

export class Classifier {
  private constructor(
    /** What was loaded: a run folder, or a model (path, URL, catalog name). */
    readonly source: string,
    readonly kind: 'run' | 'model',
    readonly classes: string[] | undefined,
    readonly backbone: Backbone,
    /** The tensor the rows come from: pooled features (a run's head follows) or class scores. */
    readonly tensor: string,
    private readonly head: (rows: Float32Array, n: number) => Float32Array | Promise<Float32Array>,
    /** Views averaged per image; [undefined] = the plain image. */
    readonly views: (AugmentParams | undefined)[],
    /** Releases the head's session (a run's head predicts on ONNX Runtime). */
    private readonly releaseHead: () => Promise<void> = async () => {},
  ) {}

  static async load(source: string, opts: ClassifierOptions = {}): Promise<Classifier> {
    if (await isRunDir(source)) {
      const run = await loadRun(source);
      const backbone = await runBackbone(run, { threads: opts.threads });
      const tta = opts.tta === 'none' ? undefined : (opts.tta ?? run.config.tta);
      return new Classifier(source, 'run', run.config.classes, backbone, backbone.ref.featureTensor, (rows, n) => run.head.predictProba(rows, n), tta ? ttaViews(tta) : [undefined], () => run.head.dispose());
    }
    const backbone = await Backbone.load(source, { threads: opts.threads, labelsFile: opts.labelsFile });
    const logits = backbone.ref.logitsTensor;
    if (!logits) {
      await backbone.dispose();
      throw new GraftError(`${source}: this model has no classifier output; train a head on its features (graft train) and load the run`);
    }
    const proba = backbone.ref.logitsAreProbabilities;
    const tta = opts.tta === 'none' ? undefined : opts.tta;
    return new Classifier(source, 'model', backbone.ref.labels, backbone, logits, (rows, n) => (proba ? rows : softmaxRows(rows, n)), tta ? ttaViews(tta) : [undefined]);
  }

  get spec(): PreprocessSpec {
    return this.backbone.spec;
  }

  /** Floats in one preprocessed image. */
  get inputLength(): number {
    return 3 * this.spec.size[0] * this.spec.size[1];
  }

  /** The preprocessed input of each view of one image (ImageError when it cannot be read). */
  async inputs(image: ImageInput, decode: DecodeOptions & { name?: string } = {}): Promise<Float32Array[]> {
    return Promise.all(
      this.views.map(async (v) => {
        const x = new Float32Array(this.inputLength);
        if (v) await loadAugmentedInto(x, 0, image, this.spec, v, decode);
        else await loadInto(x, 0, image, this.spec, decode);
        return x;
      }),
    );
  }

  /** Rows of `tensor` for `n` preprocessed inputs packed in `input`. */
  async rows(input: Float32Array, n: number): Promise<Float32Array[]> {
    const out = (await this.backbone.runTensor(input, n))[this.tensor];
    if (!out) throw new GraftError(`${this.source}: the model gave no ${this.tensor}`);
    const c = out.data.length / n;
    return Array.from({ length: n }, (_, i) => out.data.slice(i * c, (i + 1) * c));
  }

  /** Class probabilities of one image from the rows of its views (averaged, then the head or a softmax). */
  async probabilitiesOf(viewRows: Float32Array[]): Promise<Float32Array> {
    const mean = viewRows[0]!.slice();
    for (const r of viewRows.slice(1)) for (let j = 0; j < mean.length; j++) mean[j]! += r[j]!;
    if (viewRows.length > 1) for (let j = 0; j < mean.length; j++) mean[j]! /= viewRows.length;
    return this.head(mean, 1);
  }

  /** The top classes of each image (paths or encoded bytes), batch by batch; unreadable images get `error`. */
  async predict(images: ImageInput | ImageInput[], opts: { top?: number; batchSize?: number; decode?: DecodeOptions } = {}): Promise<ImagePrediction[]> {
    const list = Array.isArray(images) ? images : [images];
    const top = opts.top ?? 5;
    const batch = Math.max(1, opts.batchSize ?? 32);
    const per = this.inputLength;
    const V = this.views.length;
    const results: ImagePrediction[] = [];
    for (let s = 0; s < list.length; s += batch) {
      const chunk = list.slice(s, s + batch);
      const names = chunk.map((im, i) => (typeof im === 'string' ? im : `<buffer ${s + i}>`));
      const loaded = await Promise.all(
        chunk.map((im, i) => this.inputs(im, { ...opts.decode, name: names[i] }).catch((err: unknown) => {
          if (err instanceof ImageError) return err;
          throw err;
        })),
      );
      const ok = loaded.filter((l): l is Float32Array[] => !(l instanceof ImageError));
      const input = new Float32Array(ok.length * V * per);
      ok.flat().forEach((x, j) => input.set(x, j * per));
      const rows = ok.length ? await this.rows(input, ok.length * V) : [];
      let k = 0;
      for (const [i, l] of loaded.entries()) {
        if (l instanceof ImageError) {
          results.push({ input: names[i]!, top: [], error: l.reason });
          continue;
        }
        const p = await this.probabilitiesOf(rows.slice(k * V, (k + 1) * V));
        k++;
        results.push({ input: names[i]!, top: topK(p, this.classes, Math.min(top, p.length)) });
      }
    }
    return results;
  }

  async dispose(): Promise<void> {
    await this.releaseHead();
    await this.backbone.dispose();
  }
}
