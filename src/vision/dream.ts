/**
 * The "ideal" image of a class (Lucid-style feature visualisation): start from seeded noise and follow the gradient
 * of the class's log-probability, with a total-variation penalty that keeps the picture smooth and a random jitter
 * each step (transformation robustness), optionally an L2 penalty; Adam on a Laplacian-pyramid parameterisation.
 */
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

/**
 * Total-variation penalty of an [H, W, 3] image (mean absolute difference of horizontal neighbours plus that of
 * vertical neighbours) and its gradient, added into `grad` scaled by `weight`.
 */
function tvLossInto(x: Float32Array, h: number, w: number, weight: number, grad: Float32Array): number {
  const nh = h * (w - 1) * 3;
  const nv = (h - 1) * w * 3;
  let sh = 0;
  let sv = 0;
  for (let y = 0; y < h; y++) {
    for (let xx = 0; xx < w; xx++) {
      for (let c = 0; c < 3; c++) {
        const i = (y * w + xx) * 3 + c;
        if (xx + 1 < w) {
          const d = x[i + 3]! - x[i]!;
          sh += Math.abs(d);
          const g = (Math.sign(d) * weight) / nh;
          grad[i + 3]! += g;
          grad[i]! -= g;
        }
        if (y + 1 < h) {
          const d = x[i + w * 3]! - x[i]!;
          sv += Math.abs(d);
          const g = (Math.sign(d) * weight) / nv;
          grad[i + w * 3]! += g;
          grad[i]! -= g;
        }
      }
    }
  }
  return weight * (sh / nh + sv / nv);
}

/**
 * Bilinear resampling of an [ih, iw, 3] image to [oh, ow, 3] with half-pixel centres and edge clamping, written as
 * a list of (source, weight) taps per output pixel so that the same taps give the adjoint (for the gradient).
 */
interface Resampler { forward(src: Float32Array, dst: Float32Array): void; adjointAdd(g: Float32Array, into: Float32Array): void }

function bilinear(ih: number, iw: number, oh: number, ow: number): Resampler {
  const axis = (n: number, m: number) =>
    Array.from({ length: m }, (_, o) => {
      const s = Math.min(Math.max((o + 0.5) * (n / m) - 0.5, 0), n - 1);
      const a = Math.floor(s);
      const b = Math.min(a + 1, n - 1);
      return { a, b, f: s - a };
    });
  const ys = axis(ih, oh);
  const xs = axis(iw, ow);
  return {
    forward(src, dst) {
      for (let y = 0; y < oh; y++) {
        const { a: y0, b: y1, f: fy } = ys[y]!;
        for (let x = 0; x < ow; x++) {
          const { a: x0, b: x1, f: fx } = xs[x]!;
          for (let c = 0; c < 3; c++) {
            const v00 = src[(y0 * iw + x0) * 3 + c]!;
            const v01 = src[(y0 * iw + x1) * 3 + c]!;
            const v10 = src[(y1 * iw + x0) * 3 + c]!;
            const v11 = src[(y1 * iw + x1) * 3 + c]!;
            dst[(y * ow + x) * 3 + c] = (1 - fy) * ((1 - fx) * v00 + fx * v01) + fy * ((1 - fx) * v10 + fx * v11);
          }
        }
      }
    },
    adjointAdd(g, into) {
      for (let y = 0; y < oh; y++) {
        const { a: y0, b: y1, f: fy } = ys[y]!;
        for (let x = 0; x < ow; x++) {
          const { a: x0, b: x1, f: fx } = xs[x]!;
          for (let c = 0; c < 3; c++) {
            const v = g[(y * ow + x) * 3 + c]!;
            into[(y0 * iw + x0) * 3 + c]! += (1 - fy) * (1 - fx) * v;
            into[(y0 * iw + x1) * 3 + c]! += (1 - fy) * fx * v;
            into[(y1 * iw + x0) * 3 + c]! += fy * (1 - fx) * v;
            into[(y1 * iw + x1) * 3 + c]! += fy * fx * v;
          }
        }
      }
    },
  };
}

/** out[y, x] = src[(y − dy) mod h, (x − dx) mod w] (a roll); `inverse` rolls back. */
function roll(src: Float32Array, dst: Float32Array, h: number, w: number, dy: number, dx: number, inverse = false): void {
  const sy = inverse ? -dy : dy;
  const sx = inverse ? -dx : dx;
  for (let y = 0; y < h; y++) {
    const ty = (((y + sy) % h) + h) % h;
    for (let x = 0; x < w; x++) {
      const tx = (((x + sx) % w) + w) % w;
      const from = (y * w + x) * 3;
      const to = (ty * w + tx) * 3;
      dst[to] = src[from]!;
      dst[to + 1] = src[from + 1]!;
      dst[to + 2] = src[from + 2]!;
    }
  }
}

