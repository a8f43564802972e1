import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { Backbone, softmaxRows } from '../src/engine/backbone.js';
import { FeatureCache } from '../src/engine/feature-cache.js';
import { loadOnnx } from '../src/models/onnx-file.js';
import { executionProviders } from '../src/engine/ort.js';
import { GraftError } from '../src/errors.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';

let dir: string;
let modelPath: string;

/** A solid-colour PNG of the given size. */
async function solid(path: string, rgb: [number, number, number], size = 16): Promise<void> {
  await sharp({ create: { width: size, height: size, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }).png().toFile(path);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-engine-'));
  modelPath = join(dir, 'tiny.onnx');
  await writeFile(modelPath, tinyClassifier({ metadata: { 'Image.NominalPixelRange': 'Normalized_0_1', 'Image.BitmapPixelFormat': 'Rgb8' } }));
});
after(async () => rm(dir, { recursive: true, force: true }));

describe('model metadata and preprocessing', () => {
  test('preprocessing comes from the ONNX input shape and Windows ML image metadata', async () => {
    const bb = await Backbone.load(modelPath);
    try {
      assert.deepEqual(bb.spec.size, [8, 8]);
      assert.equal(bb.spec.layout, 'NCHW');
      assert.deepEqual(bb.spec.mean, [0, 0, 0]);
      assert.deepEqual(bb.spec.std, [1, 1, 1]);
      assert.equal(bb.ref.featureTensor, 'features');
      assert.equal(bb.ref.logitsTensor, 'logits');
      assert.deepEqual(bb.ref.warnings, []);
    } finally {
      await bb.dispose();
    }
  });

  test('without metadata: ImageNet mean/std with a warning; flags win over metadata', async () => {
    const bare = join(dir, 'bare.onnx');
    await writeFile(bare, tinyClassifier());
    const bb = await Backbone.load(bare, { preprocess: { size: [4, 4] } });
    try {
      assert.deepEqual(bb.spec.mean, [0.485, 0.456, 0.406]);
      assert.match(bb.ref.warnings.join('\n'), /ImageNet mean\/std/);
      assert.deepEqual(bb.spec.size, [4, 4]);
    } finally {
      await bb.dispose();
    }
  });

  test('a sidecar JSON beside the model overrides the model metadata', async () => {
    const p = join(dir, 'side.onnx');
    await writeFile(p, tinyClassifier({ metadata: { 'Image.NominalPixelRange': 'Normalized_0_1' } }));
    await writeFile(`${p}.json`, JSON.stringify({ preprocess: { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] }, labels: ['a', 'b', 'c'] }));
    const bb = await Backbone.load(p);
    try {
      assert.deepEqual(bb.spec.mean, [0.5, 0.5, 0.5]);
      assert.deepEqual(bb.ref.labels, ['a', 'b', 'c']);
      assert.match(bb.ref.specSource, /sidecar/);
    } finally {
      await bb.dispose();
    }
  });

  test('non-ONNX, empty and missing model files are clear errors naming the file', async () => {
    const txt = join(dir, 'notes.onnx');
    await writeFile(txt, 'this is not a model\n'.repeat(20));
    await assert.rejects(loadOnnx(txt), (e: Error) => e.message.includes(txt) && /not an ONNX model/.test(e.message));
    const empty = join(dir, 'empty.onnx');
    await writeFile(empty, '');
    await assert.rejects(loadOnnx(empty), /empty file/);
    await assert.rejects(loadOnnx(join(dir, 'nope.onnx')), /model not found: .*nope\.onnx/);
    const png = join(dir, 'image.onnx');
    await solid(png, [1, 2, 3]);
    await assert.rejects(loadOnnx(png), /not an ONNX model/);
  });

  test('an unknown feature node lists the outputs', async () => {
    await assert.rejects(Backbone.load(modelPath, { featureNode: 'nope' }), /no output or node named 'nope'.*features, logits/);
  });
});

