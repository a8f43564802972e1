import sharp, { type KernelEnum, type ResizeOptions, type Sharp } from 'sharp';
import { buildPipeline, runPipeline, type DecodeOptions, type ImageInput, type RgbImage } from './decode.js';
import type { PreprocessSpec } from './spec.js';
import { roundHalfEven } from '../util/numeric.js';

const KERNELS: Record<PreprocessSpec['interpolation'], keyof KernelEnum> = {
  nearest: 'nearest',
  bilinear: 'linear',
  bicubic: 'cubic',
  lanczos3: 'lanczos3',
};

/** Number of floats one image occupies in a tensor: 3 * h * w. */
export function tensorLength(spec: PreprocessSpec): number {
  return 3 * spec.size[0] * spec.size[1];
}

/**
 * The sharp resize for a spec. cropPct null: squash to exactly [h, w] ignoring aspect. Otherwise scale (keeping
 * aspect) so the image just covers [round(h / cropPct), round(w / cropPct)] — for a square size that is "shorter side
 * to round(size / cropPct)" — and the centre crop to [h, w] is done afterwards by `normaliseInto`.
 */
export function resizeOptions(spec: PreprocessSpec): ResizeOptions {
  const [h, w] = spec.size;
  const kernel = KERNELS[spec.interpolation];
  if (spec.cropPct === null) return { width: w, height: h, fit: 'fill', kernel };
  return { width: Math.round(w / spec.cropPct), height: Math.round(h / spec.cropPct), fit: 'outside', kernel };
}

const lutCache = new Map<string, Float32Array[]>();

/** For each tensor channel k, a 256-entry table v -> (v/255 - mean[k]) / std[k] (computed in float64, stored f32). */
function channelLuts(spec: PreprocessSpec): Float32Array[] {
  const key = `${spec.mean.join(',')}|${spec.std.join(',')}`;
  let luts = lutCache.get(key);
  if (!luts) {
    luts = [0, 1, 2].map((k) => {
      const t = new Float32Array(256);
      for (let v = 0; v < 256; v++) t[v] = (v / 255 - spec.mean[k]) / spec.std[k];
      return t;
    });
    if (lutCache.size > 64) lutCache.clear();
    lutCache.set(key, luts);
  }
  return luts;
}

/**
 * Turn interleaved 8-bit RGB pixels of size width x height (>= spec.size) into one image's tensor at `out[offset..]`:
 * centre crop to [h, w] if larger, normalise, reorder channels, lay out as NCHW or NHWC. Synchronous, no resizing.
 *
 * mean[k] and std[k] apply to tensor channel k, i.e. they are in the spec's channelOrder (for BGR, mean[0] is the
 * blue mean).
 */
export function normaliseInto(
  out: Float32Array,
  offset: number,
  data: Uint8Array,
  width: number,
  height: number,
  spec: PreprocessSpec,
): void {
  const [h, w] = spec.size;
  if (width < w || height < h) throw new RangeError(`pixels are ${width}x${height}, smaller than the ${w}x${h} tensor`);
  if (data.length < width * height * 3) throw new RangeError(`pixel buffer too short for ${width}x${height}x3`);
  const n = 3 * h * w;
  if (!Number.isInteger(offset) || offset < 0 || offset + n > out.length) {
    throw new RangeError(`tensor of ${n} floats does not fit at offset ${offset} of an array of ${out.length}`);
  }
  const left = roundHalfEven((width - w) / 2);
  const top = roundHalfEven((height - h) / 2);
  const luts = channelLuts(spec);
  // src[k]: which RGB byte feeds tensor channel k.
  const bgr = spec.channelOrder === 'BGR';
  const l0 = luts[0]!, l1 = luts[1]!, l2 = luts[2]!;
  const s0 = bgr ? 2 : 0, s2 = bgr ? 0 : 2;
  const rowStride = width * 3;
  if (spec.layout === 'NCHW') {
    const plane = h * w;
    let o = offset;
    for (let y = 0; y < h; y++) {
      let i = (top + y) * rowStride + left * 3;
      for (let x = 0; x < w; x++, i += 3, o++) {
        out[o] = l0[data[i + s0]!]!;
        out[o + plane] = l1[data[i + 1]!]!;
        out[o + 2 * plane] = l2[data[i + s2]!]!;
      }
    }
  } else {
    let o = offset;
    for (let y = 0; y < h; y++) {
      let i = (top + y) * rowStride + left * 3;
      for (let x = 0; x < w; x++, i += 3, o += 3) {
        out[o] = l0[data[i + s0]!]!;
        out[o + 1] = l1[data[i + 1]!]!;
        out[o + 2] = l2[data[i + s2]!]!;
      }
    }
  }
}

