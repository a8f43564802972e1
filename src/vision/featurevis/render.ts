/**
 * The optimisation loop of feature visualisation (Lucid's `render_vis`): a parameterised batch of images, at each
 * step one random view through the transforms for every model, the objective's gradient back through the view
 * (adjoint sampling), optional total-variation and L2 penalties on the pixels, back through the parameterisation,
 * and an Adam step on the raw parameters. With several models the loss is the mean of their losses: the images
 * must work for all of them, which keeps fewer of one network's private quirks.
 */
import { InterruptedError } from '../../errors.js';
import type { RgbImage } from '../../image/decode.js';
import { deriveSeed, mulberry32 } from '../../util/random.js';
import type { ObjectiveModel } from './objectives.js';
import type { ParamOptions } from './param.js';
import { createParam } from './param-ort.js';
import { drawChain, Sampler, viewFor, type Transform } from './transforms.js';

export interface RenderOptions {
  param?: ParamOptions;
  /** Applied in order at every step (default none); see transforms.ts. */
  transforms?: readonly Transform[];
  /** Value shown where a transform uncovers the outside of the picture (default 0.5, grey). */
  fill?: number;
  steps?: number;
  lr?: number;
  /** Total-variation weight (mean absolute difference of neighbouring pixels, times the image height). */
  tv?: number;
  /** L2 weight pulling pixels to grey (mean squared distance from 0.5). */
  l2?: number;
  seed?: number;
  /** The images' size [h, w] (default: the first model's input size). */
  size?: readonly [number, number];
  onStep?: (s: { step: number; loss: number; probability: number }) => void;
  onImage?: (step: number, images: RgbImage[]) => void;
  imageEvery?: number;
  signal?: AbortSignal;
}

export interface RenderResult {
  images: RgbImage[];
  /** The final float pixels [N, H, W, 3] in (0, 1). */
  pixels: Float32Array;
  history: { step: number; loss: number; probability: number }[];
  seconds: number;
}

/** Adam on a flat parameter vector (the update of Keras/TF.js: epsilon 1e-7). */
export class Adam {
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

/**
 * Total-variation penalty of an [H, W, 3] image at `off` (mean absolute difference of horizontal neighbours plus
 * that of vertical neighbours, times `weight`); its gradient is added into `grad` (same layout).
 */
export function tvLossInto(x: Float32Array, h: number, w: number, weight: number, grad: Float32Array, off = 0): number {
  const gh = weight / (h * (w - 1) * 3);
  const gv = weight / ((h - 1) * w * 3);
  const row = w * 3;
  let sh = 0;
  let sv = 0;
  for (let y = 0; y < h; y++) {
    const base = off + y * row;
    for (let i = base; i < base + row - 3; i++) {
      const d = x[i + 3]! - x[i]!;
      if (d > 0) {
        sh += d;
        grad[i + 3]! += gh;
        grad[i]! -= gh;
      } else if (d < 0) {
        sh -= d;
        grad[i + 3]! -= gh;
        grad[i]! += gh;
      }
    }
    if (y + 1 === h) continue;
    for (let i = base; i < base + row; i++) {
      const d = x[i + row]! - x[i]!;
      if (d > 0) {
        sv += d;
        grad[i + row]! += gv;
        grad[i]! -= gv;
      } else if (d < 0) {
        sv -= d;
        grad[i + row]! -= gv;
        grad[i]! += gv;
      }
    }
  }
  return sh * gh + sv * gv;
}

/** [N, H, W, 3] floats in [0, 1] as 8-bit pictures. */
export function toPictures(x: Float32Array, n: number, width: number, height: number): RgbImage[] {
  const per = width * height * 3;
  return Array.from({ length: n }, (_, b) => {
    const data = Buffer.alloc(per);
    for (let i = 0; i < per; i++) data[i] = Math.max(0, Math.min(255, Math.round(x[b * per + i]! * 255)));
    return { data, width, height };
  });
}

function softmaxAt(logits: Float32Array, off: number, C: number, k: number): number {
  let max = -Infinity;
  for (let i = 0; i < C; i++) max = Math.max(max, logits[off + i]!);
  let s = 0;
  for (let i = 0; i < C; i++) s += Math.exp(logits[off + i]! - max);
  return Math.exp(logits[off + k]! - max) / s;
}

export async function renderVis(models: ObjectiveModel[], opts: RenderOptions = {}): Promise<RenderResult> {
  const t0 = performance.now();
  if (!models.length) throw new Error('renderVis: no model');
  const n = models[0]!.n;
  const [h, w] = opts.size ?? models[0]!.size;
  const steps = opts.steps ?? 512;
  const tv = opts.tv ?? 0;
  const l2 = opts.l2 ?? 0;
  const seed = opts.seed ?? 0;
  const transforms = opts.transforms ?? [];
  // Independent streams: the initial values and the transforms' draws.
  const param = await createParam(n, h, w, opts.param ?? { kind: 'fourier' }, mulberry32(deriveSeed(seed, 1)));
  const rng = mulberry32(deriveSeed(seed, 2));
  const adam = new Adam(param.params.length, opts.lr ?? 0.05);
  const per = h * w * 3;
  const x = new Float32Array(n * per);
  const gx = new Float32Array(n * per);
  const gp = new Float32Array(param.params.length);
  const first = models[0]!;
  const C = first.model.classes.length;
  const cls = first.classIndices[0];
  const history: RenderResult['history'] = [];
  try {
    for (let step = 1; step <= steps; step++) {
      await param.render(x);
      gx.fill(0);
      const chain = drawChain(transforms, { w, h }, rng);
      let loss = 0;
      let probability = NaN;
      for (const [mi, m] of models.entries()) {
        const view = viewFor(chain, { w: m.size[1], h: m.size[0] });
        const sampler = new Sampler(view, w, h, opts.fill ?? 0.5);
        const r = await m.evaluate(sampler.forward(x, n));
        loss += r.loss / models.length;
        if (models.length > 1) for (let i = 0; i < r.grad.length; i++) r.grad[i]! /= models.length;
        sampler.adjointInto(r.grad, n, gx);
        if (mi === 0 && cls !== undefined) probability = softmaxAt(r.logits, 0, C, cls);
      }
      if (tv > 0) for (let b = 0; b < n; b++) loss += tvLossInto(x, h, w, tv * h, gx, b * per);
      if (l2 > 0) {
        let s = 0;
        for (let i = 0; i < x.length; i++) {
          const d = x[i]! - 0.5;
          s += d * d;
          gx[i]! += (2 * l2 * d) / per;
        }
        loss += (l2 * s) / per;
      }
      await param.backward(gx, x, gp);
      adam.step(param.params, gp);
      const rec = { step, loss, probability };
      history.push(rec);
      opts.onStep?.(rec);
      if (opts.onImage && (step % (opts.imageEvery ?? 10) === 0 || step === steps)) opts.onImage(step, toPictures(await param.render(x), n, w, h));
      if (opts.signal?.aborted) throw new InterruptedError(`ideal image stopped at step ${step}`);
    }
    await param.render(x);
  } finally {
    await param.release();
  }
  return { images: toPictures(x, n, w, h), pixels: x.slice(), history, seconds: (performance.now() - t0) / 1000 };
}
