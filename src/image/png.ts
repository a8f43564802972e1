import sharp from 'sharp';
import { writeFileAtomic } from '../util/fs.js';
import type { RgbImage } from './decode.js';

/** Raw 8-bit pixels with an explicit channel count: 1 grey, 3 RGB, 4 RGBA (interleaved, row-major). */
export interface RawPixels {
  data: Buffer;
  width: number;
  height: number;
  channels: 1 | 3 | 4;
}

/** Encode 8-bit pixels (an RgbImage, or raw pixels with 1, 3 or 4 channels) as a PNG. */
export async function encodePng(img: RgbImage | RawPixels): Promise<Buffer> {
  const channels = 'channels' in img ? img.channels : 3;
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new RangeError(`bad image size ${width}x${height}`);
  }
  if (data.length !== width * height * channels) {
    throw new RangeError(`pixel buffer has ${data.length} bytes, expected ${width}x${height}x${channels}`);
  }
  let p = sharp(data, { raw: { width, height, channels } });
  // Raw 1-channel input would otherwise be written as RGB.
  if (channels === 1) p = p.toColourspace('b-w');
  return p.png().toBuffer();
}

/** Encode as PNG and write atomically (readers never see a half-written file). */
export async function writePng(img: RgbImage | RawPixels, path: string): Promise<void> {
  await writeFileAtomic(path, await encodePng(img));
}
