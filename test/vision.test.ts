/** Dreams and adversarial examples: the lesson's gradient pictures, checked on the saved 8-bit PNGs. */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeImage } from '../src/image/decode.js';
import { attackTask } from '../src/tasks/attack.js';
import { dreamTask } from '../src/tasks/dream.js';
import { trainRun } from '../src/tasks/train.js';
import { parseEps } from '../src/vision/attack.js';
import { GraftError } from '../src/errors.js';
import { classifierGraph, loadClassifier, resolveClass } from '../src/vision/classifier.js';
import { colourImage, type Rgb } from './helpers/images.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-vision-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

describe('arguments', () => {
  test('eps: fractions and decimals; malformed or out of range refused', () => {
    assert.equal(parseEps('4/255'), 4 / 255);
    assert.equal(parseEps('0.0157'), 0.0157);
    for (const bad of ['0', '-1/255', '2', 'abc', '1/0', '']) assert.equal(parseEps(bad), undefined, bad);
  });

  test('classes by name or index; unknown names list close matches', () => {
    const classes = ['tabby', 'tiger_cat', 'Persian_cat', 'zebra'];
    assert.equal(resolveClass(classes, 'zebra'), 3);
    assert.equal(resolveClass(classes, 'tiger cat'), 1);
    assert.equal(resolveClass(classes, '2'), 2);
    assert.throws(() => resolveClass(classes, 'persian'), /unknown class 'persian'; close matches: Persian_cat \(2\)/);
  });
});

describe('attack a graft run (head on a backbone, both built in the test)', () => {
  test('FGSM and PGD turn red into blue within eps, verified on the saved PNG', async () => {
    const model = join(dir, 'tiny.onnx');
    await writeFile(model, tinyClassifier({ size: 16, metadata: { 'Image.NominalPixelRange': 'Normalized_0_1', 'Image.BitmapPixelFormat': 'Rgb8' } }));
    const colours: Record<string, Rgb> = { red: [150, 90, 110], blue: [110, 90, 150] };
    for (const [name, rgb] of Object.entries(colours)) {
      await mkdir(join(dir, 'data', name), { recursive: true });
      for (let i = 0; i < 10; i++) await colourImage([rgb[0] + i, rgb[1], rgb[2] - i], 20, 20, i).png().toFile(join(dir, 'data', name, `${i}.png`));
    }
    const run = join(dir, 'run');
    await trainRun({ data: join(dir, 'data'), model, out: run, cache: false, valFraction: 0.2 });
    const img = join(dir, 'data', 'red', '0.png');
    const eps = 24 / 255;
    for (const method of ['fgsm', 'pgd'] as const) {
      const res = await attackTask(run, [img], { method, eps: [eps], target: 'blue', out: join(dir, `att-${method}`) });
      const r = res.results[0]!;
      assert.equal(r.before[0]!.class, 'red', 'starts red');
      assert.ok(r.success, `${method}: ${JSON.stringify(r.after)}`);
      assert.ok(r.linfLevels <= 24, `L-inf ${r.linfLevels}`);
      const saved = await decodeImage(r.files.adversarial);
      assert.equal(saved.width, 16);
      assert.ok((await readdir(join(dir, `att-${method}`))).includes('summary.json'), 'summary written');
    }
    // Untargeted: anything but the original class; a tiny budget fails and says so.
    const un = await attackTask(run, [img], { method: 'pgd', eps: [eps, 1 / 255], out: join(dir, 'att-untargeted') });
    assert.equal(un.target, undefined);
    assert.deepEqual(un.perEps.map((e) => e.n), [1, 1]);
    assert.equal(un.perEps[0]!.successRate, 1, 'eps 24/255 fools it');
    assert.equal(un.results[0]!.after[0]!.class, 'blue');
    assert.equal(un.perEps[1]!.successRate, 0, 'eps 1/255 is too small for these well separated colours');
    assert.equal(un.perEps[1]!.robustAccuracy, 1);
  });
});

