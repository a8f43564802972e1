import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { GraftError } from '../src/errors.js';
import { gaussian, mulberry32, shuffleInPlace } from '../src/util/random.js';
import { confusionMatrixPng, confusionMatrixSvg, trainingCurvePng, trainingCurveSvg } from '../src/learn/charts.js';
import { GradientProgram } from '../src/engine/grad/program.js';
import { denseParams, headModel } from '../src/learn/head-graph.js';
import { headFromJSON, trainHead, type EpochLog, type FeatureSet, type HeadJson } from '../src/learn/heads.js';
import { accuracyOf, evaluate, logLoss } from '../src/learn/metrics.js';

// ---------------------------------------------------------------------------------------------------------------
// synthetic data

/** Gaussian blobs: class centres ~ N(0, sep²) per dimension, points = centre + N(0, 1). */
function blobs(opts: { C: number; d: number; perClassTrain: number; perClassVal: number; sep: number; seed: number }) {
  const rng = mulberry32(opts.seed);
  const centres = Array.from({ length: opts.C }, () => Array.from({ length: opts.d }, () => gaussian(rng) * opts.sep));
  const make = (perClass: number): FeatureSet => {
    const n = perClass * opts.C;
    const x = new Float32Array(n * opts.d);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const c = i % opts.C;
      y[i] = c;
      for (let j = 0; j < opts.d; j++) x[i * opts.d + j] = centres[c][j] + gaussian(rng);
    }
    return { x, y, n, d: opts.d };
  };
  return { train: make(opts.perClassTrain), val: make(opts.perClassVal) };
}

/** XOR in the first two dimensions (class = sign(x0·x1) > 0), the rest noise: not linearly separable. */
function xor(n: number, d: number, seed: number): FeatureSet {
  const rng = mulberry32(seed);
  const x = new Float32Array(n * d);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const a = rng() * 2 - 1;
    const b = rng() * 2 - 1;
    x[i * d] = a;
    x[i * d + 1] = b;
    for (let j = 2; j < d; j++) x[i * d + j] = gaussian(rng) * 0.5;
    y[i] = a * b > 0 ? 1 : 0;
  }
  return { x, y, n, d };
}

const valAccuracy = async (head: { predictProba(x: Float32Array, n: number): Promise<Float32Array>; classes: string[] }, val: FeatureSet) =>
  accuracyOf(await head.predictProba(val.x, val.n), val.y, head.classes.length);

const ABC = ['a', 'b', 'c'];

// ---------------------------------------------------------------------------------------------------------------

describe('random', () => {
  it('mulberry32 is reproducible, in [0, 1), and seed-dependent', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const c = mulberry32(43);
    const xs = Array.from({ length: 1000 }, () => a());
    assert.deepEqual(xs, Array.from({ length: 1000 }, () => b()));
    assert.notDeepEqual(xs.slice(0, 10), Array.from({ length: 10 }, () => c()));
    assert.ok(xs.every((v) => v >= 0 && v < 1), 'xs.every((v) => v >= 0 && v < 1)');
    const mean = xs.reduce((s, v) => s + v, 0) / xs.length;
    assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
  });

  it('shuffleInPlace permutes, reproducibly', () => {
    const a = Int32Array.from({ length: 50 }, (_, i) => i);
    const b = Int32Array.from({ length: 50 }, (_, i) => i);
    shuffleInPlace(a, mulberry32(1));
    shuffleInPlace(b, mulberry32(1));
    assert.deepEqual(a, b);
    assert.notDeepEqual(Array.from(a), Array.from({ length: 50 }, (_, i) => i));
    assert.deepEqual([...a].sort((p, q) => p - q), Array.from({ length: 50 }, (_, i) => i));
  });
});

