import { stat } from 'node:fs/promises';
import sharp, { type OutputInfo, type Sharp } from 'sharp';
import { ImageError } from '../errors.js';
import { readFileHead } from '../util/fs.js';

/** 8-bit sRGB pixels, 3 channels interleaved (RGBRGB...), row-major, EXIF orientation already applied. */
export interface RgbImage {
  data: Buffer;
  width: number;
  height: number;
}

export interface DecodeOptions {
  /** Colour that transparent pixels are flattened onto, 0-255 sRGB. Default white. */
  background?: [number, number, number];
  /**
   * Largest accepted width x height, checked from the header before any pixel is decoded (decompression-bomb guard).
   * Default 100_000_000. `Infinity` removes the limit.
   */
  maxPixels?: number;
}

export type ImageInput = string | Buffer;

export const DEFAULT_MAX_PIXELS = 100_000_000;
const WHITE: [number, number, number] = [255, 255, 255];

/**
 * sharp's `failOn`: 'error' rejects truncated files and decoder errors but accepts files that only make the decoder
 * warn (e.g. "Corrupt JPEG data: 3 extraneous bytes before marker"), which real photo collections contain and which
 * display fine everywhere. 'truncated' behaves the same on every case we tried; 'warning' (sharp's default) rejects
 * those harmless files; 'none' silently returns half-grey pictures for truncated JPEGs and PNGs.
 */
export const FAIL_ON = 'error' as const;

/** The name an input is reported under: `opts.name`, else the path, else "<buffer>". */
export function inputName(input: ImageInput, opts?: { name?: string }): string {
  if (opts?.name) return opts.name;
  return typeof input === 'string' ? input : '<buffer>';
}

function checkedMaxPixels(maxPixels: number | undefined): number {
  const m = maxPixels ?? DEFAULT_MAX_PIXELS;
  if (m === Infinity) return 0;
  if (!(m > 0) || !Number.isFinite(m)) throw new RangeError(`maxPixels must be a positive number or Infinity, got ${m}`);
  return Math.floor(m);
}

function checkedBackground(bg: [number, number, number] | undefined): { r: number; g: number; b: number } {
  const [r, g, b] = bg ?? WHITE;
  for (const v of [r, g, b]) {
    if (!(v >= 0 && v <= 255)) throw new RangeError(`background values must be in [0, 255], got [${r}, ${g}, ${b}]`);
  }
  return { r, g, b };
}

/**
 * The one sharp pipeline every image goes through: format sniffed from content, first frame/page only, pixel limit
 * from the header, EXIF orientation applied, alpha flattened on `background`, everything (grey, CMYK, 16-bit, ICC
 * profiles) converted to 8-bit sRGB with 3 channels, raw interleaved output. Callers may add a resize.
 * Run it with `runPipeline` so failures become ImageError.
 */
export function buildPipeline(input: ImageInput, opts: DecodeOptions = {}): Sharp {
  const limit = checkedMaxPixels(opts.maxPixels);
  const background = checkedBackground(opts.background);
  return sharp(input, {
    failOn: FAIL_ON,
    limitInputPixels: limit === 0 ? false : limit,
    autoOrient: true,
    sequentialRead: true,
    pages: 1,
    page: 0,
  })
    .flatten({ background })
    .toColourspace('srgb')
    .raw({ depth: 'uchar' });
}

/**
 * Run a pipeline from `buildPipeline` to raw pixels; any failure (missing file, not an image, corrupt data, pixel
 * limit) becomes an ImageError with a short reason.
 */
export async function runPipeline(
  input: ImageInput,
  pipeline: () => Sharp,
  opts: DecodeOptions & { name?: string } = {},
): Promise<{ data: Buffer; width: number; height: number }> {
  const name = inputName(input, opts);
  if (typeof input !== 'string' && input.length === 0) throw new ImageError(name, 'empty input (0 bytes)');
  // Built outside the try: a bad option is a bug in the caller, not a problem with the image.
  const p = pipeline();
  let result: { data: Buffer; info: OutputInfo };
  try {
    result = await p.toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw await explainFailure(input, name, err, opts.maxPixels);
  }
  const { data, info } = result;
  if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
    // Should not happen given toColourspace('srgb') + flatten; guard so a surprise never becomes a garbage tensor.
    throw new ImageError(name, `decoded to ${info.channels} channels instead of 3 (unsupported colour layout)`);
  }
  return { data, width: info.width, height: info.height };
}

/** Decode any image sharp can read into 8-bit sRGB RGB pixels. Throws ImageError on any failure. */
export async function decodeImage(
  input: ImageInput,
  opts: DecodeOptions & { name?: string } = {},
): Promise<RgbImage> {
  return runPipeline(input, () => buildPipeline(input, opts), opts);
}

/**
 * Width and height of the image as displayed (EXIF orientation applied, first page only), read from the header
 * without decoding pixels: the frame that `buildPipeline(...).extract()` coordinates refer to, since the pipeline
 * orients before it extracts. Throws ImageError like `runPipeline`.
 */
