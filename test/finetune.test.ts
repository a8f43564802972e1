import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { OrtModel } from '../src/engine/ort.js';
import { tf } from './helpers/tf/backend.js';
import { TfExecutor } from './helpers/tf/executor.js';
import { buildLoaded, buildOnnx } from './helpers/onnx-builder.js';
import { lossHook, stopAfter } from '../src/learn/fit.js';
import { GraftError, InterruptedError } from '../src/errors.js';
import {
  bnAffineNames,
  classWeights,
  convWeightNames,
  cutForLastBlocks,
  finetune,
  lrFind,
  scheduleAt,
  listBlocks,
  readCheckpoint,
  writeCheckpoint,
  replaceInitializers,
  suffixModel,
  type CutSet,
} from '../src/learn/finetune.js';
import { tunableBlocks } from '../src/learn/blocks.js';
import { loadRun } from '../src/learn/run.js';
import { loadOnnx, parseOnnx } from '../src/models/onnx-file.js';
import { evalRun } from '../src/tasks/evaluate.js';
import { predict } from '../src/tasks/predict.js';
import { finetuneRun, resumeFinetuneRun } from '../src/tasks/finetune.js';
import { mulberry32 } from '../src/util/random.js';
import { colourImage, type Rgb } from './helpers/images.js';
import { tinyCnn, TINY_SIZE, tinyCutSet } from './helpers/tiny-cnn.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

const decodeBlob = (b64: string) => new Float32Array(new Uint8Array(Buffer.from(b64, 'base64')).buffer);

const S = TINY_SIZE;

let dir: string;

const cutSet = tinyCutSet;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-ft-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

