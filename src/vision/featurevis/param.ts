/**
 * Parameterisations of a batch of images: what the optimiser changes, and how that becomes [N, H, W, 3] pixels in
 * [0, 1] (Lucid/Lucent's `image()`), with the exact adjoint of every step for the gradient.
 *
 *   raw t  ──(pixel | fourier)──▶  [N,H,W,3] "colour-space" image  ──(decorrelate?)──▶ rgb logits ──σ──▶ x ∈ (0,1)
 *
 * - pixel: t is the image itself (init N(0, 0.01²)).
 * - fourier: t holds the real and imaginary parts of an rfft2 spectrum per image and channel, [N, 3, H, W/2+1, 2].
 *   Each coefficient is scaled by 1 / max(f, 1/max(H, W)) (f = √(fy² + fx²) in cycles per pixel), so every
 *   frequency has the same power at init and in Adam's steps, while natural images fall off like 1/f: the
 *   optimiser no longer favours the high frequencies that plain pixel ascent turns into adversarial noise. Then an
 *   orthonormal inverse FFT and a division by 4 (Lucid's "magic" constant).
 *     image[y, x] = Re Σ_{ky, kx < W/2+1} c_kx · s(ky, kx) · (a + ib) · e^{2πi(ky·y/H + kx·x/W)} / (√(HW) · 4)
 *   with c_kx = 2 for the columns whose mirror image (W − kx) is not stored, 1 for kx = 0 and the Nyquist column:
 *   the real part of this half sum is exactly numpy's irfft2 of the Hermitian spectrum. Its adjoint, for an image
 *   gradient g: ∂/∂a = c·s/(√(HW)·4) · Re(FFT g), ∂/∂b = c·s/(√(HW)·4) · Im(FFT g) (forward FFT, e^{−2πi…}).
 * - decorrelate: the three channels are not R, G, B but the axes of ImageNet's colour correlation (Lucid's
 *   `color_correlation_svd_sqrt`, the square root of the colour covariance via its SVD), normalised so its largest
 *   column has norm 1: rgb = M·t per pixel, adjoint Mᵀ·g. Independent steps on decorrelated axes give natural
 *   colours instead of saturated per-channel noise.
 * - σ (sigmoid) keeps the pixels in (0, 1): x = 1/(1+e^{−v}), dx/dv = x(1 − x).
 */
import { fftPlan, type FftPlan } from './fft.js';
import type { Rng } from '../../util/random.js';

export type ParamKind = 'pixel' | 'fourier';

export interface ParamOptions {
  kind: ParamKind;
  /** Decorrelated colour space (default true). */
  decorrelate?: boolean;
  /** Standard deviation of the initial raw values (default 0.01, Lucent's). */
  sd?: number;
  /** Spectrum decay power for fourier (default 1: a 1/f spectrum). */
  decay?: number;
}

export interface Parameterisation {
  readonly kind: ParamKind;
  readonly n: number;
  readonly h: number;
  readonly w: number;
  /** The raw values the optimiser changes. */
  readonly params: Float32Array;
  /** Pixels [N, H, W, 3] in (0, 1) for the current params (into `out`, also returned). */
  render(out?: Float32Array): Float32Array;
  /**
   * d loss / d params for d loss / d pixels `g` ([N, H, W, 3]); must follow a render() of the same params (the
   * sigmoid's derivative uses the pixels it made).
   */
  backward(g: Float32Array, out?: Float32Array): Float32Array;
}

/** Lucid's ImageNet colour correlation, the square root of the RGB covariance from its SVD. */
export const COLOR_CORRELATION_SVD_SQRT = [
  [0.26, 0.09, 0.02],
  [0.27, 0.0, -0.05],
  [0.27, -0.09, 0.03],
];

/** The matrix divided by the largest norm of its columns (row-major 3×3). */
export function colourMatrix(): Float64Array {
  const m = COLOR_CORRELATION_SVD_SQRT;
  let maxNorm = 0;
  for (let c = 0; c < 3; c++) maxNorm = Math.max(maxNorm, Math.hypot(m[0]![c]!, m[1]![c]!, m[2]![c]!));
  return Float64Array.from(m.flat(), (v) => v / maxNorm);
}

/** Standard normal numbers from a uniform stream (Box–Muller). */
export function gaussian(rng: Rng): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const u = Math.max(rng(), 1e-12);
    const v = rng();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

