/**
 * Issue 14: would decoding a JPEG at half size (libvips shrink-on-load, which sharp applies only when the resize is
 * at least 2x) and upscaling a little be cheaper than the plain decode + resize for photos whose short side is
 * under 2x the input size? One thread, 400 Cats vs Dogs photos.   node --import tsx bench/decode-shrink.bench.ts
 */
import { readdir, readFile } from 'node:fs/promises';
import sharp from 'sharp';
const dir = `${process.env.GRAFT_SHARED ?? new URL('../../shared', import.meta.url).pathname}/data/cats_vs_dogs/validation/cats`;
const files = (await readdir(dir)).sort().slice(0, 400);
const bufs = await Promise.all(files.map((f) => readFile(`${dir}/${f}`)));
sharp.concurrency(1);
async function plain(b: Buffer) {
  return sharp(b).resize(224, 224, { fit: 'outside', kernel: 'linear' }).raw().toBuffer();
}
async function twoStep(b: Buffer) {
  const m = await sharp(b).metadata();
  const short = Math.min(m.width!, m.height!);
  if (short < 448) {
    // decode at 1/2 scale (JPEG shrink-on-load) then upscale a little
    const half = await sharp(b).resize(Math.ceil(m.width! / 2), Math.ceil(m.height! / 2), { kernel: 'linear', fastShrinkOnLoad: true }).raw().toBuffer({ resolveWithObject: true });
    return sharp(half.data, { raw: { width: half.info.width, height: half.info.height, channels: 3 } }).resize(224, 224, { fit: 'outside', kernel: 'linear' }).raw().toBuffer();
  }
  return plain(b);
}
for (const [name, fn] of [['plain', plain], ['two-step', twoStep], ['plain', plain], ['two-step', twoStep]] as const) {
  const t0 = performance.now();
  for (const b of bufs) await fn(b);
  console.log(name, ((performance.now() - t0) / bufs.length).toFixed(2), 'ms/img (1 thread, sequential)');
}
