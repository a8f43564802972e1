/**
 * Random transforms applied to the picture at every step (transformation robustness): the optimiser only keeps
 * what the network still sees after the picture is padded, shifted, scaled and rotated a little, which removes the
 * pixel-exact patterns that fool only one network (Lucid's `standard_transforms`: pad 12, jitter 8, scale
 * 0.9–1.1, rotate ±10°, jitter 4).
 *
 * Each transform is an affine map of pixel coordinates: given the canvas it receives (a size, in pixels) it draws
 * its random parameters and returns the new canvas size and the map from new-canvas coordinates to old-canvas
 * coordinates. The chain, ending with a resize to the model's input size, composes into one 2×3 matrix A from
 * output pixel (u, v) to source-image coordinates, and one bilinear sample makes the view:
 *
 *   view[v, u] = Σ_taps w_tap · src[tap]   (src outside the image = the fill value, grey 0.5 by default)
 *
 * The view is linear in the source pixels (plus a constant from the fill), so its adjoint is the scatter of the
 * view's gradient to the same taps with the same weights — exact, which the tests check with dot products.
 * Coordinates are pixel centres: pixel i covers [i − 0.5, i + 0.5].
 */
import type { Rng } from '../../util/random.js';

/** [a, b, c, d, e, f]: (x, y) ↦ (a·x + b·y + c, d·x + e·y + f). */
export type Affine = [number, number, number, number, number, number];

export const IDENTITY: Affine = [1, 0, 0, 0, 1, 0];

/** p ↦ outer(inner(p)). */
export function compose(outer: Affine, inner: Affine): Affine {
  const [a, b, c, d, e, f] = outer;
  const [A, B, C, D, E, F] = inner;
  return [a * A + b * D, a * B + b * E, a * C + b * F + c, d * A + e * D, d * B + e * E, d * C + e * F + f];
}

export interface Canvas { w: number; h: number }

/** One transform: from the canvas it gets, the canvas it makes and the map new → old coordinates. */
export interface Transform {
  readonly name: string;
  apply(canvas: Canvas, rng: Rng): { canvas: Canvas; map: Affine };
}

const pick = <T>(list: readonly T[], rng: Rng): T => list[Math.min(list.length - 1, Math.floor(rng() * list.length))]!;

/** Pad by `p` pixels on every side (the new border shows the fill value). */
export function pad(p: number): Transform {
  return { name: `pad(${p})`, apply: (c) => ({ canvas: { w: c.w + 2 * p, h: c.h + 2 * p }, map: [1, 0, -p, 0, 1, -p] }) };
}

/** A random crop `d` pixels smaller, at an integer offset in [0, d] on each axis (Lucent's jitter). */
export function jitter(d: number): Transform {
  return {
    name: `jitter(${d})`,
    apply: (c, rng) => {
      const dx = Math.floor(rng() * (d + 1));
      const dy = Math.floor(rng() * (d + 1));
      return { canvas: { w: c.w - d, h: c.h - d }, map: [1, 0, dx, 0, 1, dy] };
    },
  };
}

/** Resize the canvas by a factor drawn from `factors`: new (u + ½) = s·(old + ½). */
export function randomScale(factors: readonly number[]): Transform {
  return {
    name: `scale(${factors[0]}..${factors.at(-1)})`,
    apply: (c, rng) => {
      const s = pick(factors, rng);
      return { canvas: { w: c.w * s, h: c.h * s }, map: [1 / s, 0, 0.5 / s - 0.5, 0, 1 / s, 0.5 / s - 0.5] };
    },
  };
}

/** Rotate about the canvas centre by an angle (degrees) drawn from `degrees`; the canvas keeps its size. */
export function randomRotate(degrees: readonly number[]): Transform {
  return {
    name: `rotate(${Math.min(...degrees)}..${Math.max(...degrees)})`,
    apply: (c, rng) => {
      const t = (pick(degrees, rng) * Math.PI) / 180;
      const cx = (c.w - 1) / 2;
      const cy = (c.h - 1) / 2;
      const cos = Math.cos(t);
      const sin = Math.sin(t);
      // old = R(−t)·(new − centre) + centre
      return { canvas: c, map: [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy] };
    },
  };
}

/** Lucent's standard_transforms, lengths scaled to the image size (its values are for 224 pixels). */
export function standardTransforms(size = 224): Transform[] {
  const k = size / 224;
  const px = (v: number) => Math.max(0, Math.round(v * k));
  return [
    pad(px(12)),
    jitter(px(8)),
    randomScale(Array.from({ length: 11 }, (_, i) => 1 + (i - 5) / 50)),
    randomRotate([...Array.from({ length: 21 }, (_, i) => i - 10), 0, 0, 0, 0, 0]),
    jitter(px(4)),
  ];
}

/** A view: the composed map from output pixels (outW × outH) to source-image coordinates. */
export interface View { map: Affine; outW: number; outH: number }

