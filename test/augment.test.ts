import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { Backbone } from '../src/engine/backbone.js';
import { GraftError, ImageError } from '../src/errors.js';
import {
  applyPixelAugment,
  augmentedViews,
  augmentKey,
  cropBox,
  DEFAULT_AUGMENT,
  describeAugment,
  flattenViews,
  loadAugmentedInto,
  loadAugmentedPixels,
  NO_AUGMENT,
  resolveAugmentOptions,
  sampleAugment,
  type AugmentParams,
} from '../src/image/augment.js';
import { loadTensor, tensorLength } from '../src/image/preprocess.js';
import { defaultSpec, RANGE_0_255, type PreprocessSpec } from '../src/image/spec.js';
import { colourImage } from './helpers/images.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';

let dir: string;
/** Tensor values equal 8-bit pixel values, so tensors can be read as pictures. */
const raw = (size: [number, number], extra: Partial<PreprocessSpec> = {}): PreprocessSpec =>
  defaultSpec({ size, mean: [...RANGE_0_255.mean], std: [...RANGE_0_255.std], layout: 'NHWC', ...extra });

const PLAIN: AugmentParams = { crop: null, flip: false, brightness: 1, contrast: 1, saturation: 1 };

/** Raw RGB image of `w` x `h` filled by `f(x, y)`. */
function rawImage(w: number, h: number, f: (x: number, y: number) => [number, number, number]): sharp.Sharp {
  const d = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) d.set(f(x, y), (y * w + x) * 3);
  return sharp(d, { raw: { width: w, height: h, channels: 3 } });
}

function mean(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return s / a.length;
}

/** Mean of each channel of interleaved RGB. */
function channelMeans(a: ArrayLike<number>): [number, number, number] {
  const s = [0, 0, 0];
  for (let i = 0; i < a.length; i++) s[i % 3]! += a[i]!;
  const n = a.length / 3;
  return [s[0]! / n, s[1]! / n, s[2]! / n];
}

let gradient: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-augment-'));
  gradient = join(dir, 'gradient.png');
  await rawImage(48, 32, (x, y) => [x * 5, y * 7, 255 - x * 3]).png().toFile(gradient);
});
after(async () => rm(dir, { recursive: true, force: true }));