describe('fine-tuning: blocks, suffix graph, export', () => {
  test('blocks are found from the graph: a conv, then a depthwise + pointwise pair', () => {
    const m = buildLoaded(tinyCnn());
    const blocks = listBlocks(m);
    assert.equal(blocks.length, 2, `blocks: ${JSON.stringify(blocks)}`);
    assert.deepEqual(blocks[0]!.convs, ['conv0']);
    assert.equal(blocks[0]!.input, 'input');
    assert.equal(blocks[0]!.output, 'r0');
    assert.deepEqual(blocks[1]!.convs, ['dw', 'pw']);
    assert.equal(blocks[1]!.input, 'r0');
    assert.equal(blocks[1]!.output, 'r2');
    assert.equal(cutForLastBlocks(m, 1).cut, 'r0');
    assert.equal(cutForLastBlocks(m, 'all').cut, 'input');
    assert.throws(() => cutForLastBlocks(m, 3), /1 to 2/);
  });

  test('a classifier written as a 1x1 conv after the pooled features is not a block to fine-tune', () => {
    const spec = tinyCnn();
    spec.initializers = [...spec.initializers!, { name: 'cls_w', dims: [3, 6, 1, 1], values: Array.from({ length: 18 }, (_, i) => (i % 5) / 5) }];
    spec.nodes = [
      ...spec.nodes.filter((n) => n.name !== 'fc'),
      { op: 'Conv', name: 'cls', inputs: ['g', 'cls_w'], outputs: ['c_out'] },
      { op: 'Flatten', name: 'flatten_cls', inputs: ['c_out'], outputs: ['logits'] },
    ];
    const m = buildLoaded(spec);
    assert.equal(listBlocks(m).length, 3, 'the graph has 3 conv blocks');
    assert.deepEqual(tunableBlocks(m, 'features').map((b) => b.convs), [['conv0'], ['dw', 'pw']]);
    assert.equal(cutForLastBlocks(m, 1, 'features').cut, 'r0');
    assert.equal(cutForLastBlocks(m, 2, 'features').cut, 'input');
    assert.throws(() => cutForLastBlocks(m, 3, 'features'), /1 to 2/);
  });

  test('the suffix graph on the executor matches ONNX Runtime on the full graph', async () => {
    const m = buildLoaded(tinyCnn());
    const ort = await OrtModel.create(m, ['r0', 'features'], { threads: 1 });
    const rng = mulberry32(3);
    const x = Float32Array.from({ length: 2 * 3 * S * S }, () => rng());
    const out = await ort.run(x, [2, 3, S, S]);
    await ort.dispose();
    const suf = suffixModel(m, 'r0', [4, S, S], ['features']);
    assert.deepEqual(convWeightNames(suf), ['dw_w', 'dw_b', 'pw_w']);
    assert.ok(!suf.info.nodes.some((n) => n.name === 'conv0'), 'prefix nodes dropped');
    const ex = await TfExecutor.load(suf, { outputs: ['features'], trainable: convWeightNames(suf) });
    const f = ex.run(tf.tensor(out.r0!.data, out.r0!.dims));
    const a = f.features!.dataSync();
    f.features!.dispose();
    ex.dispose();
    const b = out.features!.data;
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-5, `feature ${i}: ${a[i]} vs ${b[i]}`);
  });

  test('a cut bypassed by a skip connection is refused', () => {
    const spec = tinyCnn();
    spec.nodes = spec.nodes.map((n) => (n.name === 'bn_add' ? { ...n, inputs: ['m1', 'c0'] } : n));
    spec.nodes = spec.nodes.map((n) => (n.name === 'bn_mul' ? { ...n, inputs: ['p1', 'bn_s'] } : n));
    // c0 has 4 channels, p1 6: shape mismatch does not matter, the refusal comes first.
    assert.throws(() => suffixModel(buildLoaded(spec), 'r1', [4, S, S], ['features']), (e: unknown) => e instanceof GraftError && /skip connection/.test((e as Error).message));
  });

  test('fine-tuned weights exported into the original graph give the executor outputs (ORT, 1e-4)', async () => {
    const m = buildLoaded(tinyCnn());
    const train = cutSet(24, 1);
    const res = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val: cutSet(12, 2), classes: ['a', 'b'] }, { epochs: 2, batchSize: 8, lr: 1e-2, backboneLrFactor: 1, probeEpochs: 5 });
    const orig = (await readOnnxWeights(m, 'pw_w'))!;
    const changed = res.weights.pw_w!.some((v, i) => Math.abs(v - orig[i]!) > 1e-6);
    assert.ok(changed, 'pointwise weights changed by fine-tuning');
    const bytes = replaceInitializers(m, res.weights);
    const exported = parseOnnx(bytes, 'exported.onnx');
    const ort = await OrtModel.create(exported, ['r0', 'features'], { threads: 1 });
    const rng = mulberry32(9);
    const x = Float32Array.from({ length: 3 * 3 * S * S }, () => rng());
    const out = await ort.run(x, [3, 3, S, S]);
    await ort.dispose();
    // The executor with the same weights (loaded from the fine-tuned model itself).
    const ex = await TfExecutor.load(suffixModel(exported, 'r0', [4, S, S], ['features']), { outputs: ['features'] });
    const f = ex.run(tf.tensor(out.r0!.data, out.r0!.dims));
    const a = f.features!.dataSync();
    f.features!.dispose();
    ex.dispose();
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - out.features!.data[i]!) < 1e-4, `feature ${i}`);
  });
});

async function readOnnxWeights(m: ReturnType<typeof buildLoaded>, name: string): Promise<number[] | undefined> {
  const t = m.proto.graph!.initializer!.find((i) => i.name === name);
  return t?.floatData ? Array.from(t.floatData) : undefined;
}

