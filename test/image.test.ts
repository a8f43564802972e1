import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { ImageError } from '../src/errors.js';
import {
  decodeImage,
  defaultSpec,
  encodePng,
  loadInto,
  loadTensor,
  pixelsToTensor,
  writePng,
  type PreprocessSpec,
  type RgbImage,
} from '../src/image/index.js';

// Every assert.ok has a message: without one, node's assert re-parses the (tsx-compiled, one-line) source to build
// a message, which can take minutes.
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SHARED = process.env.GRAFT_SHARED ?? resolve(REPO, '../shared');

let dir: string;
const p = (name: string) => join(dir, name);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-image-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------------------
// Fixture helpers

type RGB = [number, number, number];

/** Raw RGB buffer where `f(x, y)` gives each pixel's colour. */
function rawImage(width: number, height: number, f: (x: number, y: number) => RGB): Buffer {
  const buf = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) buf.set(f(x, y), (y * width + x) * 3);
  }
  return buf;
}

function fromRaw(width: number, height: number, f: (x: number, y: number) => RGB) {
  return sharp(rawImage(width, height, f), { raw: { width, height, channels: 3 } });
}

function solid(width: number, height: number, c: RGB) {
  return sharp({ create: { width, height, channels: 3, background: { r: c[0], g: c[1], b: c[2] } } });
}

/** Deterministic noise, so JPEGs are big enough to cut in half meaningfully. */
function noise(width: number, height: number) {
  let s = 12345;
  const rnd = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff), (s >>> 16) & 0xff);
  return fromRaw(width, height, () => [rnd(), rnd(), rnd()]);
}

function pixel(img: RgbImage, x: number, y: number): RGB {
  const i = (y * img.width + x) * 3;
  return [img.data[i]!, img.data[i + 1]!, img.data[i + 2]!];
}

function assertNear(actual: readonly number[], expected: readonly number[], tol: number, what = '') {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol, `${what} [${actual}] not within ${tol} of [${expected}]`);
  }
}