/** The colour step (rgb = M·t per pixel), in place over [.., 3] values; `transpose` applies Mᵀ (the adjoint). */
export function applyColour(m: Float64Array, v: Float32Array, transpose: boolean): void {
  for (let i = 0; i < v.length; i += 3) {
    const a = v[i]!;
    const b = v[i + 1]!;
    const c = v[i + 2]!;
    if (transpose) {
      v[i] = m[0]! * a + m[3]! * b + m[6]! * c;
      v[i + 1] = m[1]! * a + m[4]! * b + m[7]! * c;
      v[i + 2] = m[2]! * a + m[5]! * b + m[8]! * c;
    } else {
      v[i] = m[0]! * a + m[1]! * b + m[2]! * c;
      v[i + 1] = m[3]! * a + m[4]! * b + m[5]! * c;
      v[i + 2] = m[6]! * a + m[7]! * b + m[8]! * c;
    }
  }
}

/** The 1/f scale of each stored coefficient, [H, W/2+1], times c_kx / (√(HW)·4) (see the header). */
export function spectrumScale(h: number, w: number, decay = 1): Float64Array {
  const wh = Math.floor(w / 2) + 1;
  const s = new Float64Array(h * wh);
  const floor = 1 / Math.max(h, w);
  for (let ky = 0; ky < h; ky++) {
    const fy = (ky <= (h - 1) / 2 ? ky : ky - h) / h; // numpy fftfreq
    for (let kx = 0; kx < wh; kx++) {
      const fx = kx / w;
      const f = Math.sqrt(fy * fy + fx * fx);
      const c = kx === 0 || (w % 2 === 0 && kx === w / 2) ? 1 : 2;
      s[ky * wh + kx] = (c / Math.max(f, floor) ** decay) / (Math.sqrt(h * w) * 4);
    }
  }
  return s;
}

/**
 * The linear Fourier map t → image (before colour and sigmoid) and its adjoint, for one [H, W] channel at a time.
 * Spectrum layout per channel: [H, W/2+1, 2] (re, im).
 */
export class FourierBasis {
  readonly wh: number;
  private readonly scale: Float64Array;
  private readonly rows: FftPlan;
  private readonly cols: FftPlan;
  private readonly re: Float64Array;
  private readonly im: Float64Array;
  private readonly rowRe: Float64Array;
  private readonly rowIm: Float64Array;
  constructor(readonly h: number, readonly w: number, decay = 1) {
    this.wh = Math.floor(w / 2) + 1;
    this.scale = spectrumScale(h, w, decay);
    this.rows = fftPlan(w);
    this.cols = fftPlan(h);
    this.re = new Float64Array(h * w);
    this.im = new Float64Array(h * w);
    this.rowRe = new Float64Array(w);
    this.rowIm = new Float64Array(w);
  }

  /** Spectrum (at `so`, [H, wh, 2]) → real image channel written to img[io + (y·W + x)·stride]. */
  synthesise(spec: Float32Array, so: number, img: Float32Array, io: number, stride: number): void {
    const { h, w, wh, re, im, scale, rowRe, rowIm } = this;
    for (let ky = 0; ky < h; ky++)
      for (let kx = 0; kx < wh; kx++) {
        const s = scale[ky * wh + kx]!;
        const k = so + (ky * wh + kx) * 2;
        re[ky * w + kx] = spec[k]! * s;
        im[ky * w + kx] = spec[k + 1]! * s;
      }
    // Inverse along y for the stored columns only (the others are zero).
    for (let kx = 0; kx < wh; kx++) this.cols.transform(re, im, kx, w, true);
    // Along x: Re Σ_{kx<wh} R·e^{iθ} is the inverse DFT of the Hermitian row H (H_0 = Re R_0, H_k = R_k/2 and
    // H_{W−k} = conj(R_k)/2 inside, H_{W/2} = Re R_{W/2}), a real signal, so two rows go through one complex
    // transform: IFFT(H1 + i·H2) = x1 + i·x2.
    const nyq = w % 2 === 0 ? w / 2 : -1;
    for (let y = 0; y < h; y += 2) {
      const y2 = y + 1 < h ? y + 1 : -1;
      rowRe.fill(0);
      rowIm.fill(0);
      for (let k = 0; k < wh; k++) {
        const ar = re[y * w + k]!;
        const ai = im[y * w + k]!;
        const br = y2 >= 0 ? re[y2 * w + k]! : 0;
        const bi = y2 >= 0 ? im[y2 * w + k]! : 0;
        if (k === 0 || k === nyq) {
          rowRe[k] = ar;
          rowIm[k] = br;
        } else {
          // H1 + i·H2 at k: (a + i·b)/2; at W − k: (conj a + i·conj b)/2
          rowRe[k] = (ar - bi) / 2;
          rowIm[k] = (ai + br) / 2;
          rowRe[w - k] = (ar + bi) / 2;
          rowIm[w - k] = (br - ai) / 2;
        }
      }
      this.rows.transform(rowRe, rowIm, 0, 1, true);
      for (let x = 0; x < w; x++) {
        img[io + (y * w + x) * stride] = rowRe[x]!;
        if (y2 >= 0) img[io + (y2 * w + x) * stride] = rowIm[x]!;
      }
    }
  }

