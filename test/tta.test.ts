/**
 * Test-time augmentation: the views, their averaging, and the flag through train (recorded in the run), eval and
 * predict (the run's TTA by default, `none` to turn it off), extract; refused where it cannot apply.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Backbone } from '../src/engine/backbone.js';
import { averageViews, parseTta, ttaViews } from '../src/image/tta.js';
import { loadRun } from '../src/learn/run.js';
import { evalRun } from '../src/tasks/evaluate.js';
import { runExtraction } from '../src/tasks/features.js';
import { predict } from '../src/tasks/predict.js';
import { trainRun } from '../src/tasks/train.js';
import { colourImage, type Rgb } from './helpers/images.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-tta-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

describe('TTA views and averaging', () => {
  test('views: flip = plain + mirrored; crop = those + four corner crops; bad names refused', () => {
    assert.equal(ttaViews('flip').length, 2);
    assert.equal(ttaViews('flip')[0], undefined);
    assert.equal(ttaViews('flip')[1]!.flip, true);
    const crop = ttaViews('crop');
    assert.equal(crop.length, 6);
    assert.deepEqual(crop.slice(2).map((v) => [v!.crop!.x, v!.crop!.y]), [[0, 0], [1, 0], [0, 1], [1, 1]]);
    assert.equal(parseTta('none'), undefined);
    assert.throws(() => parseTta('rotate'), /--tta rotate: one of none, flip, crop/);
  });

  test('averageViews: mean per item, an item with a failed view dropped', () => {
    // 3 items x 2 views, dim 2; item 1's second view failed (flat index 3 missing).
    const kept = [0, 1, 2, 4, 5];
    const rows = Float32Array.from([1, 2, 3, 4, 10, 20, 5, 6, 7, 8]);
    const r = averageViews(rows, 2, kept, 2, 3);
    assert.deepEqual(r.kept, [0, 2]);
    assert.deepEqual(Array.from(r.features), [2, 3, 6, 7]);
  });
});

describe('TTA on the real MobileNet', { skip: SKIP_SHARED }, () => {
  test('flip TTA features are the mean of the plain and the mirrored view, cached apart', async () => {
    const cvd = join(SHARED!, 'data', 'cats_vs_dogs', 'validation', 'cats');
    const paths = (await readdir(cvd)).sort().slice(0, 3).map((n) => join(cvd, n));
    const bb = await Backbone.load(MOBILENET);
    try {
      const cache = join(dir, 'cache');
      const plain = await runExtraction(bb, paths, { cache });
      const mirrored = await bb.features(paths, { augment: paths.map(() => ttaViews('flip')[1]) });
      const tta = await runExtraction(bb, paths, { cache, tta: 'flip' });
      assert.deepEqual(tta.kept, [0, 1, 2]);
      const d = tta.dim;
      let maxDiff = 0;
      let viewDiff = 0;
      for (let i = 0; i < 3 * d; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(tta.features[i]! - (plain.features[i]! + mirrored.features[i]!) / 2));
        viewDiff = Math.max(viewDiff, Math.abs(plain.features[i]! - mirrored.features[i]!));
      }
      assert.ok(maxDiff < 1e-5, `TTA row vs mean of views: ${maxDiff}`);
      assert.ok(viewDiff > 0.01, 'the mirrored view is a different input');
      // Second time: every view from the cache (plain rows shared with the plain extraction).
      const again = await runExtraction(bb, paths, { cache, tta: 'flip' });
      assert.equal(again.fromCache, 6);
      assert.deepEqual(again.features, tta.features);
    } finally {
      await bb.dispose();
    }
  });
});

describe('TTA through train, eval, predict', () => {
  test('the run records its TTA; eval and predict use it unless told none; --queue refuses it', async () => {
    const model = join(dir, 'tiny.onnx');
    await writeFile(model, tinyClassifier({ size: 16, metadata: { 'Image.NominalPixelRange': 'Normalized_0_1', 'Image.BitmapPixelFormat': 'Rgb8' } }));
    const colours: Record<string, Rgb> = { red: [220, 30, 30], blue: [30, 40, 220] };
    for (const [name, rgb] of Object.entries(colours)) {
      await mkdir(join(dir, 'data', name), { recursive: true });
      for (let i = 0; i < 8; i++) await colourImage(rgb, 30 + i, 24, i).jpeg().toFile(join(dir, 'data', name, `${i}.jpg`));
    }
    const out = join(dir, 'run');
    const cache = join(dir, 'cache2');
    const res = await trainRun({ data: join(dir, 'data'), model, out, cache, tta: 'crop', head: { epochs: 30 } });
    assert.equal(res.counts.train + res.counts.val, 16);
    assert.equal((await loadRun(out)).config.tta, 'crop');
    const ev = await evalRun(out, join(dir, 'data'), { cache, out: join(dir, 'eval') });
    assert.equal(ev.evaluation.n, 16);
    assert.equal(ev.evaluation.accuracy, 1);
    // predict: with the run's TTA the probabilities differ from the plain image's (crops see other pixels).
    const img = join(dir, 'data', 'red', '0.jpg');
    const withTta = await predict(out, [img], { cache, top: 2 });
    const plain = await predict(out, [img], { cache, top: 2, tta: 'none' });
    assert.equal(withTta.predictions[0]!.top[0]!.label, 'red');
    assert.equal(plain.predictions[0]!.top[0]!.label, 'red');
    assert.notEqual(withTta.predictions[0]!.top[0]!.probability, plain.predictions[0]!.top[0]!.probability);
    await assert.rejects(trainRun({ data: join(dir, 'data'), model, out: join(dir, 'run-q'), tta: 'flip', queue: { url: 'redis://127.0.0.1:1' } as never }), /--tta with --queue/);
  });
});
