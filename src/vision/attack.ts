/**
 * Adversarial examples (Foolbox style): FGSM and L-inf PGD, targeted or not, applied in pixel space. The image is
 * the 8-bit picture the model sees (resized and cropped to its input size); the perturbation lives in [0, 1] pixel
 * units, and the result is checked the way it will be used: rounded to 8 bits (as saved to PNG) and classified by
 * ONNX Runtime. Rounding keeps the L-inf bound: the original is on the 1/255 grid, so round(x0 + d) stays within
 * eps of x0 when eps is a whole number of levels.
 */
import type { RgbImage } from '../image/decode.js';
import { mulberry32 } from '../util/random.js';
import type { DiffClassifier } from './classifier.js';

export interface AttackOptions {
  method: 'fgsm' | 'pgd';
  /** L-inf budget in [0, 1] pixel units (e.g. 2/255). */
  eps: number;
  /** Class to reach; absent: untargeted (leave the original prediction). */
  target?: number;
  /** PGD iterations (default 40) and step size (default eps/4, at least half a level). */
  steps?: number;
  stepSize?: number;
  randomStart?: boolean;
  seed?: number;
}

export interface AttackOutcome {
  adversarial: RgbImage;
  /** Class the original got (ONNX Runtime), and the class after. */
  before: { index: number; probability: number }[];
  after: { index: number; probability: number }[];
  success: boolean;
  steps: number;
  /** Norms of the saved perturbation in [0, 1] units; linfLevels is in 8-bit levels. */
  linf: number;
  linfLevels: number;
  l2: number;
  psnr: number;
}

function top5(p: Float32Array): { index: number; probability: number }[] {
  return Array.from(p, (probability, index) => ({ index, probability }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, 5);
}

/** Round pixels in [0,1] to 8-bit levels (what a PNG keeps). */
function to8bit(x: Float32Array, like: RgbImage): RgbImage {
  const data = Buffer.alloc(x.length);
  for (let i = 0; i < x.length; i++) data[i] = Math.max(0, Math.min(255, Math.round(x[i]! * 255)));
  return { data, width: like.width, height: like.height };
}

function norms(a: RgbImage, b: RgbImage): { linfLevels: number; l2: number; psnr: number } {
  let linf = 0;
  let sq = 0;
  for (let i = 0; i < a.data.length; i++) {
    const d = Math.abs(a.data[i]! - b.data[i]!);
    linf = Math.max(linf, d);
    sq += (d / 255) ** 2;
  }
  const mse = sq / a.data.length;
  return { linfLevels: linf, l2: Math.sqrt(sq), psnr: mse === 0 ? Infinity : 10 * Math.log10(1 / mse) };
}

/** Attack one picture (at the model's input size). */
export async function attackImage(model: DiffClassifier, image: RgbImage, opts: AttackOptions): Promise<AttackOutcome> {
  const [p0] = await model.probabilities([image]);
  const before = top5(p0!);
  const label = before[0]!.index;
  const targeted = opts.target !== undefined;
  const goal = (idx: number) => (targeted ? idx === opts.target : idx !== label);
  const eps = opts.eps;
  const steps = opts.method === 'fgsm' ? 1 : (opts.steps ?? 40);
  const alpha = opts.method === 'fgsm' ? eps : (opts.stepSize ?? Math.max(eps / 4, 0.5 / 255));
  const C = model.classes.length;
  const targets = new Float32Array(C);
  targets[targeted ? opts.target! : label] = 1;
  const x0 = Float32Array.from(image.data, (v) => v / 255);
  const rng = mulberry32(opts.seed ?? 0);
  const delta = opts.randomStart ? Float32Array.from(x0, () => (rng() * 2 - 1) * eps) : new Float32Array(x0.length);
  const x = new Float32Array(x0.length);
  // Targeted: descend the cross-entropy to the target; untargeted: ascend it away from the label.
  const sign = targeted ? -1 : 1;
  let adversarial = image;
  let used = 0;
  let after = before;
  const argmax = (v: Float32Array) => v.reduce((best, y, i) => (y > v[best]! ? i : best), 0);
  const check = async (): Promise<boolean> => {
    adversarial = to8bit(x, image);
    after = top5((await model.probabilities([adversarial]))[0]!);
    return goal(after[0]!.index);
  };
  let done = false;
  for (let s = 0; s < steps; s++) {
    // The gradient is taken at the picture as it will be saved (8-bit levels, inside [0, 1]): its forward pass is
    // then also the check of that picture, so no separate forward every few steps, and the attack stops at the
    // first step that fools the model (0.16-0.19 s an image with a check every 5 steps; see docs/benchmarks.md).
    for (let i = 0; i < x.length; i++) x[i] = Math.round(Math.min(1, Math.max(0, x0[i]! + delta[i]!)) * 255) / 255;
    const { grad, logits } = await model.crossEntropy(x, 1, targets);
    // Confirmed by the classifier's own session (the gradient program's forward may differ in the last bits).
    if (s > 0 && goal(argmax(logits)) && (await check())) {
      done = true;
      break;
    }
    for (let i = 0; i < x.length; i++) {
      const g = grad[i]!;
      const stepped = delta[i]! + (g > 0 ? 1 : g < 0 ? -1 : 0) * sign * alpha;
      const bounded = Math.min(eps, Math.max(-eps, stepped));
      delta[i] = Math.min(1, Math.max(0, x0[i]! + bounded)) - x0[i]!;
    }
    used = s + 1;
  }
  if (!done) {
    for (let i = 0; i < x.length; i++) x[i] = x0[i]! + delta[i]!;
    await check();
  }
  const n = norms(image, adversarial);
  return { adversarial, before, after, success: goal(after[0]!.index), steps: used, linf: n.linfLevels / 255, linfLevels: n.linfLevels, l2: n.l2, psnr: n.psnr };
}

/** "4/255" or "0.0157" → [0, 1] units; undefined when malformed or outside (0, 1]. */
export function parseEps(s: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*\/\s*(\d+(?:\.\d+)?)\s*$/.exec(s);
  const v = m ? Number(m[1]) / Number(m[2]) : Number(s);
  if (!Number.isFinite(v) || v <= 0 || v > 1) return undefined;
  return v;
}
