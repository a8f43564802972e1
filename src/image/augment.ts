/**
 * Training-time augmentation: random resized crop, horizontal flip, small colour jitter.
 *
 * A view is described by plain numbers (`AugmentParams`) drawn from a stream that depends only on (seed, item key,
 * view index), so view k of an image is the same in every run, in any batch order, whatever the other items are, and
 * its parameters can key a feature cache. Applying a view is a sharp pipeline (decode, orient, crop, resize) followed
 * by one pass in JS over the 8-bit pixels (flip and jitter), then the same `normaliseInto` as plain loading.
 *
 * Views are for training only: with a crop they are not the plain tensor (no centre crop, other resampling), so the
 * validation set must go through `loadInto`, never through here.
 */
import { GraftError } from '../errors.js';
import { deriveSeed, hashString, mulberry32 } from '../util/random.js';
import { buildPipeline, orientedSize, runPipeline, type DecodeOptions, type ImageInput, type RgbImage } from './decode.js';
import { centreCropPixels, normaliseInto, resizeOptions, tensorLength } from './preprocess.js';
import type { PreprocessSpec } from './spec.js';

export interface AugmentOptions {
  /**
   * Random resized crop (torchvision RandomResizedCrop semantics): the crop covers a fraction in `scale` of the image
   * area, its width/height in pixels is in `ratio` (drawn log-uniformly), and it is resized to exactly the model
   * input size, aspect ignored. `false`: the spec's own resize and centre crop, as at validation.
   */
  crop: false | { scale: [number, number]; ratio: [number, number] };
  /** Probability of a horizontal flip; 0 turns it off. */
  flip: number;
  /** Jitter strengths: each factor is drawn uniformly from [1 - s, 1 + s]; 0 turns that one off. */
  brightness: number;
  contrast: number;
  saturation: number;
}

/**
 * fastai's min_scale 0.35 rather than torchvision's 0.08: at 0.08 most crops of a pet photo miss the animal, which
 * a few fine-tuned blocks cannot learn from; torchvision's ratio; jitter small enough to keep colours plausible.
 */
export const DEFAULT_AUGMENT: AugmentOptions = Object.freeze({
  crop: Object.freeze({ scale: [0.35, 1] as [number, number], ratio: [3 / 4, 4 / 3] as [number, number] }),
  flip: 0.5,
  brightness: 0.2,
  contrast: 0.2,
  saturation: 0.2,
}) as AugmentOptions;

export type AugmentOptionsInput = Partial<Omit<AugmentOptions, 'crop'>> & {
  crop?: boolean | { scale?: [number, number]; ratio?: [number, number] };
};

/** Defaults filled in and every value checked; GraftError names the bad option. */
export function resolveAugmentOptions(input: AugmentOptionsInput = {}): AugmentOptions {
  const d = DEFAULT_AUGMENT;
  const defCrop = d.crop as Exclude<AugmentOptions['crop'], false>;
  let crop: AugmentOptions['crop'];
  if (input.crop === false) crop = false;
  else {
    const c = input.crop === true || input.crop === undefined ? {} : input.crop;
    crop = { scale: [...(c.scale ?? defCrop.scale)] as [number, number], ratio: [...(c.ratio ?? defCrop.ratio)] as [number, number] };
    const [s0, s1] = crop.scale;
    if (!(s0 > 0 && s0 <= s1 && s1 <= 1)) throw new GraftError(`augment crop scale must satisfy 0 < min <= max <= 1 (got [${s0}, ${s1}])`);
    const [r0, r1] = crop.ratio;
    if (!(r0 > 0 && r0 <= r1 && Number.isFinite(r1))) throw new GraftError(`augment crop ratio must satisfy 0 < min <= max (got [${r0}, ${r1}])`);
  }
  const flip = input.flip ?? d.flip;
  if (!(flip >= 0 && flip <= 1)) throw new GraftError(`augment flip probability must be in [0, 1] (got ${flip})`);
  const jitter = (name: 'brightness' | 'contrast' | 'saturation'): number => {
    const v = input[name] ?? d[name];
    if (!(v >= 0 && v < 1)) throw new GraftError(`augment ${name} must be in [0, 1) (got ${v})`);
    return v;
  };
  return { crop, flip, brightness: jitter('brightness'), contrast: jitter('contrast'), saturation: jitter('saturation') };
}