describe('sampling views', () => {
  test('same seed, key and view give the same params, whatever else is sampled and in which order', () => {
    const a = augmentedViews(['a.jpg', 'b.jpg', 'c.jpg'], 3, 7, DEFAULT_AUGMENT);
    const b = augmentedViews(['c.jpg', 'x.jpg', 'a.jpg'], 4, 7, DEFAULT_AUGMENT);
    assert.deepEqual(b[2]!.slice(0, 3), a[0]);
    assert.deepEqual(b[0]!.slice(0, 3), a[2]);
    assert.deepEqual(sampleAugment(7, 'b.jpg', 1, DEFAULT_AUGMENT), a[1]![1]);
    // Plain JSON, exactly: the params are quantised so they survive a round trip and key the cache exactly.
    assert.deepEqual(JSON.parse(JSON.stringify(a)), a);
  });

  test('another seed, view or key gives other params', () => {
    const p = sampleAugment(7, 'a.jpg', 0, DEFAULT_AUGMENT);
    assert.notDeepEqual(sampleAugment(8, 'a.jpg', 0, DEFAULT_AUGMENT), p);
    assert.notDeepEqual(sampleAugment(7, 'a.jpg', 1, DEFAULT_AUGMENT), p);
    assert.notDeepEqual(sampleAugment(7, 'b.jpg', 0, DEFAULT_AUGMENT), p);
    assert.notDeepEqual(sampleAugment(7 + 2 ** 32, 'a.jpg', 0, DEFAULT_AUGMENT), p);
    assert.notEqual(augmentKey(sampleAugment(7, 'a.jpg', 1, DEFAULT_AUGMENT)), augmentKey(p));
  });

  test('draws stay in their ranges and flip about half the time', () => {
    const views = augmentedViews(Array.from({ length: 100 }, (_, i) => `img${i}.jpg`), 4, 1, DEFAULT_AUGMENT).flat();
    let flips = 0;
    for (const v of views) {
      assert.ok(v.crop !== null, 'default views crop');
      assert.ok(v.crop.area >= 0.35 && v.crop.area <= 1, `area ${v.crop.area}`);
      assert.ok(v.crop.ratio >= 0.75 - 1e-6 && v.crop.ratio <= 4 / 3 + 1e-6, `ratio ${v.crop.ratio}`);
      assert.ok(v.crop.x >= 0 && v.crop.x <= 1 && v.crop.y >= 0 && v.crop.y <= 1, `position ${v.crop.x},${v.crop.y}`);
      for (const k of ['brightness', 'contrast', 'saturation'] as const) assert.ok(v[k] >= 0.8 && v[k] <= 1.2, `${k} ${v[k]}`);
      if (v.flip) flips++;
    }
    assert.ok(flips > 160 && flips < 240, `${flips} flips of 400`);
  });

  test('turning one augmentation off leaves the others as they were', () => {
    const noFlip = resolveAugmentOptions({ flip: 0, brightness: 0 });
    for (let v = 0; v < 5; v++) {
      const a = sampleAugment(3, 'k', v, DEFAULT_AUGMENT);
      const b = sampleAugment(3, 'k', v, noFlip);
      assert.deepEqual(b.crop, a.crop);
      assert.equal(b.contrast, a.contrast);
      assert.equal(b.flip, false);
      assert.equal(b.brightness, 1);
    }
    assert.deepEqual(sampleAugment(3, 'k', 0, NO_AUGMENT), PLAIN);
  });

  test('options are checked and described', () => {
    assert.throws(() => resolveAugmentOptions({ crop: { scale: [0, 1] } }), GraftError);
    assert.throws(() => resolveAugmentOptions({ crop: { ratio: [2, 1] } }), GraftError);
    assert.throws(() => resolveAugmentOptions({ flip: 1.5 }), GraftError);
    assert.throws(() => resolveAugmentOptions({ contrast: -0.1 }), GraftError);
    assert.throws(() => augmentedViews(['a'], 0, 1, DEFAULT_AUGMENT), GraftError);
    assert.deepEqual(resolveAugmentOptions(), DEFAULT_AUGMENT);
    assert.equal(
      describeAugment(DEFAULT_AUGMENT),
      'random resized crop (scale 0.35-1, ratio 0.75-1.333), horizontal flip (p=0.5), colour jitter (brightness ±0.2, contrast ±0.2, saturation ±0.2)',
    );
    assert.equal(describeAugment(resolveAugmentOptions({ crop: false, flip: 0, contrast: 0, saturation: 0 })), 'colour jitter (brightness ±0.2)');
    assert.equal(describeAugment(NO_AUGMENT), 'none');
  });

  test('flattenViews lays views of one item side by side', () => {
    const views = augmentedViews(['p', 'q'], 2, 1, DEFAULT_AUGMENT);
    const f = flattenViews(['/d/p', '/d/q'], views);
    assert.deepEqual(f.paths, ['/d/p', '/d/p', '/d/q', '/d/q']);
    assert.deepEqual(f.item, [0, 0, 1, 1]);
    assert.deepEqual(f.view, [0, 1, 0, 1]);
    assert.deepEqual(f.augment[3], views[1]![1]);
  });
});

