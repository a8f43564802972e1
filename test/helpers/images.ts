import { writeFile } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';

export type Rgb = [number, number, number];

/** A noisy image of one colour (seeded noise so runs repeat), as a sharp pipeline to encode any way. */
export function colourImage(rgb: Rgb, width = 40, height = 30, seed = 1): sharp.Sharp {
  const data = Buffer.alloc(width * height * 3);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    data[i] = Math.max(0, Math.min(255, rgb[i % 3]! + ((s >> 16) % 31) - 15));
  }
  return sharp(data, { raw: { width, height, channels: 3 } });
}

function chunk(type: string, body: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  const tb = Buffer.concat([Buffer.from(type, 'latin1'), body]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(tb) >>> 0);
  return Buffer.concat([len, tb, crc]);
}

/** A PNG whose header claims `width` x `height` pixels (a decompression bomb's shape) with almost no data. */
export function hugePngHeader(width = 100_000, height = 100_000): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, chunk('IHDR', ihdr), chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), chunk('IEND', Buffer.alloc(0))]);
}

/**
 * The awkward files a real photo folder holds, all of colour `rgb` where they are readable:
 * readable: a PNG and a GIF named .jpg, a CMYK JPEG, a 16-bit PNG, an EXIF-rotated JPEG, a 1x1 PNG, an RGBA PNG;
 * unreadable: a zero-byte JPEG, a truncated JPEG, a text file named .jpg, a huge-dimension PNG.
 * Returns the names of each group.
 */
export async function writeAwkwardFiles(dir: string, rgb: Rgb): Promise<{ readable: string[]; unreadable: string[] }> {
  const jpeg = await colourImage(rgb, 64, 48).jpeg().toBuffer();
  const files: Record<string, Buffer | string> = {
    'png-named.jpg': await colourImage(rgb).png().toBuffer(),
    'gif-named.jpg': await colourImage(rgb).gif().toBuffer(),
    'cmyk.jpg': await colourImage(rgb).toColourspace('cmyk').jpeg().toBuffer(),
    '16bit.png': await colourImage(rgb).toColourspace('rgb16').png().toBuffer(),
    'exif-rotated.jpg': await colourImage(rgb, 60, 20).jpeg().withMetadata({ orientation: 6 }).toBuffer(),
    'one-pixel.png': await sharp({ create: { width: 1, height: 1, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }).png().toBuffer(),
    'alpha.png': await colourImage(rgb).ensureAlpha(0.9).png().toBuffer(),
    'zero-bytes.jpg': Buffer.alloc(0),
    'truncated.jpg': jpeg.subarray(0, Math.floor(jpeg.length / 2)),
    'text.jpg': 'this is a text file, not a photo\n',
    'huge.png': hugePngHeader(),
  };
  for (const [name, body] of Object.entries(files)) await writeFile(`${dir}/${name}`, body);
  return {
    readable: ['png-named.jpg', 'gif-named.jpg', 'cmyk.jpg', '16bit.png', 'exif-rotated.jpg', 'one-pixel.png', 'alpha.png'],
    unreadable: ['zero-bytes.jpg', 'truncated.jpg', 'text.jpg', 'huge.png'],
  };
}
