import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { loadRun } from '../src/learn/run.js';
import { evalRun } from '../src/tasks/evaluate.js';
import { extractDir } from '../src/tasks/extract.js';
import { predict } from '../src/tasks/predict.js';
import { trainRun } from '../src/tasks/train.js';
import { renderReport } from '../src/tasks/report.js';
import { mostConfused } from '../src/learn/metrics.js';
import { colourImage, writeAwkwardFiles, type Rgb } from './helpers/images.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';

let dir: string;
let model: string;
const COLOURS: Record<string, Rgb> = { red: [220, 30, 30], blue: [30, 40, 220] };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-train-'));
  model = join(dir, 'tiny.onnx');
  await writeFile(model, tinyClassifier({ size: 16, metadata: { 'Image.NominalPixelRange': 'Normalized_0_1', 'Image.BitmapPixelFormat': 'Rgb8' } }));
  for (const split of ['train', 'val']) {
    for (const [name, rgb] of Object.entries(COLOURS)) {
      const d = join(dir, split, name);
      await mkdir(d, { recursive: true });
      for (let i = 0; i < 12; i++) {
        const shade: Rgb = [rgb[0] + (i % 3) * 5, rgb[1] + (i % 4) * 5, rgb[2] - (i % 5) * 5];
        await colourImage(shade, 30 + i, 24, i + (split === 'val' ? 100 : 0)).jpeg().toFile(join(d, `${name}-${i}.jpg`));
      }
    }
  }
  // The awkward files go into the training classes: readable ones must be used, unreadable ones reported.
  await writeAwkwardFiles(join(dir, 'train', 'red'), COLOURS.red!);
});
after(async () => rm(dir, { recursive: true, force: true }));