describe('applying views', () => {
  test('crop boxes stay inside the image, at least 1x1, and keep the drawn area when they fit', () => {
    for (const [w, h] of [[1, 1], [3, 2], [2, 3], [500, 375], [100, 1000]] as const) {
      for (const v of augmentedViews(['x'], 50, 2, DEFAULT_AUGMENT)[0]!) {
        const b = cropBox(v.crop!, w, h);
        assert.ok(b.width >= 1 && b.height >= 1 && b.left >= 0 && b.top >= 0, `box ${JSON.stringify(b)}`);
        assert.ok(b.left + b.width <= w && b.top + b.height <= h, `box ${JSON.stringify(b)} in ${w}x${h}`);
        if (w >= 100) assert.ok(Math.abs((b.width * b.height) / (w * h) - v.crop!.area) < 0.02, `area of ${JSON.stringify(b)}`);
      }
    }
  });

  test('a view with nothing on equals the plain tensor (with and without centre crop)', async () => {
    for (const spec of [raw([10, 12]), raw([10, 12], { cropPct: 0.875, layout: 'NCHW' })]) {
      const plain = await loadTensor(gradient, spec);
      const view = new Float32Array(tensorLength(spec));
      await loadAugmentedInto(view, 0, gradient, spec, PLAIN);
      assert.deepEqual(Buffer.from(view.buffer), Buffer.from(plain.buffer));
    }
  });

  test('the same view gives the same bytes on every load, alone or among others', async () => {
    const spec = defaultSpec({ size: [16, 16] });
    const views = augmentedViews([gradient], 3, 11, DEFAULT_AUGMENT)[0]!;
    const once = async (p: AugmentParams) => {
      const t = new Float32Array(tensorLength(spec));
      await loadAugmentedInto(t, 0, gradient, spec, p);
      return Buffer.from(t.buffer);
    };
    const a = await once(views[1]!);
    const batch = new Float32Array(3 * tensorLength(spec));
    await Promise.all([2, 1, 0].map((v, j) => loadAugmentedInto(batch, j * tensorLength(spec), gradient, spec, views[v]!)));
    const fromBatch = Buffer.from(batch.buffer, 4 * tensorLength(spec), 4 * tensorLength(spec));
    assert.deepEqual(fromBatch, a);
    assert.deepEqual(await once(views[1]!), a);
    assert.notDeepEqual(await once(views[0]!), a);
  });

  test('flip puts the left side on the right', async () => {
    const p = join(dir, 'red-blue.png');
    await rawImage(16, 8, (x) => (x < 8 ? [255, 0, 0] : [0, 0, 255])).png().toFile(p);
    const img = await loadAugmentedPixels(p, raw([8, 8]), { ...PLAIN, flip: true });
    const px = (x: number, y: number) => [...img.data.subarray((y * 8 + x) * 3, (y * 8 + x) * 3 + 3)];
    assert.deepEqual(px(0, 3), [0, 0, 255]);
    assert.deepEqual(px(7, 3), [255, 0, 0]);
    const unflipped = await loadAugmentedPixels(p, raw([8, 8]), PLAIN);
    assert.deepEqual([...unflipped.data.subarray(0, 3)], [255, 0, 0]);
    // With jitter too (the other code path): same as jittering, then mirroring each row.
    const src = { data: Buffer.from(Array.from({ length: 4 * 3 * 3 }, (_, i) => (i * 37) % 256)), width: 4, height: 3 };
    const jitter = { brightness: 1.1, contrast: 0.9, saturation: 1.15 };
    const both = applyPixelAugment(src, { ...PLAIN, ...jitter, flip: true });
    const mirrored = applyPixelAugment(applyPixelAugment(src, { ...PLAIN, ...jitter }), { ...PLAIN, flip: true });
    assert.deepEqual([...both.data], [...mirrored.data]);
    assert.notDeepEqual([...both.data], [...applyPixelAugment(src, { ...PLAIN, ...jitter }).data]);
  });

  test('a crop of one quadrant of a four-colour image is that colour', async () => {
    const p = join(dir, 'quadrants.png');
    const colours: [number, number, number][] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];
    await rawImage(40, 40, (x, y) => colours[(y < 20 ? 0 : 2) + (x < 20 ? 0 : 1)]!).png().toFile(p);
    // area 0.2 of 40x40 at ratio 1 is an 18x18 box, inside one quadrant at any corner.
    const corners = [[0, 0], [1, 0], [0, 1], [1, 1]] as const;
    for (const [q, [x, y]] of corners.entries()) {
      const img = await loadAugmentedPixels(p, raw([8, 6]), { ...PLAIN, crop: { area: 0.2, ratio: 1, x, y } });
      assert.equal(img.width, 6);
      assert.equal(img.height, 8);
      for (let i = 0; i < img.data.length; i += 3) {
        assert.deepEqual([...img.data.subarray(i, i + 3)], colours[q], `quadrant ${q} pixel ${i / 3}`);
      }
    }
  });

  test('an EXIF-rotated JPEG is cropped as displayed', async () => {
    // Stored 60x20 red left, blue right; orientation 6 shows it 20x60 with red on top.
    const p = join(dir, 'rotated.jpg');
    await rawImage(60, 20, (x) => (x < 30 ? [255, 0, 0] : [0, 0, 255])).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toFile(p);
    const crop = { area: 0.18, ratio: 1, x: 0.5, y: 0 };
    const top = await loadAugmentedPixels(p, raw([4, 4]), { ...PLAIN, crop });
    const bottom = await loadAugmentedPixels(p, raw([4, 4]), { ...PLAIN, crop: { ...crop, y: 1 } });
    const [tr, , tb] = channelMeans(top.data);
    const [br, , bb] = channelMeans(bottom.data);
    assert.ok(tr > 230 && tb < 25, `top should be red, got r=${tr} b=${tb}`);
    assert.ok(bb > 230 && br < 25, `bottom should be blue, got r=${br} b=${bb}`);
    // A box taller than the stored height only fits the displayed frame: it must not fail.
    const tall = await loadAugmentedPixels(p, raw([4, 4]), { ...PLAIN, crop: { area: 0.9, ratio: 0.34, x: 0, y: 0 } });
    assert.equal(tall.width * tall.height, 16);
  });

  test('colour jitter stays in [0, 255]; brightness 1.2 raises the mean, saturation 0 makes grey', async () => {
    const p = join(dir, 'noisy.png');
    await colourImage([200, 120, 40], 40, 30).png().toFile(p);
    const spec = raw([12, 12]);
    const load = async (params: Partial<AugmentParams>) => {
      const t = new Float32Array(tensorLength(spec));
      await loadAugmentedInto(t, 0, p, spec, { ...PLAIN, ...params });
      return t;
    };
    const base = await load({});
    const bright = await load({ brightness: 1.2 });
    assert.ok(mean(bright) > mean(base) + 10, `mean ${mean(bright)} vs ${mean(base)}`);
    for (const params of [{ brightness: 1.2, contrast: 1.2, saturation: 1.2 }, { brightness: 0.8, contrast: 0.8, saturation: 0.8 }, { brightness: 1.99, contrast: 1.99 }, { brightness: 1.99 }]) {
      const t = await load(params);
      for (let i = 0; i < t.length; i++) {
        assert.ok(t[i]! >= -1e-3 && t[i]! <= 255 + 1e-3, `value ${t[i]} with ${JSON.stringify(params)}`);
      }
    }
    // Saturates rather than wrapping: every red value here is above 255 / 1.99.
    const [sr] = channelMeans(await load({ brightness: 1.99 }));
    assert.ok(Math.abs(sr - 255) < 1e-3, `red mean ${sr} should be 255`);
    const grey = applyPixelAugment({ data: Buffer.from([200, 100, 0]), width: 1, height: 1 }, { ...PLAIN, saturation: 0 });
    assert.deepEqual([...grey.data], [118, 118, 118]);
    // Contrast 0 is the mean grey everywhere (the luma weights sum to 0.9999, as in torchvision).
    const flat = applyPixelAugment({ data: Buffer.from([0, 0, 0, 255, 255, 255]), width: 2, height: 1 }, { ...PLAIN, contrast: 0 });
    assert.deepEqual([...flat.data], [127, 127, 127, 127, 127, 127]);
  });

  test('views are exactly the model input size for portrait, landscape and tiny images', async () => {
    const sizes = [[30, 80], [80, 30], [1, 1], [3, 2], [2, 3]] as const;
    for (const [w, h] of sizes) {
      const p = join(dir, `s${w}x${h}.png`);
      await colourImage([90, 160, 30], w, h).png().toFile(p);
      for (const spec of [raw([7, 5]), raw([7, 5], { cropPct: 0.875 })]) {
        for (const v of augmentedViews([p], 4, 5, DEFAULT_AUGMENT)[0]!) {
          const img = await loadAugmentedPixels(p, spec, v);
          assert.equal(img.width, 5, `width for ${w}x${h}`);
          assert.equal(img.height, 7, `height for ${w}x${h}`);
          assert.equal(img.data.length, 5 * 7 * 3);
        }
      }
    }
  });

  test('unreadable files throw ImageError; a tensor that does not fit is a RangeError', async () => {
    const bad = join(dir, 'bad.jpg');
    await writeFile(bad, 'not an image');
    const spec = raw([4, 4]);
    const view = sampleAugment(1, 'bad', 0, DEFAULT_AUGMENT);
    await assert.rejects(loadAugmentedInto(new Float32Array(48), 0, bad, spec, view), ImageError);
    await assert.rejects(loadAugmentedInto(new Float32Array(48), 0, join(dir, 'missing.jpg'), spec, view), (e: unknown) => e instanceof ImageError && /not found/.test(e.reason));
    await assert.rejects(loadAugmentedInto(new Float32Array(47), 0, gradient, spec, view), RangeError);
  });
});