describe('fine-tuning: checkpoints, resume, NaN guard', () => {
  // Dropout and label smoothing on, so the resumed run must also reproduce the dropout masks.
  const opts = { epochs: 4, batchSize: 8, lr: 5e-3, probeEpochs: 5, patience: Infinity, seed: 4, dropout: 0.2, labelSmoothing: 0.1, backboneLrFactor: 0.5 };

  test('4 epochs in one go = 2 epochs + resume 2 (weights within 1e-6)', async () => {
    const m = buildLoaded(tinyCnn());
    const train = cutSet(24, 1);
    const val = cutSet(12, 2);
    const a = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...opts, checkpointDir: join(dir, 'ck-a') });
    const ckB = join(dir, 'ck-b');
    const part = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...opts, checkpointDir: ckB, callbacks: [stopAfter(2)] });
    assert.equal(part.history.length, 2);
    const last = await readCheckpoint(join(ckB, 'last.ckpt'));
    assert.equal(last.meta.epoch, 2);
    assert.ok(part.initial && Number.isFinite(part.initial.valLoss), `the first part measured the initial head: ${JSON.stringify(part.initial)}`);
    assert.deepEqual(last.meta.initial, part.initial, 'the checkpoint carries the initial metrics');
    const b = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...opts, checkpointDir: ckB, resume: true });
    assert.equal(b.history.length, 4);
    assert.deepEqual(b.initial, part.initial, 'the resumed run reports the initial metrics of the start of the run');
    assert.deepEqual(b.initial, a.initial, 'the same as the run in one go');
    assert.equal(a.bestEpoch, b.bestEpoch);
    for (const k of Object.keys(a.weights)) {
      const wa = a.weights[k]!;
      const wb = b.weights[k]!;
      for (let i = 0; i < wa.length; i++) assert.ok(Math.abs(wa[i]! - wb[i]!) <= 1e-6, `${k}[${i}]: ${wa[i]} vs ${wb[i]}`);
    }
    assert.deepEqual(a.head.toJSON().params, b.head.toJSON().params);
    for (let e = 0; e < 4; e++) assert.ok(Math.abs(a.history[e]!.trainLoss - b.history[e]!.trainLoss) < 1e-6, `epoch ${e + 1} loss`);
    // A different setting refuses to resume.
    await assert.rejects(
      finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...opts, lr: 1, checkpointDir: ckB, resume: true }),
      /other settings/,
    );
    // Initial metrics that are not numbers: a damaged checkpoint, said so (not NaN in metrics.json).
    const ck = await readCheckpoint(join(ckB, 'last.ckpt'));
    await writeCheckpoint(join(ckB, 'last.ckpt'), { ...ck.meta, initial: { valLoss: 'low', valAcc: 1 } }, ck.tensors);
    await assert.rejects(
      finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...opts, checkpointDir: ckB, resume: true }),
      (e: unknown) => e instanceof GraftError && /last\.ckpt: damaged checkpoint \(meta\.initial\.valLoss: /.test(e.message),
    );
  });

  test('Ctrl-C mid-epoch (abort signal): checkpoint at that step; resuming equals an uninterrupted run (views, dropout, one-cycle)', async () => {
    const m = buildLoaded(tinyCnn());
    const train = cutSet(24, 1);
    // Two augmented views: noisy copies, so that which view a step draws matters.
    const vr = mulberry32(99);
    train.views = [0, 1].map(() => Float32Array.from(train.x, (v) => Math.max(0, v + (vr() - 0.5) * 0.2)));
    const val = cutSet(12, 2);
    const o = { ...opts, schedule: 'onecycle' as const };
    const a = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...o, checkpointDir: join(dir, 'ck-int-a') });
    const ckB = join(dir, 'ck-int-b');
    const ac = new AbortController();
    let steps = 0;
    await assert.rejects(
      finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, {
        ...o,
        checkpointDir: ckB,
        signal: ac.signal,
        callbacks: [
          lossHook((_e, _s, loss) => {
            if (++steps === 5) ac.abort(); // 3 steps an epoch: stops after epoch 2, step 2
            return loss;
          }),
        ],
      }),
      (e: unknown) => e instanceof InterruptedError && e.exitCode === 130 && /epoch 2, step 2 of 3.*--resume/.test(e.message),
    );
    const last = await readCheckpoint(join(ckB, 'last.ckpt'));
    assert.deepEqual(last.meta.partial && { ...(last.meta.partial as object), lossSum: 0, correct: 0 }, { epoch: 2, step: 2, lossSum: 0, correct: 0, rows: 16 });
    const b = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val, classes: ['a', 'b'] }, { ...o, checkpointDir: ckB, resume: true });
    assert.equal(b.history.length, 4);
    for (const k of Object.keys(a.weights)) {
      const wa = a.weights[k]!;
      const wb = b.weights[k]!;
      for (let i = 0; i < wa.length; i++) assert.ok(Math.abs(wa[i]! - wb[i]!) <= 1e-6, `${k}[${i}]: ${wa[i]} vs ${wb[i]}`);
    }
    for (let e = 0; e < 4; e++) assert.ok(Math.abs(a.history[e]!.trainLoss - b.history[e]!.trainLoss) < 1e-6, `epoch ${e + 1} loss ${a.history[e]!.trainLoss} vs ${b.history[e]!.trainLoss}`);
    // The views are really used: without them the run differs.
    const c = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train: { ...train, views: undefined }, val, classes: ['a', 'b'] }, { ...o, epochs: 1 });
    assert.ok(Math.abs(c.history[0]!.trainLoss - a.history[0]!.trainLoss) > 1e-6, 'views change the training batches');
  });

  test('one-cycle and cosine schedules; class weights', () => {
    const total = 100;
    const oc = (t: number) => scheduleAt({ lr: 1e-3, warmup: 0.25, schedule: 'onecycle' }, total, t);
    assert.ok(Math.abs(oc(0).lr - 1e-3 / 25) < 1e-12, `one-cycle starts at lr/25: ${oc(0).lr}`);
    assert.ok(Math.abs(oc(25).lr - 1e-3) < 1e-12 && Math.abs(oc(25).beta1 - 0.85) < 1e-12, `peak at the end of warmup: ${JSON.stringify(oc(25))}`);
    assert.ok(oc(99).lr < 1e-6 && oc(99).beta1 > 0.949, `ends low with momentum back up: ${JSON.stringify(oc(99))}`);
    assert.ok(oc(0).beta1 === 0.95, 'starts at beta1 0.95');
    for (let t = 1; t < 25; t++) assert.ok(oc(t).lr > oc(t - 1).lr, `rises at ${t}`);
    for (let t = 26; t < 100; t++) assert.ok(oc(t).lr < oc(t - 1).lr, `falls at ${t}`);
    const cos = (t: number) => scheduleAt({ lr: 1e-3, warmup: 0.1, schedule: 'cosine' }, total, t);
    assert.ok(Math.abs(cos(9).lr - 1e-3) < 1e-12 && cos(0).lr === 1e-4 && cos(99).lr < 1e-6, 'warmup then cosine');
    const w = classWeights(Int32Array.from([0, 0, 0, 1]), 3);
    assert.deepEqual(Array.from(w), [Math.fround(4 / 6), 2, 0]);
  });

  test('--train-bn trains the folded batch-norm scale and shift too; exported graph equals the executor', async () => {
    const m = buildLoaded(tinyCnn());
    const suf = suffixModel(m, 'r0', [4, S, S], ['features']);
    assert.deepEqual(bnAffineNames(suf), ['bn_s', 'bn_b']);
    const train = cutSet(24, 1);
    const res = await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val: cutSet(12, 2), classes: ['a', 'b'] }, { epochs: 2, batchSize: 8, lr: 1e-2, backboneLrFactor: 1, probeEpochs: 5, trainBn: true });
    assert.deepEqual(Object.keys(res.weights).sort(), ['bn_b', 'bn_s', 'dw_b', 'dw_w', 'pw_w']);
    const orig = m.proto.graph!.initializer!.find((t) => t.name === 'bn_s')!.floatData!;
    assert.ok(Array.from(res.weights.bn_s!).some((v, i) => Math.abs(v - orig[i]!) > 1e-4), 'bn scale moved');
    const tuned = parseOnnx(replaceInitializers(m, res.weights), 'tuned.onnx');
    const ort = await OrtModel.create(tuned, ['r0', 'features'], { threads: 1 });
    const x = Float32Array.from({ length: 2 * 3 * S * S }, (_, i) => (i % 7) / 7);
    const out = await ort.run(x, [2, 3, S, S]);
    await ort.dispose();
    const ex = await TfExecutor.load(suffixModel(tuned, 'r0', [4, S, S], ['features']), { outputs: ['features'] });
    const f = ex.run(tf.tensor(out.r0!.data, out.r0!.dims));
    const a = f.features!.dataSync();
    f.features!.dispose();
    ex.dispose();
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - out.features!.data[i]!) < 1e-4, `feature ${i}`);
  });

  test('LR finder: exponential sweep, stops when the loss blows up, deterministic, suggestion inside the range', async () => {
    const m = buildLoaded(tinyCnn());
    const train = cutSet(24, 1);
    const run = () => lrFind({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train, val: undefined, classes: ['a', 'b'] }, { batchSize: 8, minLr: 1e-6, maxLr: 1e3, steps: 60, probeEpochs: 0, backboneLrFactor: 1, clipNorm: 0, seed: 2 });
    const a = await run();
    const b = await run();
    assert.deepEqual(a.losses, b.losses);
    assert.ok(a.lrs.length >= 10, `steps recorded: ${a.lrs.length}`);
    for (let i = 1; i < a.lrs.length; i++) assert.ok(a.lrs[i]! > a.lrs[i - 1]!, 'lr grows');
    assert.ok(Math.abs(a.lrs[1]! / a.lrs[0]! - (1e9) ** (1 / 59)) < 1e-9, 'exponential steps');
    assert.ok(a.stoppedEarly && a.lrs.length < 60, `a sweep up to lr 1000 diverges before the end (${a.lrs.length} steps)`);
    assert.ok(a.suggested >= 1e-6 / 10 && a.suggested <= a.lrs[a.lrs.length - 1]!, `suggestion ${a.suggested}`);
    assert.ok(Math.min(...a.smoothed) < a.smoothed[0]!, 'the loss falls somewhere in the sweep');
  });

  test('a NaN loss stops with a clear error and keeps the last good checkpoint', async () => {
    const m = buildLoaded(tinyCnn());
    const ck = join(dir, 'ck-nan');
    await assert.rejects(
      finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train: cutSet(24, 1), val: cutSet(12, 2), classes: ['a', 'b'] }, {
        ...opts,
        checkpointDir: ck,
        callbacks: [lossHook((epoch, step, loss) => (epoch === 3 && step === 2 ? NaN : loss))],
      }),
      (e: unknown) => e instanceof GraftError && /diverged.*NaN.*epoch 3, step 2.*last good checkpoint \(epoch 2\)/.test((e as Error).message),
    );
    const last = await readCheckpoint(join(ck, 'last.ckpt'));
    assert.equal(last.meta.epoch, 2);
    for (const t of Object.values(last.tensors)) assert.ok(t.every(Number.isFinite), 'checkpoint weights finite');
  });

  test('an absurd learning rate is caught too (no NaN written)', async () => {
    const m = buildLoaded(tinyCnn());
    const ck = join(dir, 'ck-lr');
    let err: unknown;
    try {
      await finetune({ model: m, featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train: cutSet(24, 1), val: cutSet(12, 2), classes: ['a', 'b'] }, { ...opts, lr: 1e30, warmup: 0, clipNorm: 0, backboneLrFactor: 1, checkpointDir: ck });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof GraftError && /diverged/.test(err.message), `error: ${err}`);
    try {
      const last = await readCheckpoint(join(ck, 'last.ckpt'));
      for (const t of Object.values(last.tensors)) assert.ok(t.every(Number.isFinite), 'checkpoint weights finite');
    } catch (e) {
      assert.ok(e instanceof GraftError && /not found/.test(e.message), `no checkpoint written: ${e}`);
    }
  });
});

