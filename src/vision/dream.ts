/**
 * The "ideal" image of a class (or of any objective), in Lucid/Lucent's manner (src/vision/featurevis/): by default
 * a Fourier-space parameterisation with a 1/f spectrum and decorrelated colour, random pad/jitter/scale/rotation
 * at every step, Adam on the raw parameters, and a small total-variation penalty. `param: 'pixel'`,
 * `decorrelate: false`, `transforms: false` and `tv: 0` give back plain gradient ascent, the lesson's starting
 * point (`graft dream --compare` shows the four stages side by side).
 */
import type { RgbImage } from '../image/decode.js';
import type { DiffClassifier } from './classifier.js';
import { classLogit, classLogProb, diversity, objectiveModel, scale, sum, type Objective, type ObjectiveModel } from './featurevis/objectives.js';
import type { ParamKind } from './featurevis/param.js';
import { renderVis } from './featurevis/render.js';
import { jitter as jitterT, pad, standardTransforms, type Transform } from './featurevis/transforms.js';

export interface DreamOptions {
  /** The class to dream of (the objective's class term; also the class whose probability is reported). */
  classIndex?: number;
  /** Any objective instead of the class (see featurevis/objectives.ts); classIndex then only picks what is reported. */
  objective?: Objective;
  /** Class score maximised for classIndex: the logit (default) or the log-probability. */
  classScore?: 'logit' | 'logprob';
  steps?: number;
  lr?: number;
  /** Weight of the total-variation penalty (mean absolute difference of neighbouring pixels); 0 turns it off. */
  tv?: number;
  /** Weight of an L2 penalty pulling pixels towards grey. */
  l2?: number;
  /**
   * Largest random shift in pixels per step (0: none). With transforms on it sets the first jitter of the standard
   * set (default 8); with transforms off it alone is applied.
   */
  jitter?: number;
  /** Parameterisation (default fourier). */
  param?: ParamKind;
  /** Decorrelated colour (default true). */
  decorrelate?: boolean;
  /** Random pad, jitter, scale and rotation at every step (default true). */
  transforms?: boolean;
  /** More networks to optimise for at the same time (the loss is the mean over all models). */
  models?: DiffClassifier[];
  /** Images in the batch (default 1). */
  batch?: number;
  /** Weight of the diversity term between the batch's images (default 0), on `diversityLayer`. */
  diversity?: number;
  diversityLayer?: string;
  seed?: number;
  onStep?: (s: { step: number; loss: number; probability: number }) => void;
  /** Called every `imageEvery` steps (default 10) with the picture as it is: the page shows it forming. */
  onImage?: (step: number, image: RgbImage) => void;
  imageEvery?: number;
  /** Stop at the next step with InterruptedError. */
  signal?: AbortSignal;
}

export interface DreamResult {
  image: RgbImage;
  /** Every image of the batch (image is the first). */
  images: RgbImage[];
  /** Probability of the class the differentiable model gives the final float image (NaN without a class). */
  probability: number;
  history: { step: number; loss: number; probability: number }[];
  /** Mean absolute difference between neighbouring pixels of the saved 8-bit image, in [0, 1] units. */
  totalVariation: number;
  seconds: number;
}

export const DREAM_DEFAULTS = { steps: 512, lr: 0.05, tv: 0.05, l2: 0, jitter: 8, param: 'fourier' as ParamKind, decorrelate: true, transforms: true, classScore: 'logit' as const };

export function totalVariation(img: RgbImage): number {
  const { data, width: w, height: h } = img;
  let sum = 0;
  let n = 0;
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < 3; c++) {
        const v = data[(y * w + x) * 3 + c]!;
        if (x + 1 < w) (sum += Math.abs(data[(y * w + x + 1) * 3 + c]! - v)), n++;
        if (y + 1 < h) (sum += Math.abs(data[((y + 1) * w + x) * 3 + c]! - v)), n++;
      }
  return sum / n / 255;
}

/**
 * The transforms of a dream: the standard set (its first jitter set by `jitter`), or only a jitter, or none. Lengths
 * are for 224 pixels and scale with the image.
 */
export function dreamTransforms(size: number, on: boolean, jitter: number): Transform[] {
  const j = Math.round((jitter * size) / 224);
  if (on) {
    const std = standardTransforms(size);
    std[1] = jitterT(j);
    return j > 0 ? std : std.filter((_, i) => i !== 1);
  }
  return j > 0 ? [pad(j), jitterT(2 * j)] : [];
}

export async function dream(model: DiffClassifier, opts: DreamOptions): Promise<DreamResult> {
  const d = DREAM_DEFAULTS;
  const batch = opts.batch ?? 1;
  const score = opts.classScore ?? d.classScore;
  let objective = opts.objective ?? (opts.classIndex !== undefined ? (score === 'logit' ? classLogit(opts.classIndex) : classLogProb(opts.classIndex)) : undefined);
  if (!objective) throw new Error('dream: give a class or an objective');
  if ((opts.diversity ?? 0) > 0 && batch > 1) {
    if (!opts.diversityLayer) throw new Error('dream: diversity needs a layer');
    objective = sum(objective, scale(diversity(opts.diversityLayer), opts.diversity!));
  }
  const all = [model, ...(opts.models ?? [])];
  const oms: ObjectiveModel[] = [];
  try {
    for (const [i, m] of all.entries()) {
      // The class is named on the extra models (their class lists may differ, e.g. 1001 classes with background).
      const o = i > 0 && opts.classIndex !== undefined && !opts.objective ? (score === 'logit' ? classLogit(model.classes[opts.classIndex]!) : classLogProb(model.classes[opts.classIndex]!)) : objective;
      oms.push(await objectiveModel(m, o, batch));
    }
    const [h, w] = model.spec.size;
    const res = await renderVis(oms, {
      param: { kind: opts.param ?? d.param, decorrelate: opts.decorrelate ?? d.decorrelate },
      transforms: dreamTransforms(Math.min(h, w), opts.transforms ?? d.transforms, opts.jitter ?? d.jitter),
      steps: opts.steps ?? d.steps,
      lr: opts.lr ?? d.lr,
      tv: opts.tv ?? d.tv,
      l2: opts.l2 ?? d.l2,
      seed: opts.seed ?? 0,
      size: [h, w],
      onStep: opts.onStep,
      onImage: opts.onImage ? (step, images) => opts.onImage!(step, images[0]!) : undefined,
      imageEvery: opts.imageEvery,
      signal: opts.signal,
    });
    let probability = NaN;
    if (opts.classIndex !== undefined) {
      const C = model.classes.length;
      const targets = new Float32Array(C);
      targets[opts.classIndex] = 1;
      probability = Math.exp(-(await model.crossEntropy(res.pixels.subarray(0, h * w * 3), 1, targets)).loss);
    }
    return { image: res.images[0]!, images: res.images, probability, history: res.history, totalVariation: totalVariation(res.images[0]!), seconds: res.seconds };
  } finally {
    for (const om of oms) await om.release();
  }
}