export async function orientedSize(
  input: ImageInput,
  opts: DecodeOptions & { name?: string } = {},
): Promise<{ width: number; height: number }> {
  const name = inputName(input, opts);
  if (typeof input !== 'string' && input.length === 0) throw new ImageError(name, 'empty input (0 bytes)');
  const limit = checkedMaxPixels(opts.maxPixels);
  try {
    const m = await sharp(input, { failOn: FAIL_ON, limitInputPixels: limit === 0 ? false : limit, pages: 1, page: 0 }).metadata();
    return { width: m.autoOrient.width, height: m.autoOrient.height };
  } catch (err) {
    throw await explainFailure(input, name, err, opts.maxPixels);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Failure explanation

const SHARP_FORMAT_LABELS: Record<string, string> = {
  jpeg: 'JPEG',
  png: 'PNG',
  gif: 'GIF',
  webp: 'WebP',
  tiff: 'TIFF',
  heif: 'HEIF/AVIF',
  svg: 'SVG',
  pdf: 'PDF',
  jp2: 'JPEG 2000',
  jxl: 'JPEG XL',
};

/** Recognise a format from its first bytes (for messages only: sharp does the real detection). */
export function sniffFormat(head: Uint8Array): { label: string; readable: boolean } | undefined {
  const b = head;
  const ascii = (from: number, s: string) => {
    if (b.length < from + s.length) return false;
    for (let i = 0; i < s.length; i++) if (b[from + i] !== s.charCodeAt(i)) return false;
    return true;
  };
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return { label: 'JPEG', readable: true };
  if (ascii(0, '\x89PNG')) return { label: 'PNG', readable: true };
  if (ascii(0, 'GIF8')) return { label: 'GIF', readable: true };
  if (ascii(0, 'RIFF') && ascii(8, 'WEBP')) return { label: 'WebP', readable: true };
  if (ascii(0, 'II*\0') || ascii(0, 'MM\0*') || ascii(0, 'II+\0') || ascii(0, 'MM\0+')) return { label: 'TIFF', readable: true };
  if (ascii(4, 'ftypavif') || ascii(4, 'ftypavis')) return { label: 'AVIF', readable: true };
  if (ascii(4, 'ftyphei') || ascii(4, 'ftypmif1') || ascii(4, 'ftypmsf1')) return { label: 'HEIF', readable: true };
  if (ascii(0, '%PDF')) return { label: 'PDF', readable: false };
  if (ascii(0, 'BM')) return { label: 'BMP', readable: false };
  if (ascii(0, '\0\0\x01\0')) return { label: 'ICO', readable: false };
  if (ascii(0, '8BPS')) return { label: 'PSD', readable: false };
  return undefined;
}

/** "2.5e9" rather than "2500000000" or "2.5e+9". */
export function formatCount(n: number): string {
  if (n < 1e6) return String(n);
  return Number(n.toPrecision(3)).toExponential().replace('e+', 'e');
}

/** First line of a libvips/sharp message without its boilerplate prefixes. */
function cleanSharpMessage(msg: string): string {
  const line = (msg.split('\n').find((l) => l.trim() !== '') ?? msg).trim();
  return line
    .replace(/^Input (file|buffer) has corrupt header:\s*/i, '')
    .replace(/^(VipsJpeg|vipspng|VipsForeignLoad\w*|gifload\w*|webp|tiff2vips|heifload\w*|spngload\w*):\s*/i, '')
    .replace(/\s+$/, '')
    .slice(0, 120);
}

async function explainFailure(
  input: ImageInput,
  name: string,
  err: unknown,
  maxPixels: number | undefined,
): Promise<ImageError> {
  const raw = err instanceof Error ? err.message : String(err);

  // The file itself: missing, empty, a directory, unreadable.
  if (typeof input === 'string') {
    try {
      const st = await stat(input);
      if (st.isDirectory()) return new ImageError(name, 'is a directory, not an image file');
      if (!st.isFile()) return new ImageError(name, 'not a regular file');
      if (st.size === 0) return new ImageError(name, 'empty file (0 bytes)');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return new ImageError(name, 'file not found');
      return new ImageError(name, `cannot read file (${code ?? 'unknown error'})`);
    }
  }

  if (/exceeds pixel limit/i.test(raw)) {
    const limit = maxPixels ?? DEFAULT_MAX_PIXELS;
    try {
      const m = await sharp(input, { limitInputPixels: false, pages: 1 }).metadata();
      const h = m.pageHeight ?? m.height;
      return new ImageError(
        name,
        `image is ${m.width}x${h} = ${formatCount(m.width * h)} pixels, above the limit of ${formatCount(limit)} (possible decompression bomb)`,
      );
    } catch {
      return new ImageError(name, `image is above the limit of ${formatCount(limit)} pixels (possible decompression bomb)`);
    }
  }

  let head: Uint8Array;
  try {
    head = await readHeadOf(input);
  } catch (e) {
    return new ImageError(name, `cannot read file (${(e as NodeJS.ErrnoException).code ?? 'unknown error'})`);
  }
  const sniffed = sniffFormat(head);
  const detail = cleanSharpMessage(raw);

  if (/unsupported image format/i.test(raw)) {
    if (!sniffed) return new ImageError(name, 'not an image (unrecognised format)');
    if (!sniffed.readable) return new ImageError(name, `unsupported image format (${sniffed.label})`);
    // Known signature, but the decoder could not even parse the header: a cut or mangled file.
    return new ImageError(name, `truncated or corrupt ${sniffed.label}`);
  }

  // sharp knew the format; pixel data or header was bad.
  let label = sniffed?.label;
  if (!label) {
    try {
      const m = await sharp(input, { limitInputPixels: false }).metadata();
      label = SHARP_FORMAT_LABELS[m.format] ?? m.format.toUpperCase();
    } catch {
      label = 'image';
    }
  }
  if (/corrupt|premature|truncat|unexpected end|read error|invalid|not a .* file|bad |error/i.test(raw)) {
    return new ImageError(name, `truncated or corrupt ${label}${detail ? ` (${detail})` : ''}`);
  }
  return new ImageError(name, `cannot decode ${label}${detail ? `: ${detail}` : ''}`);
}

/** The first bytes of an image file or buffer. */
function readHeadOf(input: ImageInput, n = 64): Promise<Uint8Array> {
  return typeof input === 'string' ? readFileHead(input, n) : Promise.resolve(input.subarray(0, n));
}