describe('dense head gradients', () => {
  // The head graph's gradient program (what trainHead runs) against central finite differences of its own loss,
  // with class weights and a dropout mask in play.
  for (const kind of ['linear', 'mlp'] as const) {
    it(`${kind}: the gradient program matches finite differences`, async () => {
      const rng = mulberry32(5);
      const d = 5, C = 3, H = 4, m = 6;
      const specs = denseParams(kind, d, H, C);
      const params = specs.map((q) => Float32Array.from({ length: q.dims.reduce((a, b) => a * b, 1) }, () => gaussian(rng)));
      const mean = Float32Array.from({ length: d }, () => gaussian(rng) * 0.1);
      const std = Float32Array.from({ length: d }, () => 0.5 + rng());
      const model = headModel({ kind, d, C, H, mean, std, params }, { dropout: kind === 'mlp' });
      const names = specs.map((q) => model.graph.weight(q.name));
      const prog = await GradientProgram.create(model.bytes, { batch: m, params: names, wrt: names, loss: [{ kind: 'cross-entropy', logits: model.graph.logits, targets: 'targets' }] }, { threads: 1 });
      try {
        const x = Float32Array.from({ length: m * d }, () => gaussian(rng));
        const targets = new Float32Array(m * C);
        for (let i = 0; i < m; i++) targets[i * C + (i % C)] = (1 + (i % 2)) / m;
        const feeds = (): Record<string, Float32Array> => {
          const f: Record<string, Float32Array> = { features: x, targets };
          names.forEach((n, i) => (f[n] = params[i]!));
          if (model.graph.mask) f[model.graph.mask] = Float32Array.from({ length: m * H }, (_, i) => (i % 3 === 0 ? 0 : 1.5));
          return f;
        };
        const { grads } = await prog.run(feeds());
        const eps = 1e-2;
        let checked = 0;
        for (const [p, name] of names.entries()) {
          for (let i = 0; i < params[p]!.length; i++) {
            const orig = params[p]![i]!;
            params[p]![i] = orig + eps;
            const up = (await prog.run(feeds())).loss;
            params[p]![i] = orig - eps;
            const down = (await prog.run(feeds())).loss;
            params[p]![i] = orig;
            const numeric = (up - down) / (2 * eps);
            const analytic = grads[name]![i]!;
            assert.ok(Math.abs(numeric - analytic) < 2e-3 + 2e-2 * Math.abs(numeric), `${name}[${i}]: analytic ${analytic}, numeric ${numeric}`);
            checked++;
          }
        }
        assert.ok(checked > 10, 'checked > 10');
      } finally {
        await prog.release();
      }
    });
  }
});

