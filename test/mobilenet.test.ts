/** Integration tests on the real MobileNet v1 0.75 from ../shared (skipped with a message when it is absent). */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Backbone, softmaxRows, topK } from '../src/engine/backbone.js';
import { imagenetClasses } from '../src/models/labels.js';
import { predict } from '../src/tasks/predict.js';
import { layers } from '../src/tasks/layers.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

describe('shared MobileNet v1 0.75 on ONNX Runtime', { skip: SKIP_SHARED }, () => {
  test('no flags: preprocessing read from the model (224, NCHW, RGB, [-1, 1]), no warnings', async () => {
    const bb = await Backbone.load(MOBILENET);
    try {
      assert.deepEqual(bb.spec.size, [224, 224]);
      assert.equal(bb.spec.layout, 'NCHW');
      assert.equal(bb.spec.channelOrder, 'RGB');
      assert.deepEqual(bb.spec.mean, [0.5, 0.5, 0.5]);
      assert.deepEqual(bb.spec.std, [0.5, 0.5, 0.5]);
      assert.deepEqual(bb.ref.warnings, []);
      assert.equal(bb.ref.featureTensor, 'features');
      assert.equal(bb.ref.logitsTensor, 'logits');
      assert.equal(bb.ref.labels?.length, 1000);
      assert.equal(bb.ref.labels?.[281], 'tabby');
    } finally {
      await bb.dispose();
    }
  });

  test('layers lists the 14 conv blocks that --finetune counts from the top', async () => {
    const res = await layers(MOBILENET, { shapes: false });
    assert.equal(res.blocks.length, 14);
    assert.equal(res.blocks.at(-1)!.convs.length, 2, 'depthwise + pointwise');
  });

  test('golden formula input: same features and top-5 as the golden file', async () => {
    const golden = JSON.parse(readFileSync(join(SHARED!, 'models', 'mobilenet_v1_0.75_224.golden.json'), 'utf8'));
    const bb = await Backbone.load(MOBILENET);
    try {
      const x = new Float32Array(3 * 224 * 224);
      for (let c = 0; c < 3; c++) for (let h = 0; h < 224; h++) for (let w = 0; w < 224; w++) x[c * 224 * 224 + h * 224 + w] = Math.sin(0.01 * (h * 224 + w) + c);
      const out = await bb.runTensor(x, 1);
      const f = out.features!.data;
      golden.features_first8.forEach((v: number, i: number) => assert.ok(Math.abs(f[i]! - v) < 1e-4, `feature ${i}: ${f[i]} vs ${v}`));
      const sum = f.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - golden.features_sum) < 1e-2, `feature sum ${sum} vs ${golden.features_sum}`);
      const top = topK(softmaxRows(out.logits!.data, 1), bb.ref.labels, 5);
      assert.deepEqual(top.map((t) => t.index), golden.top5.map((t: [number, number]) => t[0]));
      top.forEach((t, i) => assert.ok(Math.abs(t.probability - golden.top5[i][1]) < 1e-4), 'Math.abs(t.probability - golden.top5[i][1]) < 1e-4)');
    } finally {
      await bb.dispose();
    }
  });

  test('predict: at least 12 of the 15 ImageNet samples top-1 correct', async () => {
    const dir = join(SHARED!, 'data', 'imagenet', 'samples');
    const files = readdirSync(dir).map((f) => join(dir, f));
    const res = await predict(MOBILENET, files, { top: 5, cache: false });
    assert.equal(res.predictions.length, 15);
    const names = await imagenetClasses();
    const wnids = JSON.parse(readFileSync(new URL('../assets/imagenet-classes.json', import.meta.url), 'utf8')).wnids as string[];
    let correct = 0;
    for (const p of res.predictions) {
      const wnid = p.path.split('/').pop()!.split('_')[0];
      if (wnids[p.top[0]!.index] === wnid) correct++;
      assert.equal(p.top[0]!.label, names[p.top[0]!.index]);
    }
    assert.ok(correct >= 12, `${correct} of 15 correct`);
  });
});