describe('train / eval / predict on a model built in the test', () => {
  test('bad inputs: training runs, unreadable files skipped and reported, readable ones used', async () => {
    const out = join(dir, 'run');
    const res = await trainRun({ data: join(dir, 'train'), val: join(dir, 'val'), model, out, cache: join(dir, 'cache'), head: { epochs: 60 } });
    const skippedNames = res.skipped.map((s) => basename(s.path)).sort();
    assert.deepEqual(skippedNames, ['huge.png', 'text.jpg', 'truncated.jpg', 'zero-bytes.jpg']);
    for (const s of res.skipped) assert.ok(s.reason.length > 5, `reason for ${s.path}: ${s.reason}`);
    assert.match(res.skipped.find((s) => s.path.endsWith('huge.png'))!.reason, /pixel|limit/i);
    // 12 + 7 readable awkward files of class red, 12 of blue.
    assert.equal(res.counts.train, 12 + 7 + 12);
    assert.equal(res.counts.val, 24);
    assert.equal(res.validation.accuracy, 1);

    const saved = JSON.parse(await readFile(join(out, 'skipped.json'), 'utf8'));
    assert.equal(saved.length, 4);
    const run = await loadRun(out);
    assert.deepEqual(run.config.classes, ['blue', 'red']);
    for (const png of ['confusion.png', 'training-curve.png', 'top-losses.png']) {
      const meta = await sharp(join(out, png)).metadata();
      assert.equal(meta.format, 'png');
      assert.ok((meta.width ?? 0) > 200, '(meta.width ?? 0) > 200');
    }

    // The readable awkward files are classified as their colour: orientation/colour conversion kept them red.
    const awkward = ['png-named.jpg', 'gif-named.jpg', 'cmyk.jpg', '16bit.png', 'exif-rotated.jpg', 'one-pixel.png', 'alpha.png'].map((f) => join(dir, 'train', 'red', f));
    const pred = await predict(out, awkward, { top: 2, cache: false });
    assert.equal(pred.kind, 'run');
    assert.equal(pred.predictions.length, 7);
    for (const p of pred.predictions) assert.equal(p.top[0]!.label, 'red', `${p.path}: ${JSON.stringify(p.top)}`);

    const ev = await evalRun(out, join(dir, 'val'), { cache: false });
    assert.equal(ev.evaluation.n, 24);
    assert.equal(ev.evaluation.accuracy, 1);
    assert.equal((await sharp(join(ev.out, 'confusion.png')).metadata()).format, 'png');
  });

  test('report: one self-contained HTML page with the numbers and the pictures embedded', async () => {
    const res = await renderReport(join(dir, 'run'));
    const html = await readFile(res.out, 'utf8');
    assert.match(html, /100\.0%<\/b><span>validation accuracy/);
    assert.equal((html.match(/src="data:image\/png;base64,/g) ?? []).length, 3, 'curves, confusion, top losses embedded');
    assert.doesNotMatch(html, /src="(?!data:)/, 'no external resources');
    assert.match(html, /<td>red<\/td>/);
    assert.match(html, /zero-bytes\.jpg/);
  });

  test('most confused pairs come from the off-diagonal cells, largest first', () => {
    const pairs = mostConfused([[5, 2, 0], [4, 1, 1], [0, 2, 9]], ['a', 'b', 'c']);
    assert.deepEqual(pairs, [
      { trueClass: 'b', predictedClass: 'a', count: 4 },
      { trueClass: 'a', predictedClass: 'b', count: 2 },
      { trueClass: 'c', predictedClass: 'b', count: 2 },
      { trueClass: 'b', predictedClass: 'c', count: 1 },
    ]);
  });

  test('a seeded split when no --val is given; same seed, same result', async () => {
    const a = await trainRun({ data: join(dir, 'val'), model, out: join(dir, 'split-a'), cache: false, seed: 3, valFraction: 0.25 });
    const b = await trainRun({ data: join(dir, 'val'), model, out: join(dir, 'split-b'), cache: false, seed: 3, valFraction: 0.25 });
    assert.equal(a.counts.val, 6);
    assert.equal(a.counts.train, 18);
    assert.deepEqual(a.validation, b.validation);
    assert.deepEqual(a.head.toJSON(), b.head.toJSON());
  });

  test('extract writes features.npy + index.json, and a second run is served from the cache', async () => {
    const out = join(dir, 'feats');
    const cache = join(dir, 'cache-x');
    const first = await extractDir(model, join(dir, 'val'), { out, cache });
    assert.equal(first.n, 24);
    assert.equal(first.computed, 24);
    const second = await extractDir(model, join(dir, 'val'), { cache });
    assert.equal(second.fromCache, 24);
    const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8'));
    assert.deepEqual(index.shape, [24, 4]);
    assert.deepEqual(index.classes, ['blue', 'red']);
    const npy = await readFile(join(out, 'features.npy'));
    assert.equal(npy.subarray(1, 6).toString(), 'NUMPY');
    const headerLen = npy.readUInt16LE(8);
    assert.equal((10 + headerLen) % 64, 0);
    assert.match(npy.subarray(10, 10 + headerLen).toString(), /'shape': \(24, 4\)/);
    assert.equal(npy.length - 10 - headerLen, 24 * 4 * 4);
  });

  test('eval with a folder whose classes the run does not know is a clear error', async () => {
    const other = join(dir, 'other');
    await mkdir(join(other, 'green'), { recursive: true });
    await mkdir(join(other, 'red'), { recursive: true });
    await colourImage([0, 200, 0]).jpeg().toFile(join(other, 'green', 'g.jpg'));
    await colourImage([200, 0, 0]).jpeg().toFile(join(other, 'red', 'r.jpg'));
    await assert.rejects(evalRun(join(dir, 'run'), other, { cache: false }), /green/);
  });
});

describe('Cats vs Dogs on the shared MobileNet', { skip: SKIP_SHARED }, () => {
  test('frozen features + linear head: validation accuracy >= 0.98', async () => {
    const out = join(dir, 'cats-dogs');
    const res = await trainRun({
      data: join(SHARED!, 'data', 'cats_vs_dogs', 'train'),
      val: join(SHARED!, 'data', 'cats_vs_dogs', 'validation'),
      model: MOBILENET,
      out,
    });
    assert.equal(res.counts.train, 2000);
    assert.equal(res.counts.val, 1000);
    assert.ok(res.validation.accuracy >= 0.98, `validation accuracy ${res.validation.accuracy}`);
    const pred = await predict(out, [join(SHARED!, 'data', 'cats_vs_dogs', 'validation', 'cats', 'cat.2000.jpg')], { top: 2 });
    assert.equal(pred.predictions[0]!.top[0]!.label, 'cats');
  });

  test('Oxford-IIIT Pet, species labels, seeded split', async () => {
    const res = await trainRun({ data: join(SHARED!, 'data', 'oxford_pets'), label: 'species', model: MOBILENET, out: join(dir, 'pets'), seed: 0, valFraction: 0.3 });
    assert.deepEqual((await loadRun(join(dir, 'pets'))).config.classes, ['cat', 'dog']);
    assert.equal(res.counts.train + res.counts.val, 594);
    assert.ok(res.validation.accuracy > 0.9, `species accuracy ${res.validation.accuracy}`);
  });
});