/** The random draws of one step: the composed map from the last canvas to the source image, and that canvas. */
export interface Chain { map: Affine; canvas: Canvas }

export function drawChain(transforms: readonly Transform[], src: Canvas, rng: Rng): Chain {
  let canvas = src;
  let map = IDENTITY;
  for (const t of transforms) {
    const r = t.apply(canvas, rng);
    map = compose(map, r.map);
    canvas = r.canvas;
  }
  return { map, canvas };
}

/** The chain's last canvas resized to out (a model's input size): output (u + ½)·(canvas / out) = canvas (u + ½). */
export function viewFor(chain: Chain, out: Canvas): View {
  const sx = chain.canvas.w / out.w;
  const sy = chain.canvas.h / out.h;
  return { map: compose(chain.map, [sx, 0, 0.5 * sx - 0.5, 0, sy, 0.5 * sy - 0.5]), outW: out.w, outH: out.h };
}

/** Draw one view: run the chain from the source image's canvas, then resize its last canvas to `out`. */
export function drawView(transforms: readonly Transform[], src: Canvas, out: Canvas, rng: Rng): View {
  return viewFor(drawChain(transforms, src, rng), out);
}

/**
 * Bilinear sampling of `n` images [n, h, w, 3] through a view, and its adjoint. Taps outside the source read `fill`
 * (a constant: it does not take part in the adjoint).
 */
export class Sampler {
  private readonly idx: Int32Array; // per output pixel, 4 source pixel indices (−1: outside)
  private readonly wts: Float32Array;
  constructor(readonly view: View, readonly w: number, readonly h: number, readonly fill = 0.5) {
    const { outW, outH, map } = view;
    const [a, b, c, d, e, f] = map;
    this.idx = new Int32Array(outW * outH * 4);
    this.wts = new Float32Array(outW * outH * 4);
    for (let v = 0; v < outH; v++)
      for (let u = 0; u < outW; u++) {
        const x = a * u + b * v + c;
        const y = d * u + e * v + f;
        const x0 = Math.floor(x);
        const y0 = Math.floor(y);
        const fx = x - x0;
        const fy = y - y0;
        const o = (v * outW + u) * 4;
        const inX0 = x0 >= 0 && x0 < w;
        const inX1 = x0 + 1 >= 0 && x0 + 1 < w;
        const inY0 = y0 >= 0 && y0 < h;
        const inY1 = y0 + 1 >= 0 && y0 + 1 < h;
        this.idx[o] = inX0 && inY0 ? y0 * w + x0 : -1;
        this.idx[o + 1] = inX1 && inY0 ? y0 * w + x0 + 1 : -1;
        this.idx[o + 2] = inX0 && inY1 ? (y0 + 1) * w + x0 : -1;
        this.idx[o + 3] = inX1 && inY1 ? (y0 + 1) * w + x0 + 1 : -1;
        this.wts[o] = (1 - fx) * (1 - fy);
        this.wts[o + 1] = fx * (1 - fy);
        this.wts[o + 2] = (1 - fx) * fy;
        this.wts[o + 3] = fx * fy;
      }
  }

  /** view = sample(src); src [n, h, w, 3] → out [n, outH, outW, 3]. */
  forward(src: Float32Array, n: number, out = new Float32Array(n * this.view.outW * this.view.outH * 3)): Float32Array {
    const P = this.view.outW * this.view.outH;
    const S = this.w * this.h * 3;
    for (let b = 0; b < n; b++)
      for (let p = 0; p < P; p++) {
        let r = 0;
        let g = 0;
        let bl = 0;
        for (let k = 0; k < 4; k++) {
          const i = this.idx[p * 4 + k]!;
          const wt = this.wts[p * 4 + k]!;
          if (i < 0) {
            r += wt * this.fill;
            g += wt * this.fill;
            bl += wt * this.fill;
          } else {
            const s = b * S + i * 3;
            r += wt * src[s]!;
            g += wt * src[s + 1]!;
            bl += wt * src[s + 2]!;
          }
        }
        const o = (b * P + p) * 3;
        out[o] = r;
        out[o + 1] = g;
        out[o + 2] = bl;
      }
    return out;
  }

  /** The adjoint: a view gradient [n, outH, outW, 3] scattered back to source pixels, added into `into`. */
  adjointInto(g: Float32Array, n: number, into: Float32Array): Float32Array {
    const P = this.view.outW * this.view.outH;
    const S = this.w * this.h * 3;
    for (let b = 0; b < n; b++)
      for (let p = 0; p < P; p++) {
        const o = (b * P + p) * 3;
        for (let k = 0; k < 4; k++) {
          const i = this.idx[p * 4 + k]!;
          if (i < 0) continue;
          const wt = this.wts[p * 4 + k]!;
          const s = b * S + i * 3;
          into[s]! += wt * g[o]!;
          into[s + 1]! += wt * g[o + 1]!;
          into[s + 2]! += wt * g[o + 2]!;
        }
      }
    return into;
  }
}