describe('trainHead', () => {
  const easy = blobs({ C: 3, d: 16, perClassTrain: 60, perClassVal: 40, sep: 1.5, seed: 1 });

  it('linear and mlp separate Gaussian blobs (> 0.95 validation accuracy)', async () => {
    for (const kind of ['linear', 'mlp'] as const) {
      const res = await trainHead(easy.train, easy.val, ABC, { kind, epochs: 60, hidden: 64 });
      const acc = await valAccuracy(res.head, easy.val);
      assert.ok(acc > 0.95, `${kind}: val accuracy ${acc}`);
      assert.equal(res.head.kind, kind);
      assert.equal(res.head.dim, 16);
      assert.deepEqual(res.head.classes, ABC);
      const p = await res.head.predictProba(easy.val.x, easy.val.n);
      assert.equal(p.length, easy.val.n * 3);
      for (let i = 0; i < easy.val.n; i++) assert.ok(Math.abs(p[i * 3] + p[i * 3 + 1] + p[i * 3 + 2] - 1) < 1e-5, 'Math.abs(p[i * 3] + p[i * 3 + 1] + p[i * 3 + 2] - 1) < 1e-5');
      // history is consistent with what was reported
      const logged: EpochLog[] = [];
      const again = await trainHead(easy.train, easy.val, ABC, { kind, epochs: 5, hidden: 64, onEpoch: (e) => logged.push(e) });
      assert.deepEqual(logged, again.history);
      assert.deepEqual(logged.map((e) => e.epoch), [1, 2, 3, 4, 5]);
      assert.ok(logged.every((e) => e.lr === 1e-3 && e.valLoss !== undefined && e.valAcc !== undefined), 'logged.every((e) => e.lr === 1e-3 && e.valLoss !== undefined && e.v...');
    }
  });

  it('mlp beats linear on a non-linear (XOR) problem', async () => {
    const train = xor(800, 6, 2);
    const val = xor(400, 6, 3);
    const classes = ['diff', 'same'];
    const lin = await trainHead(train, val, classes, { kind: 'linear', epochs: 100, lr: 1e-2, patience: 20 });
    const mlp = await trainHead(train, val, classes, { kind: 'mlp', epochs: 150, lr: 1e-2, hidden: 32, dropout: 0.1, patience: 30 });
    const accLin = await valAccuracy(lin.head, val);
    const accMlp = await valAccuracy(mlp.head, val);
    assert.ok(accLin < 0.7, `linear should not solve XOR, got ${accLin}`);
    assert.ok(accMlp > 0.9, `mlp should solve XOR, got ${accMlp}`);
  });

  it('kNN works few-shot (5 examples per class)', async () => {
    const { train, val } = blobs({ C: 3, d: 16, perClassTrain: 5, perClassVal: 50, sep: 1.2, seed: 4 });
    for (const vote of ['weighted', 'majority'] as const) {
      const res = await trainHead(train, val, ABC, { kind: 'knn', k: 5, vote });
      assert.deepEqual(res.history, []);
      assert.equal(res.bestEpoch, 0);
      const p = await res.head.predictProba(val.x, val.n);
      const acc = accuracyOf(p, val.y, 3);
      assert.ok(acc > 0.9, `${vote}: kNN few-shot accuracy ${acc}`);
      for (let i = 0; i < val.n; i++) assert.ok(Math.abs(p[i * 3] + p[i * 3 + 1] + p[i * 3 + 2] - 1) < 1e-5, 'Math.abs(p[i * 3] + p[i * 3 + 1] + p[i * 3 + 2] - 1) < 1e-5');
    }
    // a training point is its own nearest neighbour: with k = 1 it is predicted with certainty
    const one = await trainHead(train, undefined, ABC, { kind: 'knn', k: 1 });
    const p = await one.head.predictProba(train.x, train.n);
    for (let i = 0; i < train.n; i++) assert.equal(p[i * 3 + train.y[i]], 1);
    // k larger than the training set is capped, not an error
    const big = await trainHead(train, undefined, ABC, { kind: 'knn', k: 100, vote: 'majority' });
    const pb = await big.head.predictProba(val.x.subarray(0, 16), 1);
    assert.deepEqual(Array.from(pb).map((v) => Math.round(v * 3)), [1, 1, 1]);
  });

  it('is deterministic by seed: identical weights and history; another seed differs', async () => {
    for (const kind of ['linear', 'mlp'] as const) {
      const opts = { kind, epochs: 8, hidden: 16, dropout: 0.3, seed: 7 };
      const a = await trainHead(easy.train, easy.val, ABC, opts);
      const b = await trainHead(easy.train, easy.val, ABC, opts);
      assert.deepEqual(a.history, b.history);
      assert.deepEqual(a.head.toJSON().params, b.head.toJSON().params);
      assert.deepEqual(await a.head.predictProba(easy.val.x, easy.val.n), await b.head.predictProba(easy.val.x, easy.val.n));
      const c = await trainHead(easy.train, easy.val, ABC, { ...opts, seed: 8 });
      assert.notDeepEqual(a.head.toJSON().params, c.head.toJSON().params);
      assert.notDeepEqual(a.history, c.history);
    }
  });

  it('early-stops on validation loss and restores the best epoch', async () => {
    // Few, noisy training points in many dimensions: training loss keeps falling, validation loss turns up.
    const { train, val } = blobs({ C: 2, d: 200, perClassTrain: 12, perClassVal: 100, sep: 0.15, seed: 11 });
    const patience = 5;
    const res = await trainHead(train, val, ['x', 'y'], { kind: 'linear', epochs: 500, lr: 1e-2, patience, weightDecay: 0 });
    assert.equal(res.stoppedEarly, true);
    assert.ok(res.history.length < 500, `ran ${res.history.length} epochs`);
    assert.equal(res.history.length, res.bestEpoch + patience);
    const losses = res.history.map((h) => h.valLoss!);
    const minLoss = Math.min(...losses);
    assert.equal(losses.indexOf(minLoss) + 1, res.bestEpoch);
    assert.ok(losses[losses.length - 1] > minLoss, 'losses[losses.length - 1] > minLoss');
    // the returned head has the best epoch's weights: its validation loss is exactly the best one
    const p = await res.head.predictProba(val.x, val.n);
    assert.equal(logLoss(p, val.y, 2), minLoss);
    assert.equal(evaluate(p, val.y, ['x', 'y']).logLoss, minLoss);
    assert.equal(accuracyOf(p, val.y, 2), res.history[res.bestEpoch - 1].valAcc);
  });

  it('without a validation set trains every epoch and keeps the last weights', async () => {
    const res = await trainHead(easy.train, undefined, ABC, { kind: 'linear', epochs: 7, patience: 1 });
    assert.equal(res.history.length, 7);
    assert.equal(res.bestEpoch, 7);
    assert.equal(res.stoppedEarly, false);
    assert.ok(res.history.every((h) => h.valLoss === undefined && h.valAcc === undefined), 'res.history.every((h) => h.valLoss === undefined && h.valAcc === un...');
  });

  it('rejects inconsistent input with a clear error', async () => {
    const { train, val } = easy;
    await assert.rejects(trainHead(train, { ...val, d: 8, x: val.x.subarray(0, val.n * 8) }, ABC, { kind: 'linear' }), /dimension 8 differs from training's 16/);
    await assert.rejects(trainHead({ ...train, y: Int32Array.from(train.y, (v) => (v === 2 ? 3 : v)) }, undefined, ABC, { kind: 'linear' }), /label 3 at row 2/);
    await assert.rejects(trainHead(train, undefined, ['a', 'b', 'a'], { kind: 'linear' }), /unique/);
    await assert.rejects(trainHead(train, undefined, ABC, { kind: 'mlp', dropout: 1 }), /dropout/);
    const bad = train.x.slice();
    bad[16 * 4 + 3] = NaN;
    await assert.rejects(trainHead({ ...train, x: bad }, undefined, ABC, { kind: 'knn' }), /non-finite feature at row 4, dimension 3/);
    const { head } = await trainHead(train, undefined, ABC, { kind: 'linear', epochs: 1 });
    await assert.rejects(head.predictProba(val.x, val.n + 1), GraftError);
  });
});

describe('head JSON', () => {
  const { train, val } = blobs({ C: 3, d: 12, perClassTrain: 20, perClassVal: 10, sep: 1.5, seed: 21 });

  it('toJSON → JSON text → headFromJSON predicts identically (all kinds)', async () => {
    for (const kind of ['linear', 'mlp', 'knn'] as const) {
      const { head } = await trainHead(train, val, ABC, { kind, epochs: 10, hidden: 16 });
      const json = JSON.parse(JSON.stringify(head.toJSON())) as HeadJson;
      assert.equal(json.format, 'graft-head');
      assert.equal(json.version, 1);
      assert.equal(json.kind, kind);
      const back = headFromJSON(json);
      assert.equal(back.kind, kind);
      assert.equal(back.dim, 12);
      assert.deepEqual(back.classes, ABC);
      assert.deepEqual(await back.predictProba(val.x, val.n), await head.predictProba(val.x, val.n));
      assert.deepEqual(back.toJSON(), head.toJSON());
    }
  });

  it('refuses broken head files, saying what is wrong', async () => {
    const { head } = await trainHead(train, val, ABC, { kind: 'mlp', epochs: 2, hidden: 8 });
    const good = () => JSON.parse(JSON.stringify(head.toJSON()));
    const refuse = (mutate: (j: any) => unknown, pattern: RegExp) => {
      const j = good();
      const out = mutate(j);
      assert.throws(
        () => headFromJSON(out === undefined ? j : out, 'run/head.json'),
        (err: unknown) => err instanceof GraftError && err.message.startsWith('run/head.json: ') && pattern.test(err.message),
        pattern.source,
      );
    };
    refuse(() => [1, 2], /expected a JSON object/);
    refuse((j) => void (j.format = 'onnx'), /format is "onnx", expected "graft-head"/);
    refuse((j) => void (j.version = 2), /unsupported graft head version 2/);
    refuse((j) => void (j.kind = 'svm'), /kind/);
    refuse((j) => void delete j.params.W2, /params\.W2/);
    refuse((j) => void (j.classes = ['a']), /classes/);
    refuse((j) => void (j.params.b1.base64 = j.params.b1.base64.slice(0, 8)), /params\.b1 holds 6 bytes, expected 32/);
    refuse((j) => void (j.params.W1.shape = [8, 11]), /params\.W1 has shape \[8 × 11\], expected \[8 × 12\]/);
    refuse((j) => void (j.params.W2.base64 = '***' + j.params.W2.base64.slice(3)), /params\.W2 is not valid base64/);
    refuse((j) => void (j.params.b2.base64 = Buffer.from(new Float32Array([0, NaN, 0]).buffer).toString('base64')), /params\.b2 contains a non-finite value at index 1/);
    refuse((j) => void (j.std.base64 = Buffer.from(new Float32Array(12).buffer).toString('base64')), /std\[0\] is not positive/);
    // kNN specifics
    const knn = (await trainHead(train, val, ABC, { kind: 'knn' })).head.toJSON();
    const broken = JSON.parse(JSON.stringify(knn));
    broken.params.labels[3] = 9;
    assert.throws(() => headFromJSON(broken), /params\.labels\[3\] = 9 is not a class index/);
  });
});

describe('metrics', () => {
  it('evaluate matches a hand-computed example', () => {
    // 3 classes, 6 examples. true: a a a b b c; predicted: a a b b c c
    const classes = ['a', 'b', 'c'];
    const y = Int32Array.from([0, 0, 0, 1, 1, 2]);
    const proba = Float32Array.from([
      0.7, 0.2, 0.1, // a → a
      0.5, 0.25, 0.25, // a → a
      0.25, 0.5, 0.25, // a → b (p = 0.5)
      0.1, 0.8, 0.1, // b → b
      0.05, 0.15, 0.8, // b → c (p = 0.8)
      0.2, 0.2, 0.6, // c → c
    ]);
    const items = ['p0', 'p1', 'p2', 'p3', 'p4', 'p5'].map((path) => ({ path }));
    const e = evaluate(proba, y, classes, items);
    assert.equal(e.n, 6);
    assert.deepEqual(e.confusion, [
      [2, 1, 0],
      [0, 1, 1],
      [0, 0, 1],
    ]);
    assert.equal(e.accuracy, 4 / 6);
    // recall: a 2/3, b 1/2, c 1/1 ; precision: a 2/2, b 1/2, c 1/2
    const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);
    close(e.balancedAccuracy, (2 / 3 + 1 / 2 + 1) / 3);
    assert.deepEqual(e.perClass.map((c) => c.class), classes);
    assert.deepEqual(e.perClass.map((c) => c.support), [3, 2, 1]);
    close(e.perClass[0].precision, 1);
    close(e.perClass[0].recall, 2 / 3);
    close(e.perClass[0].f1, 0.8);
    close(e.perClass[1].precision, 0.5);
    close(e.perClass[1].recall, 0.5);
    close(e.perClass[1].f1, 0.5);
    close(e.perClass[2].precision, 0.5);
    close(e.perClass[2].recall, 1);
    close(e.perClass[2].f1, 2 / 3);
    const expectedLogLoss = -(Math.log(0.7) + Math.log(0.5) + Math.log(0.25) + Math.log(0.8) + Math.log(0.15) + Math.log(0.6)) / 6;
    assert.ok(Math.abs(e.logLoss - expectedLogLoss) < 1e-6, 'Math.abs(e.logLoss - expectedLogLoss) < 1e-6');
    assert.deepEqual(
      e.mostConfidentlyWrong.map((w) => [w.index, w.path, w.trueClass, w.predictedClass]),
      [
        [4, 'p4', 'b', 'c'],
        [2, 'p2', 'a', 'b'],
      ],
    );
    close(e.mostConfidentlyWrong[0].probability, Math.fround(0.8));
    close(e.mostConfidentlyWrong[0].trueProbability, Math.fround(0.15));
    assert.equal(evaluate(proba, y, classes, undefined, 1).mostConfidentlyWrong.length, 1);
    assert.equal(evaluate(proba, y, classes).mostConfidentlyWrong[0].path, undefined);
  });

  it('handles classes with no examples or no predictions, and rejects bad shapes', () => {
    const e = evaluate(Float32Array.from([0.9, 0.1, 0, 0.8, 0.2, 0]), Int32Array.from([0, 1]), ['a', 'b', 'c']);
    assert.deepEqual(e.confusion, [
      [1, 0, 0],
      [1, 0, 0],
      [0, 0, 0],
    ]);
    assert.equal(e.balancedAccuracy, 0.5); // mean over classes a and b; c has no examples
    assert.deepEqual(e.perClass[2], { class: 'c', precision: 0, recall: 0, f1: 0, support: 0 });
    assert.ok(Number.isFinite(e.logLoss)); // p = 0 for the true class is clipped, not Infinity
    assert.throws(() => evaluate(new Float32Array(5), Int32Array.from([0, 1]), ['a', 'b', 'c']), /expected 2 × 3 = 6 probabilities, got 5/);
    assert.throws(() => evaluate(new Float32Array(6), Int32Array.from([0, 3]), ['a', 'b', 'c']), /label 3 at row 1/);
  });
});