describe('extraction with augmented views', () => {
  let modelPath: string;
  let paths: string[];
  before(async () => {
    modelPath = join(dir, 'tiny.onnx');
    await writeFile(modelPath, tinyClassifier({ metadata: { 'Image.NominalPixelRange': 'Normalized_0_1', 'Image.BitmapPixelFormat': 'Rgb8' } }));
    paths = [];
    for (let i = 0; i < 3; i++) {
      const p = join(dir, `e${i}.png`);
      await rawImage(24, 16, (x, y) => [(x * 10 + i * 60) % 256, (y * 15) % 256, (255 - x * 9) % 256]).png().toFile(p);
      paths.push(p);
    }
    const bad = join(dir, 'e-bad.jpg');
    await writeFile(bad, Buffer.alloc(0));
    paths.splice(1, 0, bad);
  });

  test('views are cached apart from each other and from plain rows; bad files are skipped and reported', async () => {
    const bb = await Backbone.load(modelPath);
    try {
      const root = join(dir, 'cache');
      const plain0 = await bb.features(paths, { cache: bb.cacheFor(undefined, root) });
      assert.equal(plain0.computed, 3);
      const views = augmentedViews(paths.map((p) => p.slice(dir.length + 1)), 2, 42, DEFAULT_AUGMENT);
      const flat = flattenViews(paths, views);
      const first = await bb.features(flat.paths, { cache: bb.cacheFor(undefined, root), augment: flat.augment, batchSize: 3 });
      assert.equal(first.fromCache, 0, 'plain rows must not serve views');
      assert.equal(first.computed, 6);
      assert.deepEqual(first.kept, [0, 1, 4, 5, 6, 7]);
      assert.deepEqual(first.skipped.map((s) => s.path), [paths[1], paths[1]]);
      assert.ok(first.skipped.every((s) => /empty/.test(s.reason)), first.skipped.map((s) => s.reason).join('; '));
      const row = (r: typeof first, j: number) => Array.from(r.features.subarray(j * r.dim, (j + 1) * r.dim));
      assert.notDeepEqual(row(first, 0), row(first, 1), 'view 0 and view 1 of an image differ');
      assert.notDeepEqual(row(first, 0), row(plain0, 0), 'a view differs from the plain row');

      const cache2 = bb.cacheFor(undefined, root);
      const second = await bb.features(flat.paths, { cache: cache2, augment: flat.augment, batchSize: 4 });
      assert.equal(second.fromCache, 6);
      assert.equal(second.computed, 0);
      assert.deepEqual(second.skipped, first.skipped);
      assert.deepEqual(Array.from(second.features), Array.from(first.features));

      // Without a cache, in another order and batch size: the same rows for the same (item, view).
      const order = [7, 2, 6, 0, 5, 3, 1, 4];
      const shuffled = await bb.features(order.map((j) => flat.paths[j]!), { augment: order.map((j) => flat.augment[j]), batchSize: 1 });
      shuffled.kept.forEach((k, r) => {
        const j = first.kept.indexOf(order[k]!);
        assert.deepEqual(row(shuffled, r), row(first, j), `row for flat index ${order[k]}`);
      });

      const plain1 = await bb.features(paths, { cache: bb.cacheFor(undefined, root) });
      assert.equal(plain1.fromCache, 3);
      assert.deepEqual(Array.from(plain1.features), Array.from(plain0.features));
      await assert.rejects(bb.features(paths, { augment: flat.augment }), RangeError);
    } finally {
      await bb.dispose();
    }
  });
});