  /** The adjoint: an image-channel gradient → the spectrum's gradient (written at `so`). */
  analyse(img: Float32Array, io: number, stride: number, spec: Float32Array, so: number): void {
    const { h, w, wh, re, im, scale, rowRe, rowIm } = this;
    // Forward along x, two real rows per complex transform: Z = FFT(g1 + i·g2), G1[k] = (Z[k] + conj Z[−k])/2,
    // G2[k] = (Z[k] − conj Z[−k])/(2i).
    for (let y = 0; y < h; y += 2) {
      const y2 = y + 1 < h ? y + 1 : -1;
      for (let x = 0; x < w; x++) {
        rowRe[x] = img[io + (y * w + x) * stride]!;
        rowIm[x] = y2 >= 0 ? img[io + (y2 * w + x) * stride]! : 0;
      }
      this.rows.transform(rowRe, rowIm, 0, 1, false);
      for (let k = 0; k < wh; k++) {
        const m = (w - k) % w;
        const zr = rowRe[k]!;
        const zi = rowIm[k]!;
        const cr = rowRe[m]!;
        const ci = -rowIm[m]!;
        re[y * w + k] = (zr + cr) / 2;
        im[y * w + k] = (zi + ci) / 2;
        if (y2 >= 0) {
          re[y2 * w + k] = (zi - ci) / 2;
          im[y2 * w + k] = -(zr - cr) / 2;
        }
      }
    }
    for (let kx = 0; kx < wh; kx++) this.cols.transform(re, im, kx, w, false);
    for (let ky = 0; ky < h; ky++)
      for (let kx = 0; kx < wh; kx++) {
        const s = scale[ky * wh + kx]!;
        const k = so + (ky * wh + kx) * 2;
        spec[k] = re[ky * w + kx]! * s;
        spec[k + 1] = im[ky * w + kx]! * s;
      }
  }
}

/** The raw values' count for n images of h × w (a spectrum per channel for fourier, the pixels for pixel). */
export function paramCount(n: number, h: number, w: number, kind: ParamKind): number {
  return kind === 'fourier' ? n * 3 * h * (Math.floor(w / 2) + 1) * 2 : n * h * w * 3;
}

/** Initial raw values: N(0, sd²) from `rng` (sd default 0.01, Lucent's); every parameterisation draws them so. */
export function initialParams(n: number, h: number, w: number, opts: ParamOptions, rng: Rng): Float32Array {
  const normal = gaussian(rng);
  const sd = opts.sd ?? 0.01;
  return Float32Array.from({ length: paramCount(n, h, w, opts.kind) }, () => normal() * sd);
}

export function makeParam(n: number, h: number, w: number, opts: ParamOptions, rng: Rng): Parameterisation {
  const decorrelate = opts.decorrelate ?? true;
  const M = colourMatrix();
  const per = h * w * 3;
  const basis = opts.kind === 'fourier' ? new FourierBasis(h, w, opts.decay ?? 1) : undefined;
  const chanLen = basis ? h * basis.wh * 2 : 0;
  const params = initialParams(n, h, w, opts, rng);
  let x: Float32Array = new Float32Array(n * per);
  const tmp = new Float32Array(n * per);

  return {
    kind: opts.kind,
    n,
    h,
    w,
    params,
    render(out) {
      x = out ?? x;
      if (basis) for (let b = 0; b < n; b++) for (let c = 0; c < 3; c++) basis.synthesise(params, (b * 3 + c) * chanLen, x, b * per + c, 3);
      else x.set(params);
      if (decorrelate) applyColour(M, x, false);
      for (let i = 0; i < x.length; i++) x[i] = 1 / (1 + Math.exp(-x[i]!));
      return x;
    },
    backward(g, out) {
      const gp = out ?? new Float32Array(params.length);
      for (let i = 0; i < tmp.length; i++) tmp[i] = g[i]! * x[i]! * (1 - x[i]!);
      if (decorrelate) applyColour(M, tmp, true);
      if (basis) for (let b = 0; b < n; b++) for (let c = 0; c < 3; c++) basis.analyse(tmp, b * per + c, 3, gp, (b * 3 + c) * chanLen);
      else gp.set(tmp);
      return gp;
    },
  };
}