/** Nothing at all: views equal the plain tensor. */
export const NO_AUGMENT: AugmentOptions = Object.freeze({ crop: false, flip: 0, brightness: 0, contrast: 0, saturation: 0 }) as AugmentOptions;

/**
 * One concrete view; plain JSON. The crop is stored as what was drawn (area fraction, pixel aspect w/h, position of
 * the box within the free space, 0 = left/top, 1 = right/bottom) rather than as a box in fractions of the image:
 * the drawn aspect ratio is in pixels, so the box depends on the image's own aspect and is resolved per image by
 * `cropBox`. Factors are 1 when unchanged.
 */
export interface AugmentParams {
  crop: { area: number; ratio: number; x: number; y: number } | null;
  flip: boolean;
  brightness: number;
  contrast: number;
  saturation: number;
}

/** Separates augmentation draws from graft's other seeded streams (init, shuffling, dropout use small numbers). */
const AUGMENT_STREAM = 0x61756731; // "aug1"

// Quantised so that the params survive JSON exactly and the cache key names exactly what is applied.
const q = (x: number) => Math.round(x * 1e6) / 1e6;

/**
 * The parameters of view `view` of the item named `key`, a pure function of (seed, key, view, opts). `key` is any
 * string that identifies the item across runs; graft's trainer should pass the path relative to the dataset root so
 * that moving the dataset keeps the views. The eight uniforms are always drawn in the same order, so turning one
 * augmentation off does not change the others.
 */