describe('fine-tuning run: folder, predict, eval, resume', () => {
  const COLOURS: Record<string, Rgb> = { red: [220, 30, 30], blue: [30, 40, 220] };
  let model: string;
  before(async () => {
    model = join(dir, 'tiny-cnn.onnx');
    const m = parseOnnx(buildOnnx(tinyCnn()), model);
    m.proto.metadataProps = [
      { key: 'Image.NominalPixelRange', value: 'Normalized_0_1' },
      { key: 'Image.BitmapPixelFormat', value: 'Rgb8' },
    ] as never;
    const { onnx } = (await import('onnx-proto')).default;
    await writeFile(model, onnx.ModelProto.encode(m.proto).finish());
    for (const split of ['train', 'val']) {
      for (const [name, rgb] of Object.entries(COLOURS)) {
        const d = join(dir, 'imgs', split, name);
        await mkdir(d, { recursive: true });
        for (let i = 0; i < 8; i++) {
          const shade: Rgb = [rgb[0] + (i % 3) * 5, rgb[1] + (i % 4) * 5, rgb[2] - (i % 5) * 5];
          await colourImage(shade, 20 + i, 16, i + (split === 'val' ? 100 : 0)).jpeg().toFile(join(d, `${name}-${i}.jpg`));
        }
      }
    }
  });

  test('graft train --finetune: run folder; predict and eval use the fine-tuned model.onnx', async () => {
    const out = join(dir, 'run');
    const cache = join(dir, 'cache');
    const common = { data: join(dir, 'imgs', 'train'), val: join(dir, 'imgs', 'val'), model, blocks: 1 as const, cache };
    const res = await finetuneRun({ ...common, out, finetune: { epochs: 3, batchSize: 4, lr: 1e-2, probeEpochs: 20 } });
    assert.equal(res.counts.train, 16);
    assert.equal(res.cut.tensor, 'r0');
    assert.deepEqual(res.cut.shape, [4, S, S]);
    assert.equal(res.validation.accuracy, 1);
    const run = await loadRun(out);
    assert.equal(run.config.model.path, join(out, 'model.onnx'));
    const ft = run.config.head.finetune as { cut: string; blocks: number };
    assert.equal(ft.cut, 'r0');
    const exported = await loadOnnx(join(out, 'model.onnx'));
    assert.equal(exported.info.sha256, run.config.model.sha256);
    const ev = await evalRun(out, join(dir, 'imgs', 'val'), { cache: false });
    assert.equal(ev.evaluation.accuracy, res.validation.accuracy);
    // predict/eval go through ORT on model.onnx + head.json: same probabilities as the executor gave in training.
    assert.ok(Math.abs(ev.evaluation.logLoss - res.validation.logLoss) < 1e-4, `log loss ${ev.evaluation.logLoss} vs ${res.validation.logLoss}`);
    const pred = await predict(out, [join(dir, 'imgs', 'val', 'red', 'red-0.jpg')], { top: 1, cache: false });
    assert.ok(JSON.stringify(pred).includes('red'), `prediction: ${JSON.stringify(pred).slice(0, 300)}`);
    for (const f of ['config.json', 'head.json', 'metrics.json', 'history.json', 'confusion.png', 'training-curve.png', 'finetune-options.json', 'checkpoints/last.ckpt', 'checkpoints/best.ckpt']) {
      await readFile(join(out, f));
    }
    // The prefix came from the cache the second time.
    const out2 = join(dir, 'run2');
    const res2 = await finetuneRun({ ...common, out: out2, finetune: { epochs: 2, batchSize: 4, lr: 1e-2, probeEpochs: 20, callbacks: [stopAfter(1)] } });
    assert.equal(res2.history.length, 1);
    const metrics = async (d: string) => JSON.parse(await readFile(join(d, 'metrics.json'), 'utf8')) as { initial?: { valLoss: number; valAcc: number } };
    const initialBefore = (await metrics(out2)).initial;
    assert.ok(initialBefore && Number.isFinite(initialBefore.valLoss) && Number.isFinite(initialBefore.valAcc), `metrics.json has "initial": ${JSON.stringify(initialBefore)}`);
    const resumed = await resumeFinetuneRun(out2);
    assert.equal(resumed.history.length, 2);
    assert.deepEqual((await metrics(out2)).initial, initialBefore, 'metrics.json after --resume keeps the "initial" block of the run');
    assert.deepEqual(resumed.initial, initialBefore);
  });

  test("--finetune all: the prefix is the identity (preprocessed images cached), every conv trains", async () => {
    const out = join(dir, 'run-all');
    const res = await finetuneRun({ data: join(dir, 'imgs', 'train'), val: join(dir, 'imgs', 'val'), model, blocks: 'all', cache: join(dir, 'cache'), out, finetune: { epochs: 2, batchSize: 4, lr: 1e-2 } });
    assert.equal(res.cut.tensor, 'input');
    assert.deepEqual(res.cut.shape, [3, S, S]);
    assert.deepEqual(Object.keys(res.weights).sort(), ['c0_b', 'c0_w', 'dw_b', 'dw_w', 'pw_w']);
    assert.equal(res.validation.accuracy, 1);
    const ev = await evalRun(out, join(dir, 'imgs', 'val'), { cache: false });
    assert.equal(ev.evaluation.accuracy, 1);
    assert.ok(Math.abs(ev.evaluation.logLoss - res.validation.logLoss) < 1e-4, `log loss ${ev.evaluation.logLoss} vs ${res.validation.logLoss}`);
  });

  test('--head mlp with --finetune: the MLP trains with the block; eval and export through ORT agree; resume is exact', async () => {
    const common = { data: join(dir, 'imgs', 'train'), val: join(dir, 'imgs', 'val'), model, blocks: 1 as const, cache: join(dir, 'cache') };
    const settings = { epochs: 3, batchSize: 4, lr: 1e-2, probeEpochs: 20, head: 'mlp' as const, hidden: 8, dropout: 0.3 };
    const out = join(dir, 'run-mlp');
    const res = await finetuneRun({ ...common, out, finetune: settings });
    const json = res.head.toJSON();
    assert.equal(json.kind, 'mlp');
    if (json.kind !== 'mlp') return;
    assert.deepEqual(json.params.W1.shape, [8, res.head.dim]);
    assert.equal((json.training as { finetune?: boolean }).finetune, true);
    const run = await loadRun(out);
    assert.equal(run.config.head.kind, 'mlp');
    assert.equal(res.validation.accuracy, 1);
    // predict/eval (ORT on model.onnx, then the head) give what training measured on the same graph.
    const ev = await evalRun(out, join(dir, 'imgs', 'val'), { cache: false });
    assert.ok(Math.abs(ev.evaluation.logLoss - res.validation.logLoss) < 1e-4, `log loss ${ev.evaluation.logLoss} vs ${res.validation.logLoss}`);
    // The MLP moved from its probe: the same run without fine-tuning steps has other head weights.
    const probeOnly = await finetuneRun({ ...common, out: join(dir, 'run-mlp-0'), finetune: { ...settings, callbacks: [stopAfter(0)] } });
    const p0 = probeOnly.head.toJSON();
    assert.ok(p0.kind === 'mlp' && p0.params.W2.base64 !== json.params.W2.base64, 'fine-tuning changed the MLP');
    // 2 epochs + resume 1 = 3 epochs in one go (dropout masks from (seed, epoch, step)).
    const split = join(dir, 'run-mlp-split');
    await finetuneRun({ ...common, out: split, finetune: { ...settings, callbacks: [stopAfter(2)] } });
    const resumed = await resumeFinetuneRun(split);
    const r = resumed.head.toJSON();
    assert.ok(r.kind === 'mlp');
    const a = decodeBlob(json.params.W1.base64);
    const b = decodeBlob((r as typeof json).params.W1.base64);
    assert.ok(a.every((v, i) => Math.abs(v - b[i]!) <= 1e-6), 'resumed MLP equals the uninterrupted one');
  });

  test('CLI: graft train --finetune 1 --json, then --resume; bad --finetune is a usage error', () => {
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'src', 'cli', 'entry.ts'), ...args], { encoding: 'utf8', timeout: 120_000 });
    const out = join(dir, 'cli-run');
    const base = [join(dir, 'imgs', 'train'), '--val', join(dir, 'imgs', 'val'), '--model', model, '--cache-dir', join(dir, 'cache')];
    const r = cli('train', ...base, '--out', out, '--finetune', '1', '--epochs', '2', '--lr', '0.01', '--json', '-q');
    assert.equal(r.status, 0, `stderr: ${r.stderr}`);
    const j = JSON.parse(r.stdout);
    assert.equal(j.cut.tensor, 'r0');
    assert.equal(j.validation.accuracy, 1);
    // --batch-size is the training batch too (the default 32 here).
    assert.equal((JSON.parse(readFileSync(join(out, 'finetune-options.json'), 'utf8')) as { finetune: { batchSize?: number } }).finetune.batchSize, 32);
    const initial = () => (JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as { initial?: unknown }).initial;
    const before = initial();
    assert.ok(before, 'metrics.json has "initial"');
    const again = cli('train', '--resume', out, '--json', '-q');
    assert.equal(again.status, 0, `stderr: ${again.stderr}`);
    assert.equal(JSON.parse(again.stdout).bestEpoch, j.bestEpoch);
    assert.deepEqual(initial(), before, 'graft train --resume: metrics.json keeps the same "initial" block');
    const small = join(dir, 'cli-batch');
    const b4 = cli('train', ...base, '--out', small, '--finetune', '1', '--epochs', '1', '--batch-size', '4', '--json', '-q');
    assert.equal(b4.status, 0, `stderr: ${b4.stderr}`);
    assert.equal((JSON.parse(readFileSync(join(small, 'finetune-options.json'), 'utf8')) as { finetune: { batchSize?: number } }).finetune.batchSize, 4);
    const bad = cli('train', ...base, '--out', join(dir, 'cli-bad'), '--finetune', '7');
    assert.equal(bad.status, 1, `stderr: ${bad.stderr}`);
    assert.match(bad.stderr, /from 1 to 2/);
    const usage = cli('train', '--finetune', '1');
    assert.equal(usage.status, 2, `stderr: ${usage.stderr}`);
    const knn = cli('train', ...base, '--out', join(dir, 'cli-knn'), '--finetune', '1', '--head', 'knn');
    assert.equal(knn.status, 2, `stderr: ${knn.stderr}`);
    assert.match(knn.stderr, /--head knn cannot be fine-tuned: a kNN head has no gradient/);
  });
});

