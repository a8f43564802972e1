/**
 * The "ideal" image of a class (Lucid-style feature visualisation): start from seeded noise and follow the gradient
 * of the class's log-probability, with a total-variation penalty that keeps the picture smooth and a random jitter
 * each step (transformation robustness), optionally an L2 penalty; Adam on a Laplacian-pyramid parameterisation.
 */
import { tf } from '../engine/tf/backend.js';
import type { RgbImage } from '../image/decode.js';
import { mulberry32 } from '../util/random.js';
import type { DiffClassifier } from './classifier.js';

export interface DreamOptions {
  classIndex: number;
  steps?: number;
  lr?: number;
  /** Weight of the total-variation penalty (mean absolute difference of neighbouring pixels); 0 turns it off. */
  tv?: number;
  /** Weight of an L2 penalty pulling pixels towards grey. */
  l2?: number;
  /** Random shift in pixels applied each step (0: none). */
  jitter?: number;
  seed?: number;
  onStep?: (s: { step: number; loss: number; probability: number }) => void;
}

export interface DreamResult {
  image: RgbImage;
  /** Probability of the class the differentiable model gives the final float image. */
  probability: number;
  history: { step: number; loss: number; probability: number }[];
  /** Mean absolute difference between neighbouring pixels of the saved 8-bit image, in [0, 1] units. */
  totalVariation: number;
  seconds: number;
}

/** Mean absolute difference of horizontally and vertically neighbouring pixels. */
function tvLoss(x: tf.Tensor4D): tf.Scalar {
  const [, h, w] = x.shape;
  const dx = tf.sub(tf.slice(x, [0, 0, 1, 0], [-1, h, w - 1, -1]), tf.slice(x, [0, 0, 0, 0], [-1, h, w - 1, -1]));
  const dy = tf.sub(tf.slice(x, [0, 1, 0, 0], [-1, h - 1, w, -1]), tf.slice(x, [0, 0, 0, 0], [-1, h - 1, w, -1]));
  return tf.add(tf.mean(tf.abs(dx)), tf.mean(tf.abs(dy))) as tf.Scalar;
}

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

/** Shift the image by (dy, dx) with wrap-around (a roll), keeping its size. */
function roll(x: tf.Tensor4D, dy: number, dx: number): tf.Tensor4D {
  const [, h, w] = x.shape;
  const rows = (t: tf.Tensor4D, k: number) => (k === 0 ? t : tf.concat([tf.slice(t, [0, h - k, 0, 0], [-1, k, -1, -1]), tf.slice(t, [0, 0, 0, 0], [-1, h - k, -1, -1])], 1));
  const cols = (t: tf.Tensor4D, k: number) => (k === 0 ? t : tf.concat([tf.slice(t, [0, 0, w - k, 0], [-1, -1, k, -1]), tf.slice(t, [0, 0, 0, 0], [-1, -1, w - k, -1])], 2));
  return cols(rows(x, ((dy % h) + h) % h), ((dx % w) + w) % w) as tf.Tensor4D;
}

export async function dream(model: DiffClassifier, opts: DreamOptions): Promise<DreamResult> {
  const t0 = performance.now();
  const [h, w] = model.spec.size;
  const steps = opts.steps ?? 200;
  const tvWeight = opts.tv ?? 0.2;
  const l2Weight = opts.l2 ?? 0;
  const jitter = opts.jitter ?? 8;
  const rng = mulberry32(opts.seed ?? 0);
  const C = model.classes.length;
  // A Laplacian-pyramid parameterisation: the picture is the sum of levels at full, 1/2, 1/4 and 1/8 size (each
  // upsampled), passed through a sigmoid. Coarse levels get the same gradient signal per parameter as fine ones, so
  // the optimisation builds shapes instead of pixel noise.
  const levels = Array.from({ length: 4 }, (_, i) => {
    const lh = Math.max(1, Math.round(h / 2 ** i));
    const lw = Math.max(1, Math.round(w / 2 ** i));
    return tf.variable(tf.tensor4d(Float32Array.from({ length: lh * lw * 3 }, () => (rng() - 0.5) * 0.1), [1, lh, lw, 3]));
  });
  const image = (): tf.Tensor4D =>
    tf.sigmoid(levels.map((v, i) => (i === 0 ? (v as tf.Tensor4D) : tf.image.resizeBilinear(v as tf.Tensor4D, [h, w]))).reduce((a, b) => tf.add(a, b) as tf.Tensor4D)) as tf.Tensor4D;
  const onehot = tf.oneHot(tf.tensor1d([opts.classIndex], 'int32'), C).toFloat() as tf.Tensor2D;
  const optimizer = tf.train.adam(opts.lr ?? 0.05);
  const history: DreamResult['history'] = [];
  try {
    for (let step = 1; step <= steps; step++) {
      const dy = Math.round((rng() * 2 - 1) * jitter);
      const dx = Math.round((rng() * 2 - 1) * jitter);
      let probability = 0;
      const loss = optimizer.minimize(() => {
        const x = image();
        const shifted = roll(x, dy, dx);
        const logits = model.logits(shifted);
        const ce = tf.losses.softmaxCrossEntropy(onehot, logits) as tf.Scalar;
        probability = Math.exp(-ce.dataSync()[0]!);
        let total = ce;
        if (tvWeight > 0) total = tf.add(total, tf.mul(tvLoss(x), tvWeight * h)) as tf.Scalar;
        if (l2Weight > 0) total = tf.add(total, tf.mul(tf.mean(tf.square(tf.sub(x, 0.5))), l2Weight)) as tf.Scalar;
        return total;
      }, true, levels);
      const lossValue = loss!.dataSync()[0]!;
      loss!.dispose();
      const rec = { step, loss: lossValue, probability };
      history.push(rec);
      opts.onStep?.(rec);
    }
    const x = image();
    const final = tf.tidy(() => Math.exp(-tf.losses.softmaxCrossEntropy(onehot, model.logits(x)).dataSync()[0]!));
    const v = x.dataSync();
    x.dispose();
    const data = Buffer.alloc(v.length);
    for (let i = 0; i < v.length; i++) data[i] = Math.max(0, Math.min(255, Math.round(v[i]! * 255)));
    const picture = { data, width: w, height: h };
    return { image: picture, probability: final, history, totalVariation: totalVariation(picture), seconds: (performance.now() - t0) / 1000 };
  } finally {
    for (const v of levels) v.dispose();
    onehot.dispose();
    optimizer.dispose();
  }
}