describe('extraction', () => {
  test('features equal a hand computation, in input order, unreadable files skipped and reported', async () => {
    const red = join(dir, 'red.png');
    const blue = join(dir, 'blue.png');
    const bad = join(dir, 'bad.jpg');
    await solid(red, [255, 0, 0]);
    await solid(blue, [0, 0, 255]);
    await writeFile(bad, 'not an image');
    const bb = await Backbone.load(modelPath);
    try {
      const res = await bb.features([red, bad, blue], { batchSize: 2 });
      assert.deepEqual(res.kept, [0, 2]);
      assert.equal(res.skipped.length, 1);
      assert.equal(res.skipped[0]!.path, bad);
      assert.equal(res.dim, 4);
      // Solid colour, range [0,1]: feature j = relu(sum_ch w[j,ch] * x_ch + 0.1) with w[j,ch] = sin(1 + 3j + ch).
      const expect = (rgb: number[]) => [0, 1, 2, 3].map((j) => Math.max(0, rgb.reduce((s, v, ch) => s + Math.sin(1 + 3 * j + ch) * v, 0) + 0.1));
      const got = Array.from(res.features);
      const want = [...expect([1, 0, 0]), ...expect([0, 0, 1])];
      got.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-5, `feature ${i}: ${v} vs ${want[i]}`));
    } finally {
      await bb.dispose();
    }
  });

  test('cut at an inner node: the tensor of that node', async () => {
    const red = join(dir, 'red2.png');
    await solid(red, [255, 0, 0]);
    const bb = await Backbone.load(modelPath, { featureNode: 'pool' });
    try {
      const res = await bb.features([red]);
      assert.equal(res.dim, 4);
      const full = await Backbone.load(modelPath);
      const ref = await full.features([red]);
      await full.dispose();
      assert.deepEqual(Array.from(res.features), Array.from(ref.features));
    } finally {
      await bb.dispose();
    }
  });

  test('the cache serves a second run, detects a damaged entry and recomputes it', async () => {
    const imgs = [];
    for (let i = 0; i < 5; i++) {
      const p = join(dir, `c${i}.png`);
      await solid(p, [i * 50, 100, 255 - i * 40]);
      imgs.push(p);
    }
    const bad = join(dir, 'c-bad.jpg');
    await writeFile(bad, Buffer.alloc(0));
    imgs.push(bad);
    const root = join(dir, 'cache');
    const bb = await Backbone.load(modelPath);
    try {
      const first = await bb.features(imgs, { cache: bb.cacheFor(undefined, root) });
      assert.equal(first.computed, 5);
      assert.equal(first.fromCache, 0);
      const cache2 = bb.cacheFor(undefined, root);
      const second = await bb.features(imgs, { cache: cache2 });
      assert.equal(second.fromCache, 5);
      assert.equal(second.computed, 0);
      assert.deepEqual(second.skipped, first.skipped);
      assert.deepEqual(Array.from(second.features), Array.from(first.features));
      // Damage one entry: flip a byte of its payload.
      const sub = (await readdir(cache2.dir))[0]!;
      const file = join(cache2.dir, sub, (await readdir(join(cache2.dir, sub)))[0]!);
      const buf = await readFile(file);
      buf[buf.length - 1] ^= 0xff;
      await writeFile(file, buf);
      const cache3 = bb.cacheFor(undefined, root);
      const third = await bb.features(imgs, { cache: cache3 });
      assert.equal(cache3.corrupt, 1);
      assert.equal(third.computed + third.fromCache, 5);
      assert.equal(third.computed, first.computed === 5 ? third.computed : -1);
      assert.ok(third.computed >= 0 && third.computed <= 1, 'third.computed >= 0 && third.computed <= 1');
      assert.deepEqual(Array.from(third.features), Array.from(first.features));
    } finally {
      await bb.dispose();
    }
  });

  test('a cache entry with a valid checksum but the wrong length is treated as damaged and recomputed', async () => {
    const a = join(dir, 'len-a.png');
    const b = join(dir, 'len-b.png');
    await solid(a, [200, 40, 10]);
    await solid(b, [10, 40, 200]);
    const root = join(dir, 'cache-len');
    const bb = await Backbone.load(modelPath);
    try {
      const first = await bb.features([a, b], { cache: bb.cacheFor(undefined, root) });
      assert.equal(first.dim, 4);
      assert.equal(first.computed, 2);
      // Overwrite a's entry through the cache's own write path: well formed, checksum valid, but 3 floats, not 4.
      const writer = bb.cacheFor(undefined, root);
      await writer.put(a, { kind: 'features', data: new Float32Array([7, 8, 9]) });
      const raw = await writer.get(a);
      assert.ok(raw?.kind === 'features' && raw.data.length === 3, `the short entry decodes (checksum valid): ${JSON.stringify(raw)}`);
      assert.equal(writer.corrupt, 0);
      assert.equal(await writer.get(a, undefined, 4), undefined, 'with the expected length it is refused');
      assert.equal(writer.corrupt, 1);

      // Every image of the run cached (no row computed to compare with): still refused and recomputed.
      const c1 = bb.cacheFor(undefined, root);
      const alone = await bb.features([a], { cache: c1 });
      assert.equal(c1.corrupt, 1);
      assert.equal(alone.computed, 1);
      assert.equal(alone.fromCache, 0);
      assert.equal(alone.dim, 4);
      assert.deepEqual(Array.from(alone.features), Array.from(first.features.subarray(0, 4)));

      // The recomputed row was written back: the next run serves both from the cache, with the right length.
      const c2 = bb.cacheFor(undefined, root);
      const both = await bb.features([a, b], { cache: c2 });
      assert.equal(c2.corrupt, 0);
      assert.equal(both.fromCache, 2);
      assert.equal(both.dim, 4);
      assert.deepEqual(Array.from(both.features), Array.from(first.features));

      // Short again, now beside a good entry in the same batch: the good one is served, the short one recomputed.
      await writer.put(a, { kind: 'features', data: new Float32Array([7, 8, 9]) });
      const c3 = bb.cacheFor(undefined, root);
      const mixed = await bb.features([b, a], { cache: c3 });
      assert.equal(c3.corrupt, 1);
      assert.equal(mixed.fromCache, 1);
      assert.equal(mixed.computed, 1);
      assert.equal(mixed.features.length, 8);
      assert.deepEqual(Array.from(mixed.features), [...first.features.subarray(4, 8), ...first.features.subarray(0, 4)]);
    } finally {
      await bb.dispose();
    }
  });

  test('changing preprocessing or model changes the cache key', async () => {
    const info = (await loadOnnx(modelPath)).info;
    const bb = await Backbone.load(modelPath);
    const spec = bb.spec;
    await bb.dispose();
    const a = new FeatureCache('/c', info.sha256, 'features', spec);
    const b = new FeatureCache('/c', info.sha256, 'features', { ...spec, interpolation: 'bicubic' });
    const c = new FeatureCache('/c', 'other', 'features', spec);
    assert.notEqual(a.dir, b.dir);
    assert.notEqual(a.dir, c.dir);
  });

  test('softmax rows sum to one and keep the order', () => {
    const p = softmaxRows(new Float32Array([1, 2, 3, 0, 0, 0]), 2);
    assert.ok(Math.abs(p[0]! + p[1]! + p[2]! - 1) < 1e-6, 'Math.abs(p[0]! + p[1]! + p[2]! - 1) < 1e-6');
    assert.ok(p[2]! > p[1]! && p[1]! > p[0]!, 'p[2]! > p[1]! && p[1]! > p[0]!');
    assert.ok(Math.abs(p[3]! - 1 / 3) < 1e-6, 'Math.abs(p[3]! - 1 / 3) < 1e-6');
  });
});

test('execution providers: CPU by default, CUDA only when asked, unknown names refused with the variable named', () => {
  assert.deepEqual(executionProviders({}), ['cpu']);
  assert.deepEqual(executionProviders({ GRAFT_EXECUTION_PROVIDERS: ' CUDA ' }), ['cuda', 'cpu']);
  assert.deepEqual(executionProviders({ GRAFT_EXECUTION_PROVIDERS: 'cpu,cuda' }), ['cpu', 'cuda']);
  assert.throws(() => executionProviders({ GRAFT_EXECUTION_PROVIDERS: 'cuda,tpu' }),
    (e: unknown) => e instanceof GraftError && /GRAFT_EXECUTION_PROVIDERS: unknown execution provider 'tpu'/.test(e.message));
});