describe('fine-tuning the shared MobileNet', { skip: SKIP_SHARED }, () => {
  test('14 blocks; the last-block suffix on the executor matches ONNX Runtime', async () => {
    const m = await loadOnnx(MOBILENET);
    const blocks = listBlocks(m);
    assert.equal(blocks.length, 14, `blocks: ${blocks.length}`);
    const { cut } = cutForLastBlocks(m, 1);
    const ort = await OrtModel.create(m, [cut, 'features'], { threads: 1 });
    const rng = mulberry32(5);
    const x = Float32Array.from({ length: 3 * 224 * 224 }, () => rng() * 2 - 1);
    const out = await ort.run(x, [1, 3, 224, 224]);
    await ort.dispose();
    assert.deepEqual(out[cut]!.dims, [1, 768, 7, 7]);
    const suf = suffixModel(m, cut, [768, 7, 7], ['features']);
    const ex = await TfExecutor.load(suf, { outputs: ['features'], trainable: convWeightNames(suf) });
    assert.equal(ex.trainable.length, 2);
    const f = ex.run(tf.tensor(out[cut]!.data, out[cut]!.dims));
    const a = f.features!.dataSync();
    f.features!.dispose();
    ex.dispose();
    let max = 0;
    for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - out.features!.data[i]!));
    assert.ok(max < 1e-4, `max difference ${max}`);
  });

  test('--finetune all on the real MobileNet: every conv trains on the executor; the run predicts the same through ORT', async () => {
    const root = join(dir, 'cvd-small');
    for (const [split, k] of [['train', 8], ['validation', 4]] as const) {
      for (const cls of ['cats', 'dogs']) {
        await mkdir(join(root, split, cls), { recursive: true });
        const files = (await readdir(join(SHARED!, 'data/cats_vs_dogs', split, cls))).sort().slice(0, k);
        for (const f of files) await symlink(join(SHARED!, 'data/cats_vs_dogs', split, cls, f), join(root, split, cls, f));
      }
    }
    const out = join(dir, 'run-all');
    const res = await finetuneRun({ data: join(root, 'train'), val: join(root, 'validation'), model: MOBILENET, out, blocks: 'all', cache: join(dir, 'cache-all'), finetune: { epochs: 1, batchSize: 8, lr: 1e-4 } });
    assert.equal(res.cut.blocks.length, 14);
    assert.equal(res.cut.tensor, 'input');
    const convWeights = convWeightNames(await loadOnnx(MOBILENET));
    assert.deepEqual(Object.keys(res.weights).sort(), [...convWeights].sort());
    assert.equal(res.history.length, 1);
    assert.ok(Number.isFinite(res.history[0]!.trainLoss), 'finite loss');
    // The fine-tuned model.onnx on ONNX Runtime gives what the executor gave on the validation images.
    const ev = await evalRun(out, join(root, 'validation'), { cache: false });
    assert.equal(ev.evaluation.n, 8);
    assert.equal(ev.evaluation.accuracy, res.validation.accuracy);
    assert.ok(Math.abs(ev.evaluation.logLoss - res.validation.logLoss) < 1e-4, `log loss ORT ${ev.evaluation.logLoss} vs executor ${res.validation.logLoss}`);
  });
});