/**
 * Decode, resize and normalise one image straight into `out` at `offset` (3*h*w floats), for building batches
 * without copies. One sharp pipeline from the file/buffer, so JPEG and WebP get shrink-on-load. Throws ImageError
 * for any problem with the image itself; RangeError if the tensor does not fit.
 */
export async function loadInto(
  out: Float32Array,
  offset: number,
  input: ImageInput,
  spec: PreprocessSpec,
  opts: DecodeOptions & { name?: string } = {},
): Promise<void> {
  const n = tensorLength(spec);
  if (!Number.isInteger(offset) || offset < 0 || offset + n > out.length) {
    throw new RangeError(`tensor of ${n} floats does not fit at offset ${offset} of an array of ${out.length}`);
  }
  const resize = resizeOptions(spec);
  const px = await runPipeline(input, () => buildPipeline(input, opts).resize(resize), opts);
  normaliseInto(out, offset, px.data, px.width, px.height, spec);
}

/** Decode, resize and normalise one image into a new Float32Array of 3*h*w. */
export async function loadTensor(
  input: ImageInput,
  spec: PreprocessSpec,
  opts: DecodeOptions & { name?: string } = {},
): Promise<Float32Array> {
  const out = new Float32Array(tensorLength(spec));
  await loadInto(out, 0, input, spec, opts);
  return out;
}

/** Resize already-decoded pixels (sRGB, 3 channels) with the spec's kernel; no-op when already at the right size. */
export async function resizePixels(img: RgbImage, spec: PreprocessSpec): Promise<RgbImage> {
  const [h, w] = spec.size;
  const r = resizeOptions(spec);
  if (spec.cropPct === null && img.width === w && img.height === h) return img;
  if (spec.cropPct !== null) {
    // Same rule as sharp's fit 'outside': already covering with the short side exactly at target = nothing to do.
    const scale = Math.max(r.width! / img.width, r.height! / img.height);
    if (scale === 1) return img;
  }
  const p: Sharp = sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).resize(r).raw();
  const { data, info } = await p.toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

/**
 * Tensor for pixels that are already decoded (e.g. from decodeImage): resize like loadTensor (but from the full
 * decoded image, so JPEG shrink-on-load does not apply and values can differ very slightly), crop, normalise.
 * Async because the resize uses sharp; pixels already at the tensor size skip it.
 */
export async function pixelsToTensor(img: RgbImage, spec: PreprocessSpec): Promise<Float32Array> {
  if (img.data.length !== img.width * img.height * 3) {
    throw new RangeError(`RgbImage data has ${img.data.length} bytes, expected ${img.width}x${img.height}x3`);
  }
  const px = await resizePixels(img, spec);
  const out = new Float32Array(tensorLength(spec));
  normaliseInto(out, 0, px.data, px.width, px.height, spec);
  return out;
}

/**
 * Decode and resize `input` exactly as `loadTensor` does, returning both the model input and the 8-bit RGB pixels it
 * came from (resized and centre-cropped to the input size): what the model sees, as a picture.
 */
export async function loadImageAndTensor(
  input: ImageInput,
  spec: PreprocessSpec,
  opts: DecodeOptions & { name?: string } = {},
): Promise<{ image: RgbImage; tensor: Float32Array }> {
  const px = await runPipeline(input, () => buildPipeline(input, opts).resize(resizeOptions(spec)), opts);
  const image = centreCropPixels(px, spec);
  const tensor = new Float32Array(tensorLength(spec));
  normaliseInto(tensor, 0, image.data, image.width, image.height, spec);
  return { image, tensor };
}

/**
 * The centre crop `normaliseInto` takes from pixels at least as large as spec.size, as its own picture (same
 * offsets, half to even); returns `img` itself when it is already that size.
 */
export function centreCropPixels(img: RgbImage, spec: PreprocessSpec): RgbImage {
  const [h, w] = spec.size;
  if (img.width === w && img.height === h) return img;
  if (img.width < w || img.height < h) throw new RangeError(`pixels are ${img.width}x${img.height}, smaller than the ${w}x${h} crop`);
  const left = roundHalfEven((img.width - w) / 2);
  const top = roundHalfEven((img.height - h) / 2);
  const data = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) img.data.copy(data, y * w * 3, ((top + y) * img.width + left) * 3, ((top + y) * img.width + left + w) * 3);
  return { data, width: w, height: h };
}