describe("a run's model is checked by its SHA-256", () => {
  test('a run whose model file changed after training is refused, naming the file', async () => {
    const model = join(dir, 'checked.onnx');
    const meta = { 'Image.NominalPixelRange': 'Normalized_0_1', 'Image.BitmapPixelFormat': 'Rgb8' };
    await writeFile(model, tinyClassifier({ size: 16, metadata: meta }));
    for (const [name, rgb] of Object.entries({ red: [150, 90, 110], blue: [110, 90, 150] } as Record<string, Rgb>)) {
      await mkdir(join(dir, 'checked-data', name), { recursive: true });
      for (let i = 0; i < 4; i++) await colourImage([rgb[0] + i, rgb[1], rgb[2] - i], 20, 20, i).png().toFile(join(dir, 'checked-data', name, `${i}.png`));
    }
    const run = join(dir, 'checked-run');
    await trainRun({ data: join(dir, 'checked-data'), model, out: run, cache: false, valFraction: 0.25 });
    const before = await loadClassifier(run);
    assert.deepEqual(before.classes, ['blue', 'red'], 'the untouched run loads');
    await before.dispose();

    // Same graph, other bytes: what a re-export or re-download in place leaves behind.
    await writeFile(model, tinyClassifier({ size: 16, metadata: { ...meta, note: 'replaced' } }));
    const refused = (e: unknown) => e instanceof GraftError && (e as Error).message.startsWith(`${model}: this model file changed since the run in ${run} was trained`);
    await assert.rejects(loadClassifier(run), refused);
    await assert.rejects(classifierGraph(run), refused);
  });
});

describe('shared MobileNet: dream and attack bars', { skip: SKIP_SHARED }, () => {
  test('PGD eps 2/255 turns at least 95% of 50 validation dogs into "tabby" (saved PNGs, ONNX Runtime)', async () => {
    const dogs = join(SHARED!, 'data', 'cats_vs_dogs', 'validation', 'dogs');
    const files = (await readdir(dogs)).sort().slice(0, 50).map((f) => join(dogs, f));
    const out = join(dir, 'attack-dogs');
    const res = await attackTask(MOBILENET, files, { method: 'pgd', eps: [2 / 255], target: 'tabby', out });
    assert.equal(res.results.length, 50);
    const rate = res.perEps[0]!.successRate;
    assert.ok(rate >= 0.95, `success rate ${rate}`);
    for (const r of res.results) {
      const saved = await decodeImage(r.files.adversarial);
      assert.equal(saved.width, 224);
      assert.ok(r.linfLevels <= 2, `${r.image}: L-inf ${r.linfLevels}/255`);
    }
  });

  test('dream: "tabby" and "zebra" reach p >= 0.92 on the saved PNG; TV well below --no-tv (pixel parameterisation)', async () => {
    const steps = 200;
    const tabby = await dreamTask(MOBILENET, { className: 'tabby', out: join(dir, 'tabby.png'), steps });
    const zebra = await dreamTask(MOBILENET, { className: 'zebra', out: join(dir, 'zebra.png'), steps });
    assert.ok(tabby.probability >= 0.92, `tabby p=${tabby.probability}`);
    assert.ok(zebra.probability >= 0.92, `zebra p=${zebra.probability}`);
    // The total-variation term matters where pixels are free (plain gradient ascent); the default Fourier
    // parameterisation is smoother than plain ascent without it.
    const plain = { param: 'pixel' as const, decorrelate: false, transforms: false, jitter: 0 };
    const tv = await dreamTask(MOBILENET, { className: 'tabby', out: join(dir, 'tabby-tv.png'), steps, ...plain, tv: 1 });
    const noTv = await dreamTask(MOBILENET, { className: 'tabby', out: join(dir, 'tabby-no-tv.png'), steps, ...plain, tv: 0 });
    assert.ok(tv.totalVariation < 0.5 * noTv.totalVariation, `TV ${tv.totalVariation} vs no-tv ${noTv.totalVariation}`);
    assert.ok(tabby.totalVariation < noTv.totalVariation, `default TV ${tabby.totalVariation} vs plain ${noTv.totalVariation}`);
    assert.equal((await decodeImage(tabby.png)).width, 224);
  });
});