/** Assert the promise rejects with an ImageError whose reason matches. */
async function rejectsImage(promise: Promise<unknown>, reason: RegExp, file?: string): Promise<ImageError> {
  let caught: unknown;
  try {
    await promise;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof ImageError, `expected ImageError, got ${caught instanceof Error ? caught.stack : String(caught)}`);
  assert.match(caught.reason, reason);
  if (file !== undefined) assert.equal(caught.file, file);
  assert.ok(!caught.message.includes('\n'), `message should be one line: ${caught.message}`);
  assert.ok(!/at .*\(.*:\d+:\d+\)/.test(caught.message), 'message must not contain a stack');
  return caught;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
/** A valid-looking PNG header claiming width x height RGB pixels, with only a few bytes of pixel data. */
function hugePng(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(Buffer.alloc(1 + width * 3))), // one row of zeros
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Patch the SOF0 frame size of a baseline JPEG. */
function patchJpegSize(jpeg: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(jpeg);
  let i = 2;
  while (i < out.length) {
    assert.equal(out[i], 0xff);
    const marker = out[i + 1]!;
    const len = out.readUInt16BE(i + 2);
    if (marker === 0xc0 || marker === 0xc2) {
      out.writeUInt16BE(height, i + 5);
      out.writeUInt16BE(width, i + 7);
      return out;
    }
    i += 2 + len;
  }
  throw new Error('no SOF marker');
}

const RANGE01 = { mean: [0, 0, 0] as RGB, std: [1, 1, 1] as RGB };

// ---------------------------------------------------------------------------------------------------------------------
// Decoding: failures

describe('decodeImage failures', () => {
  test('zero-byte file', async () => {
    await writeFile(p('empty.jpg'), Buffer.alloc(0));
    await rejectsImage(decodeImage(p('empty.jpg')), /^empty file \(0 bytes\)$/, p('empty.jpg'));
    await rejectsImage(decodeImage(Buffer.alloc(0), { name: 'upload.jpg' }), /empty/, 'upload.jpg');
  });

  test('missing file and directory', async () => {
    await rejectsImage(decodeImage(p('does-not-exist.jpg')), /^file not found$/);
    await mkdir(p('a-dir.jpg'));
    await rejectsImage(decodeImage(p('a-dir.jpg')), /directory/);
  });

  test('truncated JPEG (real JPEG bytes cut in half) is an error, not a half-grey picture', async () => {
    const full = await noise(320, 240).jpeg({ quality: 90 }).toBuffer();
    assert.ok(full.length > 50_000, `fixture JPEG is only ${full.length} bytes`);
    await writeFile(p('truncated.jpg'), full.subarray(0, full.length >> 1));
    await rejectsImage(decodeImage(p('truncated.jpg')), /^truncated or corrupt JPEG/);
    await rejectsImage(loadTensor(p('truncated.jpg'), defaultSpec()), /^truncated or corrupt JPEG/);
    // Missing just the end-of-image marker also counts as truncated.
    await rejectsImage(decodeImage(full.subarray(0, full.length - 2)), /^truncated or corrupt JPEG/);
    // Cut inside the header.
    await rejectsImage(decodeImage(full.subarray(0, 100)), /^truncated or corrupt JPEG/);
    // The intact file decodes.
    const ok = await decodeImage(full);
    assert.equal(ok.width, 320);
  });

  test('a JPEG that only makes the decoder warn still decodes', async () => {
    const full = await noise(64, 48).jpeg().toBuffer();
    const sos = full.indexOf(Buffer.from([0xff, 0xda]));
    // "Corrupt JPEG data: 3 extraneous bytes before marker 0xda": common in the wild, displays fine.
    const warned = Buffer.concat([full.subarray(0, sos), Buffer.from([1, 2, 3]), full.subarray(sos)]);
    const img = await decodeImage(warned);
    assert.deepEqual([img.width, img.height], [64, 48]);
    assert.deepEqual(img.data, (await decodeImage(full)).data);
  });

  test('truncated PNG', async () => {
    const full = await noise(100, 80).png().toBuffer();
    await rejectsImage(decodeImage(full.subarray(0, full.length >> 1)), /^truncated or corrupt PNG/);
  });

  test('text file named .jpg', async () => {
    await writeFile(p('text.jpg'), 'this is not an image, it is a text file\n');
    await rejectsImage(decodeImage(p('text.jpg')), /^not an image \(unrecognised format\)$/, p('text.jpg'));
    await writeFile(p('page.jpg'), '<!DOCTYPE html><html><body>404 Not Found</body></html>');
    await rejectsImage(loadTensor(p('page.jpg'), defaultSpec()), /^not an image/);
  });

  test('known but unsupported format is named', async () => {
    await rejectsImage(decodeImage(Buffer.concat([Buffer.from('BM'), Buffer.alloc(60, 7)])), /^unsupported image format \(BMP\)$/);
  });

  test('huge-dimension PNG fails fast from the header, with the pixel-limit message', async () => {
    const bomb = hugePng(50_000, 50_000);
    assert.ok(bomb.length < 1000, `bomb fixture is ${bomb.length} bytes`);
    await writeFile(p('bomb.png'), bomb);
    const t0 = performance.now();
    const rss0 = process.memoryUsage().rss;
    await rejectsImage(
      decodeImage(p('bomb.png')),
      /^image is 50000x50000 = 2\.5e9 pixels, above the limit of 1e8 \(possible decompression bomb\)$/,
    );
    await rejectsImage(loadTensor(p('bomb.png'), defaultSpec()), /above the limit of 1e8/);
    // 20000x20000 = 4e8: above our limit and sharp's own default (2.68e8).
    await rejectsImage(decodeImage(hugePng(20_000, 20_000)), /^image is 20000x20000 = 4e8 pixels/);
    // 12000x12000 = 1.44e8 is below sharp's own default limit (2.68e8) but above ours.
    await rejectsImage(decodeImage(hugePng(12_000, 12_000)), /^image is 12000x12000 = 1\.44e8 pixels, above the limit of 1e8/);
    const ms = performance.now() - t0;
    assert.ok(ms < 2000, `took ${ms} ms`);
    assert.ok(process.memoryUsage().rss - rss0 < 300e6, 'must not allocate the full image');
  });

  test('huge-dimension JPEG header fails fast too', async () => {
    const small = await solid(16, 16, [1, 2, 3]).jpeg().toBuffer();
    await rejectsImage(decodeImage(patchJpegSize(small, 60_000, 60_000)), /^image is 60000x60000 = 3\.6e9 pixels/);
  });

  test('maxPixels option', async () => {
    const png = await solid(100, 100, [5, 5, 5]).png().toBuffer();
    await rejectsImage(decodeImage(png, { maxPixels: 5000 }), /^image is 100x100 = 10000 pixels, above the limit of 5000/);
    assert.equal((await decodeImage(png, { maxPixels: 10_000 })).width, 100);
    assert.equal((await decodeImage(png, { maxPixels: Infinity })).width, 100);
    // A bad option is the caller's bug, not an image problem.
    await assert.rejects(decodeImage(png, { maxPixels: -1 }), RangeError);
    await assert.rejects(decodeImage(png, { background: [0, 0, 300] }), RangeError);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Decoding: formats and colour

describe('decodeImage formats and colour conversion', () => {
  test('PNG named .jpg (format from content)', async () => {
    await solid(7, 5, [10, 200, 30]).png().toFile(p('really-png.jpg'));
    const img = await decodeImage(p('really-png.jpg'));
    assert.deepEqual([img.width, img.height], [7, 5]);
    assert.equal(img.data.length, 7 * 5 * 3);
    assert.deepEqual(pixel(img, 6, 4), [10, 200, 30]);
  });

  test('animated GIF named .jpg: first frame only', async () => {
    const red = await solid(6, 4, [255, 0, 0]).png().toBuffer();
    const blue = await solid(6, 4, [0, 0, 255]).png().toBuffer();
    for (const [frames, first] of [
      [[red, blue], [255, 0, 0]],
      [[blue, red], [0, 0, 255]],
    ] as const) {
      const gif = await sharp([...frames], { join: { animated: true } }).gif().toBuffer();
      assert.equal((await sharp(gif).metadata()).pages, 2);
      await writeFile(p('anim.jpg'), gif);
      const img = await decodeImage(p('anim.jpg'));
      assert.deepEqual([img.width, img.height], [6, 4], 'one frame, not the frames stacked');
      assertNear(pixel(img, 0, 0), first, 2);
      assertNear(pixel(img, 5, 3), first, 2);
    }
  });

  test('CMYK JPEG converts to sRGB (red stays red, not inverted)', async () => {
    const cmyk = await solid(16, 16, [255, 0, 0]).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
    const meta = await sharp(cmyk).metadata();
    assert.equal(meta.space, 'cmyk');
    assert.equal(meta.channels, 4);
    const img = await decodeImage(cmyk);
    assert.equal(img.data.length, 16 * 16 * 3);
    const [r, g, b] = pixel(img, 8, 8);
    assert.ok(r > 200 && g < 40 && b < 40, `CMYK red decoded to ${[r, g, b]}`);
  });

  test('16-bit PNG becomes 8-bit', async () => {
    const u16 = new Uint16Array(4 * 2 * 3);
    for (let i = 0; i < u16.length; i += 3) u16.set([0x1234, 0x8080, 0xfff0], i);
    const png = await sharp(u16, { raw: { width: 4, height: 2, channels: 3 } }).toColourspace('rgb16').png().toBuffer();
    const meta = await sharp(png).metadata();
    assert.equal(meta.depth, 'ushort');
    const img = await decodeImage(png);
    assert.equal(img.data.length, 4 * 2 * 3);
    assertNear(pixel(img, 3, 1), [0x12, 0x80, 0xff], 1);
  });

  test('RGBA PNG: transparent pixels flattened on white (or a chosen background)', async () => {
    // Left column transparent blue, right column opaque green, middle half-transparent black.
    const w = 3, h = 2;
    const rgba = Buffer.alloc(w * h * 4);
    for (let y = 0; y < h; y++) {
      rgba.set([0, 0, 255, 0], (y * w + 0) * 4);
      rgba.set([0, 0, 0, 128], (y * w + 1) * 4);
      rgba.set([0, 255, 0, 255], (y * w + 2) * 4);
    }
    const png = await sharp(rgba, { raw: { width: w, height: h, channels: 4 } }).png().toBuffer();
    assert.equal((await sharp(png).metadata()).hasAlpha, true);
    const img = await decodeImage(png);
    assert.equal(img.data.length, w * h * 3);
    assert.deepEqual(pixel(img, 0, 0), [255, 255, 255]);
    assertNear(pixel(img, 1, 1), [127, 127, 127], 1);
    assert.deepEqual(pixel(img, 2, 1), [0, 255, 0]);
    const onBlack = await decodeImage(png, { background: [0, 0, 0] });
    assert.deepEqual(pixel(onBlack, 0, 0), [0, 0, 0]);
    const onRed = await decodeImage(png, { background: [255, 0, 0] });
    assert.deepEqual(pixel(onRed, 0, 1), [255, 0, 0]);
  });

  test('grey images (with and without alpha) become 3 equal channels', async () => {
    const grey = await solid(5, 3, [90, 90, 90]).toColourspace('b-w').png().toBuffer();
    assert.equal((await sharp(grey).metadata()).channels, 1);
    const img = await decodeImage(grey);
    assert.equal(img.data.length, 5 * 3 * 3);
    assert.deepEqual(pixel(img, 4, 2), [90, 90, 90]);

    const greyJpeg = await solid(8, 8, [200, 200, 200]).toColourspace('b-w').jpeg().toBuffer();
    assert.equal((await sharp(greyJpeg).metadata()).channels, 1);
    assertNear(pixel(await decodeImage(greyJpeg), 3, 3), [200, 200, 200], 2);

    const greyAlpha = await sharp({ create: { width: 3, height: 3, channels: 4, background: { r: 90, g: 90, b: 90, alpha: 0 } } })
      .toColourspace('b-w')
      .png()
      .toBuffer();
    assert.equal((await sharp(greyAlpha).metadata()).channels, 2);
    assert.deepEqual(pixel(await decodeImage(greyAlpha), 1, 1), [255, 255, 255]);
  });

  test('EXIF orientation 6 (rotate 90° clockwise): 40x20 red|blue becomes 20x40 red over blue', async () => {
    const jpeg = await fromRaw(40, 20, (x) => (x < 20 ? [255, 0, 0] : [0, 0, 255]))
      .jpeg({ quality: 95 })
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const meta = await sharp(jpeg).metadata();
    assert.equal(meta.orientation, 6);
    assert.deepEqual([meta.width, meta.height], [40, 20]);
    const img = await decodeImage(jpeg);
    assert.deepEqual([img.width, img.height], [20, 40]);
    assertNear(pixel(img, 10, 5), [255, 0, 0], 20, 'top');
    assertNear(pixel(img, 10, 34), [0, 0, 255], 20, 'bottom');

    // loadTensor sees the rotated image too: squash to 4x4 (NHWC, [0,1]) → top rows red, bottom rows blue.
    const t = await loadTensor(jpeg, defaultSpec({ size: [4, 4], ...RANGE01, layout: 'NHWC' }));
    assertNear(Array.from(t.subarray(0, 3)), [1, 0, 0], 0.1, 'tensor top-left');
    assertNear(Array.from(t.subarray(t.length - 3)), [0, 0, 1], 0.1, 'tensor bottom-right');
  });

  test('EXIF orientation 8 (rotate 90° anticlockwise): left half ends at the bottom', async () => {
    const jpeg = await fromRaw(40, 20, (x) => (x < 20 ? [255, 0, 0] : [0, 0, 255]))
      .jpeg({ quality: 95 })
      .withMetadata({ orientation: 8 })
      .toBuffer();
    const img = await decodeImage(jpeg);
    assert.deepEqual([img.width, img.height], [20, 40]);
    assertNear(pixel(img, 10, 5), [0, 0, 255], 20, 'top');
    assertNear(pixel(img, 10, 34), [255, 0, 0], 20, 'bottom');
  });

  test('WebP and TIFF', async () => {
    const colour: RGB = [30, 140, 220];
    const webp = await solid(10, 6, colour).webp({ lossless: true }).toBuffer();
    await writeFile(p('webp.jpg'), webp);
    const w = await decodeImage(p('webp.jpg'));
    assert.deepEqual([w.width, w.height], [10, 6]);
    assert.deepEqual(pixel(w, 9, 5), colour);

    const tiff = await solid(10, 6, colour).tiff({ compression: 'lzw' }).toBuffer();
    await writeFile(p('tiff.jpg'), tiff);
    const t = await decodeImage(p('tiff.jpg'));
    assert.deepEqual([t.width, t.height], [10, 6]);
    assert.deepEqual(pixel(t, 9, 5), colour);
  });

  test('1x1 image', async () => {
    const png = await solid(1, 1, [100, 100, 100]).png().toBuffer();
    const img = await decodeImage(png);
    assert.deepEqual([img.width, img.height, img.data.length], [1, 1, 3]);
    const t = await loadTensor(png, defaultSpec({ size: [8, 8], ...RANGE01 }));
    assert.equal(t.length, 3 * 8 * 8);
    const v = Math.fround(100 / 255);
    for (const x of t) assert.equal(x, v);
    const c = await loadTensor(png, defaultSpec({ size: [8, 8], cropPct: 0.875, ...RANGE01 }));
    for (const x of c) assert.equal(x, v);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Tensors

describe('loadTensor / loadInto / pixelsToTensor', () => {
  const colour: RGB = [10, 128, 250];
  const imagenet = defaultSpec({ size: [4, 6] }); // h=4, w=6
  const expected = (k: number, v: number, spec: PreprocessSpec) => Math.fround((v / 255 - spec.mean[k]!) / spec.std[k]!);

  test('solid colour, NCHW RGB: exact normalised values in planes', async () => {
    const png = await solid(50, 30, colour).png().toBuffer();
    const t = await loadTensor(png, imagenet);
    assert.equal(t.length, 3 * 4 * 6);
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < 24; i++) assert.equal(t[c * 24 + i], expected(c, colour[c]!, imagenet), `channel ${c} index ${i}`);
    }
  });

  test('solid colour, NHWC RGB: exact values interleaved', async () => {
    const spec = { ...imagenet, layout: 'NHWC' as const };
    const t = await loadTensor(await solid(50, 30, colour).png().toBuffer(), spec);
    for (let i = 0; i < 24; i++) {
      for (let c = 0; c < 3; c++) assert.equal(t[i * 3 + c], expected(c, colour[c]!, spec));
    }
  });

  test('BGR order: tensor channel k is blue/green/red, normalised with mean[k]/std[k]', async () => {
    const png = await solid(50, 30, colour).png().toBuffer();
    const bgr: RGB = [colour[2], colour[1], colour[0]];
    for (const layout of ['NCHW', 'NHWC'] as const) {
      const spec = { ...imagenet, layout, channelOrder: 'BGR' as const };
      const t = await loadTensor(png, spec);
      for (let i = 0; i < 24; i++) {
        for (let k = 0; k < 3; k++) {
          const at = layout === 'NCHW' ? k * 24 + i : i * 3 + k;
          assert.equal(t[at], expected(k, bgr[k]!, spec), `${layout} k=${k}`);
        }
      }
    }
    // Unnormalised [0,255] BGR: plain byte values.
    const raw255 = await loadTensor(png, defaultSpec({ size: [2, 2], channelOrder: 'BGR', mean: [0, 0, 0], std: [1 / 255, 1 / 255, 1 / 255] }));
    assertNear(Array.from(raw255.subarray(0, 1)), [250], 1e-4);
    assertNear(Array.from(raw255.subarray(4, 5)), [128], 1e-4);
    assertNear(Array.from(raw255.subarray(8, 9)), [10], 1e-4);
  });

  test('spatial layout: top-left/bottom-right land where NCHW and NHWC say', async () => {
    // Left half red, right half blue, 40x20 → squash to [2, 4] with nearest: columns 0-1 red, 2-3 blue.
    const png = await fromRaw(40, 20, (x) => (x < 20 ? [255, 0, 0] : [0, 0, 255])).png().toBuffer();
    const nchw = await loadTensor(png, defaultSpec({ size: [2, 4], interpolation: 'nearest', ...RANGE01 }));
    // R plane row 0: 1 1 0 0; B plane row 1: 0 0 1 1
    assert.deepEqual(Array.from(nchw.subarray(0, 4)), [1, 1, 0, 0]);
    assert.deepEqual(Array.from(nchw.subarray(16 + 4, 16 + 8)), [0, 0, 1, 1]);
    const nhwc = await loadTensor(png, defaultSpec({ size: [2, 4], interpolation: 'nearest', ...RANGE01, layout: 'NHWC' }));
    assert.deepEqual(Array.from(nhwc.subarray(0, 3)), [1, 0, 0]);
    assert.deepEqual(Array.from(nhwc.subarray(21, 24)), [0, 0, 1]);
  });

  test('cropPct 0.875 keeps only the centre; squash keeps the border', async () => {
    // 64x64 red centre with a 2px blue border. [28,28] at 0.875 → resize to 32x32 (border now ~1px, blurred to 2px)
    // then the centre crop drops 2px each side: all red. Squashed to 28x28 the border survives.
    const png = await fromRaw(64, 64, (x, y) => (x < 2 || y < 2 || x >= 62 || y >= 62 ? [0, 0, 255] : [255, 0, 0]))
      .png()
      .toBuffer();
    const spec = defaultSpec({ size: [28, 28], cropPct: 0.875, ...RANGE01, layout: 'NHWC' });
    const t = await loadTensor(png, spec);
    for (let i = 0; i < 28 * 28; i++) assert.deepEqual(Array.from(t.subarray(i * 3, i * 3 + 3)), [1, 0, 0], `pixel ${i}`);
    const squash = await loadTensor(png, { ...spec, cropPct: null });
    assert.ok(squash[2]! > 0.3, `corner should be bluish, got ${Array.from(squash.subarray(0, 3))}`);
  });

  test('centre crop offsets (no resize needed): torchvision-style rounding', async () => {
    // Pixel colour encodes its coordinates: R = x, G = y. [28,28] at 0.875 covers 32x32, so a 48x32 image is not
    // resized and the crop is columns 10..37, rows 2..29. Odd margins round half to even like torchvision's
    // CenterCrop (Python round): 49 wide → 10.5 → 10; 51 wide → 11.5 → 12.
    for (const [width, left] of [[48, 10], [49, 10], [51, 12]] as const) {
      const png = await fromRaw(width, 32, (x, y) => [x, y, 7]).png().toBuffer();
      const t = await loadTensor(png, defaultSpec({ size: [28, 28], cropPct: 0.875, mean: [0, 0, 0], std: [1 / 255, 1 / 255, 1 / 255], layout: 'NHWC' }));
      const at = (x: number, y: number) => Array.from(t.subarray((y * 28 + x) * 3, (y * 28 + x) * 3 + 3)).map(Math.round);
      assert.deepEqual(at(0, 0), [left, 2, 7], `width ${width}`);
      assert.deepEqual(at(27, 27), [left + 27, 29, 7], `width ${width}`);
    }
  });

  test('non-square crop: short side to round(size/cropPct), centre crop', async () => {
    // 200x100 image, left quarter and right quarter blue, middle red. [16,16] at 0.5: cover 32x32 → 64x32, crop
    // columns 24..39 of 64 = source columns 75..125 of 200: all red.
    const png = await fromRaw(200, 100, (x) => (x < 50 || x >= 150 ? [0, 0, 255] : [255, 0, 0])).png().toBuffer();
    const t = await loadTensor(png, defaultSpec({ size: [16, 16], cropPct: 0.5, ...RANGE01, layout: 'NHWC' }));
    for (let i = 0; i < 256; i++) assertNear(Array.from(t.subarray(i * 3, i * 3 + 3)), [1, 0, 0], 1e-6, `pixel ${i}`);
  });

  test('every interpolation works; a constant image stays constant', async () => {
    const png = await solid(37, 23, colour).png().toBuffer();
    for (const interpolation of ['nearest', 'bilinear', 'bicubic', 'lanczos3'] as const) {
      for (const cropPct of [null, 0.875]) {
        const t = await loadTensor(png, defaultSpec({ size: [9, 11], interpolation, cropPct, ...RANGE01 }));
        assert.equal(t[0], Math.fround(colour[0] / 255), interpolation);
        assert.equal(t[t.length - 1], Math.fround(colour[2] / 255), interpolation);
      }
    }
  });

  test('interpolation reaches sharp: nearest keeps hard edges, the others blend, all four differ', async () => {
    // Upscaling black/white stripes 8x1 to 24x1: nearest repeats pixels exactly, bilinear blends.
    const stripes = [0, 1, 0, 1, 1, 0, 0, 1];
    const up = await fromRaw(8, 1, (x) => (stripes[x] ? [255, 255, 255] : [0, 0, 0])).png().toBuffer();
    const upRow = async (interpolation: PreprocessSpec['interpolation']) =>
      Array.from((await loadTensor(up, defaultSpec({ size: [1, 24], cropPct: null, interpolation, ...RANGE01 }))).subarray(0, 24));
    assert.deepEqual(await upRow('nearest'), stripes.flatMap((v) => [v, v, v]));
    const bilinear = await upRow('bilinear');
    assert.ok(bilinear.some((v) => v > 0.05 && v < 0.95), `bilinear did not blend: ${bilinear}`);
    // Downscaling noise 60x1 to 24x1: each kernel gives a different result. (When upscaling, libvips uses its
    // bicubic interpolator for cubic and lanczos3 alike, so only downscaling tells those two apart.)
    const down = await noise(60, 1).png().toBuffer();
    const rows: Record<string, number[]> = {};
    for (const interpolation of ['nearest', 'bilinear', 'bicubic', 'lanczos3'] as const) {
      const t = await loadTensor(down, defaultSpec({ size: [1, 24], cropPct: null, interpolation, ...RANGE01 }));
      rows[interpolation] = Array.from(t.subarray(0, 24));
    }
    const keys = Object.keys(rows);
    for (let i = 0; i < keys.length; i++) {
      for (let j = i + 1; j < keys.length; j++) {
        assert.notDeepEqual(rows[keys[i]!], rows[keys[j]!], `${keys[i]} vs ${keys[j]}`);
      }
    }
  });

  test('loadInto writes exactly its slot', async () => {
    const spec = defaultSpec({ size: [3, 5], ...RANGE01 });
    const n = 3 * 3 * 5;
    const out = new Float32Array(3 * n).fill(NaN);
    await loadInto(out, n, await solid(20, 20, [0, 0, 0]).png().toBuffer(), spec);
    assert.ok(out.subarray(0, n).every(Number.isNaN), 'slot before was written');
    assert.ok(out.subarray(n, 2 * n).every((v) => v === 0), 'own slot not filled with black');
    assert.ok(out.subarray(2 * n).every(Number.isNaN), 'slot after was written');
    await assert.rejects(loadInto(out, 2 * n + 1, Buffer.alloc(1), spec), RangeError);
  });

  test('JPEG from file (shrink-on-load path) matches the decoded colour', async () => {
    await solid(640, 480, [200, 100, 50]).jpeg({ quality: 95 }).toFile(p('big.jpg'));
    const t = await loadTensor(p('big.jpg'), defaultSpec({ size: [224, 224], ...RANGE01, layout: 'NHWC' }));
    assertNear(Array.from(t.subarray(0, 3)).map((v) => v * 255), [200, 100, 50], 3);
  });

  test('pixelsToTensor matches loadTensor for lossless input; skips resize when already at size', async () => {
    const png = await noise(120, 90).png().toBuffer();
    for (const spec of [defaultSpec({ size: [32, 40] }), defaultSpec({ size: [32, 32], cropPct: 0.875, layout: 'NHWC' })]) {
      const a = await loadTensor(png, spec);
      const b = await pixelsToTensor(await decodeImage(png), spec);
      let maxDiff = 0;
      for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
      assert.ok(maxDiff <= 2 / 255 / 0.224, `max diff ${maxDiff}`);
    }
    const img: RgbImage = { data: rawImage(3, 2, (x, y) => [x * 50, y * 100, 9]), width: 3, height: 2 };
    const t = await pixelsToTensor(img, defaultSpec({ size: [2, 3], mean: [0, 0, 0], std: [1 / 255, 1 / 255, 1 / 255] }));
    // NCHW R plane is x*50, G plane is y*100
    assertNear(Array.from(t.subarray(0, 6)), [0, 50, 100, 0, 50, 100], 1e-4);
    assertNear(Array.from(t.subarray(6, 12)), [0, 0, 0, 100, 100, 100], 1e-4);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// PNG writing

describe('encodePng / writePng', () => {
  test('round trip for 1, 3 and 4 channels; atomic write leaves no temp file', async () => {
    const rgb: RgbImage = { data: rawImage(4, 3, (x, y) => [x * 60, y * 100, 77]), width: 4, height: 3 };
    await writePng(rgb, p('out/rgb.png'));
    const back = await decodeImage(p('out/rgb.png'));
    assert.deepEqual([back.width, back.height], [4, 3]);
    assert.deepEqual(back.data, rgb.data);

    const grey = { data: Buffer.from([0, 50, 100, 150, 200, 250]), width: 3, height: 2, channels: 1 as const };
    const gpng = await encodePng(grey);
    const gmeta = await sharp(gpng).metadata();
    assert.equal(gmeta.format, 'png');
    assert.equal(gmeta.channels, 1);
    assert.deepEqual(pixel(await decodeImage(gpng), 2, 1), [250, 250, 250]);

    const rgba = { data: Buffer.from([255, 0, 0, 0, 0, 255, 0, 255]), width: 2, height: 1, channels: 4 as const };
    await writePng(rgba, p('out/rgba.png'));
    const ra = await decodeImage(await readFile(p('out/rgba.png')));
    assert.deepEqual(pixel(ra, 0, 0), [255, 255, 255]);
    assert.deepEqual(pixel(ra, 1, 0), [0, 255, 0]);

    const { readdir } = await import('node:fs/promises');
    assert.deepEqual((await readdir(p('out'))).sort(), ['rgb.png', 'rgba.png']);
    await assert.rejects(encodePng({ data: Buffer.alloc(5), width: 2, height: 2 }), RangeError);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Real quirk files from the shared data, when present

describe('shared quirks files', () => {
  const quirks = join(SHARED, 'data/oxford_pets/quirks');
  const files = [
    ['Abyssinian_34.jpg', 'gif'],
    ['Abyssinian_5.jpg', 'png'],
  ] as const;
  for (const [file, format] of files) {
    const path = join(quirks, file);
    test(`${file} (really ${format.toUpperCase()})`, { skip: existsSync(path) ? false : `shared data not found at ${path} (set GRAFT_SHARED)` }, async () => {
      assert.equal((await sharp(path).metadata()).format, format);
      const img = await decodeImage(path);
      assert.ok(img.width > 0 && img.height > 0, `size ${img.width}x${img.height}`);
      assert.equal(img.data.length, img.width * img.height * 3);
      const t = await loadTensor(path, defaultSpec());
      assert.equal(t.length, 3 * 224 * 224);
      assert.ok(t.every(Number.isFinite), 'non-finite tensor values');
      // Not a blank picture.
      let min = Infinity, max = -Infinity;
      for (const v of t) (min = Math.min(min, v)), (max = Math.max(max, v));
      assert.ok(max - min > 1, `tensor range ${min}..${max}`);
    });
  }
});