describe('charts', () => {
  it('confusion matrix and training curves render to PNGs of the expected size', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'graft-charts-'));
    try {
      // 37 classes with long names and XML-special characters
      const classes = Array.from({ length: 37 }, (_, i) => (i === 5 ? 'cats & <dogs> "quoted"' : `class_number_${i}_with_a_long_name`));
      const confusion = classes.map((_, i) => classes.map((__, j) => (i === j ? 10 + i : (i + j) % 7 === 0 ? 2 : 0)));
      const { svg, width, height } = confusionMatrixSvg(confusion, classes, 'validation');
      assert.ok(svg.includes('cats &amp; &lt;dogs&gt; &quot;quoted&quot;'), 'svg.includes(\'cats &amp; &lt;dogs&gt; &quot;quoted&quot;\')');
      assert.ok(!svg.includes('<dogs>'), '!svg.includes(\'<dogs>\')');
      const p1 = join(dir, 'confusion.png');
      const size = await confusionMatrixPng(confusion, classes, p1, 'validation');
      assert.deepEqual(size, { width, height });
      const m1 = await sharp(p1).metadata();
      assert.equal(m1.format, 'png');
      assert.equal(m1.width, width);
      assert.equal(m1.height, height);
      assert.ok(width >= 37 * 18 && height >= 37 * 18, 'width >= 37 * 18 && height >= 37 * 18');

      const history: EpochLog[] = Array.from({ length: 30 }, (_, i) => ({
        epoch: i + 1,
        trainLoss: 1 / (i + 1),
        trainAcc: Math.min(1, 0.5 + i / 40),
        valLoss: 1 / (i + 1) + Math.max(0, (i - 15) / 50),
        valAcc: Math.min(0.9, 0.5 + i / 50),
        lr: 1e-3,
      }));
      const curve = trainingCurveSvg(history);
      assert.ok(curve.svg.includes('best epoch (16 of 30)'), 'best epoch defaults to the lowest validation loss');
      const p2 = join(dir, 'curves.png');
      const size2 = await trainingCurvePng(history, p2);
      const m2 = await sharp(p2).metadata();
      assert.equal(m2.format, 'png');
      assert.deepEqual({ width: m2.width, height: m2.height }, size2);
      assert.deepEqual(size2, { width: curve.width, height: curve.height });
      // the rendered picture is not blank: it has dark (text/line) pixels and white background
      const { data } = await sharp(p2).greyscale().raw().toBuffer({ resolveWithObject: true });
      let dark = 0;
      let white = 0;
      for (const v of data) {
        if (v < 100) dark++;
        if (v > 250) white++;
      }
      assert.ok(dark > 1000 && white > data.length / 2, `dark ${dark}, white ${white}`);

      // no validation: still renders, without a best-epoch marker
      const noVal = history.map(({ epoch, trainLoss, trainAcc, lr }) => ({ epoch, trainLoss, trainAcc, lr }));
      assert.ok(!trainingCurveSvg(noVal).svg.includes('best epoch'), '!trainingCurveSvg(noVal).svg.includes(\'best epoch\')');
      assert.throws(() => trainingCurveSvg([]), /no epochs/);
      assert.throws(() => confusionMatrixSvg([[1, 2]], ['a', 'b']), /2 × 2/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