/** Adam on a flat parameter vector (the same update as Keras/TF.js: epsilon 1e-7). */
class Adam {
  private m: Float32Array;
  private v: Float32Array;
  private t = 0;
  constructor(n: number, private readonly lr: number, private readonly b1 = 0.9, private readonly b2 = 0.999, private readonly eps = 1e-7) {
    this.m = new Float32Array(n);
    this.v = new Float32Array(n);
  }
  step(p: Float32Array, g: Float32Array): void {
    this.t++;
    const c1 = 1 - this.b1 ** this.t;
    const c2 = 1 - this.b2 ** this.t;
    for (let i = 0; i < p.length; i++) {
      this.m[i] = this.b1 * this.m[i]! + (1 - this.b1) * g[i]!;
      this.v[i] = this.b2 * this.v[i]! + (1 - this.b2) * g[i]! * g[i]!;
      p[i]! -= (this.lr * (this.m[i]! / c1)) / (Math.sqrt(this.v[i]! / c2) + this.eps);
    }
  }
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

export async function dream(model: DiffClassifier, opts: DreamOptions): Promise<DreamResult> {
  const t0 = performance.now();
  const [h, w] = model.spec.size;
  const steps = opts.steps ?? 200;
  const tvWeight = opts.tv ?? 0.2;
  const l2Weight = opts.l2 ?? 0;
  const jitter = opts.jitter ?? 8;
  const rng = mulberry32(opts.seed ?? 0);
  const C = model.classes.length;
  const n = h * w * 3;
  // A Laplacian-pyramid parameterisation: the picture is the sum of levels at full, 1/2, 1/4 and 1/8 size (each
  // upsampled), passed through a sigmoid. Coarse levels get the same gradient signal per parameter as fine ones, so
  // the optimisation builds shapes instead of pixel noise.
  const levels = Array.from({ length: 4 }, (_, i) => {
    const lh = Math.max(1, Math.round(h / 2 ** i));
    const lw = Math.max(1, Math.round(w / 2 ** i));
    const value = Float32Array.from({ length: lh * lw * 3 }, () => (rng() - 0.5) * 0.1);
    return { value, grad: new Float32Array(value.length), up: i === 0 ? undefined : bilinear(lh, lw, h, w), adam: new Adam(value.length, opts.lr ?? 0.05) };
  });
  const targets = new Float32Array(C);
  targets[opts.classIndex] = 1;
  const sum = new Float32Array(n);
  const tmp = new Float32Array(n);
  const x = new Float32Array(n);
  const shifted = new Float32Array(n);
  const gx = new Float32Array(n);
  const render = () => {
    sum.fill(0);
    for (const l of levels) {
      if (!l.up) for (let i = 0; i < n; i++) sum[i]! += l.value[i]!;
      else {
        l.up.forward(l.value, tmp);
        for (let i = 0; i < n; i++) sum[i]! += tmp[i]!;
      }
    }
    for (let i = 0; i < n; i++) x[i] = 1 / (1 + Math.exp(-sum[i]!));
  };
  const history: DreamResult['history'] = [];
  for (let step = 1; step <= steps; step++) {
    const dy = Math.round((rng() * 2 - 1) * jitter);
    const dx = Math.round((rng() * 2 - 1) * jitter);
    render();
    roll(x, shifted, h, w, dy, dx);
    const ce = await model.crossEntropy(shifted, 1, targets);
    const probability = Math.exp(-ce.loss);
    // d loss / d x: the model's gradient rolled back, plus the penalties'.
    roll(ce.grad, gx, h, w, dy, dx, true);
    let loss = ce.loss;
    if (tvWeight > 0) loss += tvLossInto(x, h, w, tvWeight * h, gx);
    if (l2Weight > 0) {
      let s = 0;
      for (let i = 0; i < n; i++) {
        const d = x[i]! - 0.5;
        s += d * d;
        gx[i]! += (2 * l2Weight * d) / n;
      }
      loss += (l2Weight * s) / n;
    }
    // Through the sigmoid, then to each level (the adjoint of its upsampling).
    for (let i = 0; i < n; i++) gx[i]! *= x[i]! * (1 - x[i]!);
    for (const l of levels) {
      if (!l.up) l.adam.step(l.value, gx);
      else {
        l.grad.fill(0);
        l.up.adjointAdd(gx, l.grad);
        l.adam.step(l.value, l.grad);
      }
    }
    const rec = { step, loss, probability };
    history.push(rec);
    opts.onStep?.(rec);
  }
  render();
  const final = Math.exp(-(await model.crossEntropy(x, 1, targets)).loss);
  const data = Buffer.alloc(n);
  for (let i = 0; i < n; i++) data[i] = Math.max(0, Math.min(255, Math.round(x[i]! * 255)));
  const picture = { data, width: w, height: h };
  return { image: picture, probability: final, history, totalVariation: totalVariation(picture), seconds: (performance.now() - t0) / 1000 };
}