export function sampleAugment(seed: number, key: string, view: number, opts: AugmentOptions): AugmentParams {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer (got ${seed})`);
  if (!Number.isInteger(view) || view < 0) throw new RangeError(`view must be a non-negative integer (got ${view})`);
  // Both halves of the seed, so seeds that differ only above bit 32 do not collide.
  const base = deriveSeed(deriveSeed(seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0), AUGMENT_STREAM);
  const rng = mulberry32(deriveSeed(deriveSeed(base, hashString(key)), view));
  const [uArea, uRatio, uX, uY, uFlip, uB, uC, uS] = Array.from({ length: 8 }, rng) as number[];
  let crop: AugmentParams['crop'] = null;
  if (opts.crop) {
    const [s0, s1] = opts.crop.scale;
    const [lr0, lr1] = opts.crop.ratio.map(Math.log) as [number, number];
    crop = { area: q(s0 + (s1 - s0) * uArea!), ratio: q(Math.exp(lr0 + (lr1 - lr0) * uRatio!)), x: q(uX!), y: q(uY!) };
  }
  const factor = (s: number, u: number) => (s > 0 ? q(1 - s + 2 * s * u) : 1);
  return {
    crop,
    flip: uFlip! < opts.flip,
    brightness: factor(opts.brightness, uB!),
    contrast: factor(opts.contrast, uC!),
    saturation: factor(opts.saturation, uS!),
  };
}

/** `k` views for each key: result[i][v] = sampleAugment(seed, keys[i], v, opts). */
export function augmentedViews(keys: readonly string[], k: number, seed: number, opts: AugmentOptions): AugmentParams[][] {
  if (!Number.isInteger(k) || k < 1) throw new GraftError(`the number of augmented views must be a positive integer (got ${k})`);
  return keys.map((key) => Array.from({ length: k }, (_, v) => sampleAugment(seed, key, v, opts)));
}

/**
 * Views flattened for `extractFeatures`: `paths[j]` with `augment[j]` is view `view[j]` of item `item[j]`, items in
 * order, views of one item adjacent. `ExtractResult.kept` indexes these arrays.
 */
export function flattenViews(
  paths: readonly string[],
  views: readonly (readonly AugmentParams[])[],
): { paths: string[]; augment: AugmentParams[]; item: number[]; view: number[] } {
  if (views.length !== paths.length) throw new RangeError(`${views.length} view lists for ${paths.length} paths`);
  const out = { paths: [] as string[], augment: [] as AugmentParams[], item: [] as number[], view: [] as number[] };
  views.forEach((vs, i) =>
    vs.forEach((p, v) => {
      out.paths.push(paths[i]!);
      out.augment.push(p);
      out.item.push(i);
      out.view.push(v);
    }),
  );
  return out;
}

/** One line for logs and run configs. */
export function describeAugment(opts: AugmentOptions): string {
  const f = (x: number) => String(Number(x.toFixed(3)));
  const parts: string[] = [];
  if (opts.crop) parts.push(`random resized crop (scale ${f(opts.crop.scale[0])}-${f(opts.crop.scale[1])}, ratio ${f(opts.crop.ratio[0])}-${f(opts.crop.ratio[1])})`);
  if (opts.flip > 0) parts.push(`horizontal flip (p=${f(opts.flip)})`);
  const jit = (['brightness', 'contrast', 'saturation'] as const).filter((k) => opts[k] > 0).map((k) => `${k} ±${f(opts[k])}`);
  if (jit.length) parts.push(`colour jitter (${jit.join(', ')})`);
  return parts.length ? parts.join(', ') : 'none';
}

/** Bump when the way params are applied changes, so cached views made the old way miss. */
const APPLY_VERSION = 1;

/** A stable string naming a view, for cache keys: fixed field order, params already quantised. */
export function augmentKey(p: AugmentParams): string {
  const c = p.crop ? `${p.crop.area},${p.crop.ratio},${p.crop.x},${p.crop.y}` : 'none';
  return `aug${APPLY_VERSION}:crop=${c};flip=${p.flip ? 1 : 0};b=${p.brightness};c=${p.contrast};s=${p.saturation}`;
}

/**
 * The crop box in pixels of a `width` x `height` (oriented) image. When the drawn box does not fit, the side that
 * overflows is clamped and the other grows to keep the area (torchvision re-draws up to ten times instead, which
 * would make the box depend on more than these params). Always at least 1x1 and inside the image.
 */
export function cropBox(
  crop: NonNullable<AugmentParams['crop']>,
  width: number,
  height: number,
): { left: number; top: number; width: number; height: number } {
  const area = crop.area * width * height;
  let w = Math.sqrt(area * crop.ratio);
  let h = Math.sqrt(area / crop.ratio);
  if (w > width) {
    w = width;
    h = area / width;
  } else if (h > height) {
    h = height;
    w = area / height;
  }
  const cw = Math.min(width, Math.max(1, Math.round(w)));
  const ch = Math.min(height, Math.max(1, Math.round(h)));
  return { left: Math.round(crop.x * (width - cw)), top: Math.round(crop.y * (height - ch)), width: cw, height: ch };
}

// ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses for contrast and saturation.
const LR = 0.2989, LG = 0.587, LB = 0.114;
const clamp255 = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);

/**
 * Flip and colour jitter on 8-bit RGB pixels, torchvision's definitions in a fixed order (brightness, contrast,
 * saturation; torchvision shuffles the order per call, which would be one more random draw for little gain):
 * brightness x·b; contrast blends with the mean grey of the view; saturation blends with each pixel's grey. Done in
 * floats, clamped to [0, 255] after each step, rounded once at the end. Returns `img` itself when the view changes
 * nothing here.
 */
export function applyPixelAugment(img: RgbImage, p: Pick<AugmentParams, 'flip' | 'brightness' | 'contrast' | 'saturation'>): RgbImage {
  const { width, height } = img;
  const jitter = p.brightness !== 1 || p.contrast !== 1 || p.saturation !== 1;
  if (!p.flip && !jitter) return img;
  const n = width * height * 3;
  const out = Buffer.alloc(n);
  const src = img.data;
  if (!jitter) {
    for (let y = 0; y < height; y++) {
      const row = y * width * 3;
      for (let x = 0, xs = width - 1; x < width; x++, xs--) {
        const o = row + x * 3, i = row + xs * 3;
        out[o] = src[i]!;
        out[o + 1] = src[i + 1]!;
        out[o + 2] = src[i + 2]!;
      }
    }
    return { data: out, width, height };
  }
  // Two passes over the source, no float copy: the first only sums the grey that contrast needs (brightness applied),
  // the second recomputes brightness and applies everything, writing flipped.
  const b = p.brightness, c = p.contrast, s = p.saturation;
  let grey = 0;
  if (c !== 1) {
    for (let i = 0; i < n; i += 3) grey += LR * clamp255(src[i]! * b) + LG * clamp255(src[i + 1]! * b) + LB * clamp255(src[i + 2]! * b);
  }
  const m = ((1 - c) * grey) / (width * height);
  for (let y = 0; y < height; y++) {
    const row = y * width * 3;
    for (let x = 0; x < width; x++) {
      const o = row + x * 3;
      const i = p.flip ? row + (width - 1 - x) * 3 : o;
      let r = clamp255(src[i]! * b), g = clamp255(src[i + 1]! * b), bl = clamp255(src[i + 2]! * b);
      if (c !== 1) {
        r = clamp255(c * r + m);
        g = clamp255(c * g + m);
        bl = clamp255(c * bl + m);
      }
      if (s !== 1) {
        const k = (1 - s) * (LR * r + LG * g + LB * bl);
        r = clamp255(s * r + k);
        g = clamp255(s * g + k);
        bl = clamp255(s * bl + k);
      }
      // Round half up; values are already in [0, 255].
      out[o] = (r + 0.5) | 0;
      out[o + 1] = (g + 0.5) | 0;
      out[o + 2] = (bl + 0.5) | 0;
    }
  }
  return { data: out, width, height };
}

/**
 * The 8-bit picture of one view at exactly the model input size. With a crop: the box (in displayed orientation,
 * from the header's size) is cut out by sharp before resizing straight to spec.size with the spec's kernel. Without:
 * the spec's resize and centre crop, as `loadInto` does. Then flip and jitter. Throws ImageError for bad images.
 */
export async function loadAugmentedPixels(
  input: ImageInput,
  spec: PreprocessSpec,
  params: AugmentParams,
  opts: DecodeOptions & { name?: string } = {},
): Promise<RgbImage> {
  const [h, w] = spec.size;
  let px: RgbImage;
  if (params.crop) {
    const size = await orientedSize(input, opts);
    const box = cropBox(params.crop, size.width, size.height);
    const kernel = resizeOptions(spec).kernel;
    px = await runPipeline(input, () => buildPipeline(input, opts).extract(box).resize({ width: w, height: h, fit: 'fill', kernel }), opts);
  } else {
    px = centreCropPixels(await runPipeline(input, () => buildPipeline(input, opts).resize(resizeOptions(spec)), opts), spec);
  }
  return applyPixelAugment(px, params);
}

/**
 * `loadInto` for one augmented view: its tensor (3*h*w floats) written at `out[offset..]`, normalised and laid out
 * by `normaliseInto`. Throws ImageError for bad images, RangeError if the tensor does not fit.
 */
export async function loadAugmentedInto(
  out: Float32Array,
  offset: number,
  input: ImageInput,
  spec: PreprocessSpec,
  params: AugmentParams,
  opts: DecodeOptions & { name?: string } = {},
): Promise<void> {
  const n = tensorLength(spec);
  if (!Number.isInteger(offset) || offset < 0 || offset + n > out.length) {
    throw new RangeError(`tensor of ${n} floats does not fit at offset ${offset} of an array of ${out.length}`);
  }
  const px = await loadAugmentedPixels(input, spec, params, opts);
  normaliseInto(out, offset, px.data, px.width, px.height, spec);
}
