import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { OrtModel } from '../src/engine/ort.js';
import { buildOnnx } from './helpers/onnx-builder.js';
import { GraftError } from '../src/errors.js';
import { tensorLength, loadInto } from '../src/image/preprocess.js';
import { logLoss } from '../src/learn/metrics.js';
import { loadRun } from '../src/learn/run.js';
import { loadOnnx, parseOnnx } from '../src/models/onnx-file.js';
import { resolveModel } from '../src/models/resolve.js';
import { evalRun } from '../src/tasks/evaluate.js';
import { exportRun } from '../src/tasks/export.js';
import { finetuneRun } from '../src/tasks/finetune.js';
import { predict } from '../src/tasks/predict.js';
import { trainRun } from '../src/tasks/train.js';
import { colourImage, type Rgb } from './helpers/images.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';
import { tinyCnn } from './helpers/tiny-cnn.js';

const COLOURS: Record<string, Rgb> = { red: [220, 30, 30], green: [30, 200, 40], blue: [30, 40, 220] };
const META = [
  { key: 'Image.NominalPixelRange', value: 'Normalized_0_1' },
  { key: 'Image.BitmapPixelFormat', value: 'Rgb8' },
];

let dir: string;
let tiny: string;
let cnn: string;
/** Largest |Δ| seen per comparison, printed at the end so the report has the real numbers. */
const measured: Record<string, number> = {};


async function writeImages(root: string, perClass: number, seedBase: number): Promise<void> {
  for (const [name, rgb] of Object.entries(COLOURS)) {
    const d = join(root, name);
    await mkdir(d, { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const shade: Rgb = [rgb[0] + (i % 3) * 9, rgb[1] + (i % 4) * 7, rgb[2] - (i % 5) * 6];
      await colourImage(shade, 20 + i, 16 + (i % 3), seedBase + i).jpeg().toFile(join(d, `${name}-${i}.jpg`));
    }
  }
}

async function imagesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const c of (await readdir(root)).sort()) for (const f of (await readdir(join(root, c))).sort()) out.push(join(root, c, f));
  return out;
}

/** The images as the run's preprocessing turns them into one input batch. */
async function batchOf(runDir: string, paths: string[]): Promise<{ x: Float32Array; dims: number[] }> {
  const spec = (await loadRun(runDir)).config.preprocess;
  const per = tensorLength(spec);
  const x = new Float32Array(paths.length * per);
  for (let i = 0; i < paths.length; i++) await loadInto(x, i * per, paths[i]!, spec);
  const [h, w] = spec.size;
  return { x, dims: spec.layout === 'NCHW' ? [paths.length, 3, h, w] : [paths.length, h, w, 3] };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, `lengths ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/**
 * Runs the exported file with onnxruntime-node directly (no graft code in between) and the run the way graft does
 * (backbone at the feature tensor on ORT, then head.predictProba in JS), on the same input tensors.
 */
async function compareOnImages(runDir: string, exported: string, paths: string[], label: string) {
  const run = await loadRun(runDir);
  const { x, dims } = await batchOf(runDir, paths);
  const session = await ort.InferenceSession.create(exported);
  assert.deepEqual([...session.outputNames].sort(), ['features', 'logits', 'probabilities'], `outputs: ${session.outputNames}`);
  const res = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', x, dims) });
  await session.release();
  const got = res.probabilities!.data as Float32Array;
  const logits = res.logits!.data as Float32Array;
  const features = res.features!.data as Float32Array;
  const C = run.config.classes.length;
  assert.deepEqual(res.probabilities!.dims, [paths.length, C]);
  assert.deepEqual(res.logits!.dims, [paths.length, C]);

  const backbone = await OrtModel.create(await loadOnnx(run.config.model.path), [run.config.model.featureTensor], { threads: 1 });
  const feats = (await backbone.run(x, dims))[run.config.model.featureTensor]!.data;
  await backbone.dispose();
  const want = await run.head.predictProba(feats, paths.length);
  const dp = maxAbsDiff(got, want);
  const df = maxAbsDiff(features, feats);
  measured[`${label}: probabilities`] = dp;
  measured[`${label}: features`] = df;
  assert.ok(dp < 1e-4, `${label}: probabilities differ by ${dp}`);
  assert.ok(df < 1e-4, `${label}: features differ by ${df}`);
  // logits are the pre-softmax scores: softmax(logits) is the probabilities output.
  for (let i = 0; i < paths.length; i++) {
    const row = logits.subarray(i * C, (i + 1) * C);
    const max = Math.max(...row);
    const e = Array.from(row, (v) => Math.exp(v - max));
    const s = e.reduce((a, b) => a + b, 0);
    for (let c = 0; c < C; c++) assert.ok(Math.abs(e[c]! / s - got[i * C + c]!) < 1e-5, `${label}: softmax(logits) row ${i} class ${c}`);
  }
  return { got, want, classes: run.config.classes };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-export-'));
  tiny = join(dir, 'tiny.onnx');
  await writeFile(tiny, tinyClassifier({ size: 16, channels: 6, classes: 5, metadata: Object.fromEntries(META.map((m) => [m.key, m.value])) }));
  cnn = join(dir, 'tiny-cnn.onnx');
  const m = parseOnnx(buildOnnx(tinyCnn()), cnn);
  m.proto.metadataProps = META as never;
  const { onnx } = (await import('onnx-proto')).default;
  await writeFile(cnn, onnx.ModelProto.encode(m.proto).finish());
  await writeImages(join(dir, 'imgs', 'train'), 8, 0);
  await writeImages(join(dir, 'imgs', 'val'), 4, 100);
});
after(async () => {
  if (Object.keys(measured).length) console.log('max |Δ| measured:', JSON.stringify(measured, null, 1));
  await rm(dir, { recursive: true, force: true });
});

describe('export: tiny models built in the test', () => {
  const data = () => ({ data: join(dir, 'imgs', 'train'), val: join(dir, 'imgs', 'val'), cache: join(dir, 'cache') });

  test('linear head: one graph whose probabilities are the run’s, and a sidecar graft predict reads', async () => {
    const runDir = join(dir, 'run-linear');
    await trainRun({ ...data(), model: tiny, out: runDir, head: { kind: 'linear', epochs: 40 } });
    const out = join(dir, 'exported', 'linear.onnx');
    const res = await exportRun(runDir, out);
    assert.equal(res.head, 'linear');
    assert.deepEqual(res.classes, ['blue', 'green', 'red']);
    assert.deepEqual(res.outputs.map((o) => o.name), ['probabilities', 'logits', 'features']);
    assert.ok(res.verified && res.verified.maxAbsDiff < 1e-4, `self-check: ${JSON.stringify(res.verified)}`);
    assert.equal(res.bytes, (await stat(out)).size);

    const paths = [...(await imagesUnder(join(dir, 'imgs', 'val'))), ...(await imagesUnder(join(dir, 'imgs', 'train')))];
    await compareOnImages(runDir, out, paths, 'tiny linear');

    // The original classifier (Gemm → 'logits' [N, 5]) is gone; the head's logits took the name.
    const info = (await loadOnnx(out)).info;
    assert.ok(!info.nodes.some((n) => n.name === 'fc'), `nodes: ${info.nodes.map((n) => n.name)}`);
    assert.deepEqual(JSON.parse(info.metadata['graft.labels']!), ['blue', 'green', 'red']);
    assert.equal(info.metadata['Image.NominalPixelRange'], 'Normalized_0_1', 'backbone metadata kept');

    const sidecar = JSON.parse(await readFile(`${out}.json`, 'utf8'));
    const run = await loadRun(runDir);
    assert.deepEqual(sidecar.preprocess, run.config.preprocess);
    assert.deepEqual(sidecar.labels, run.config.classes);
    assert.equal(sidecar.logitsOutput, 'probabilities');
    assert.ok(Array.isArray(sidecar.preprocessing) && sidecar.preprocessing.some((s: string) => /NCHW/.test(s)), `description: ${sidecar.preprocessing}`);

    // resolveModel picks everything up from the sidecar: no flags, no warnings.
    const ref = await resolveModel(out);
    assert.deepEqual(ref.labels, ['blue', 'green', 'red']);
    assert.equal(ref.logitsTensor, 'probabilities');
    assert.equal(ref.logitsAreProbabilities, true);
    assert.equal(ref.featureTensor, 'features');
    assert.deepEqual(ref.spec, run.config.preprocess);
    assert.deepEqual(ref.warnings, []);
  });

  test('graft predict on the exported file: the run’s class names, same top-1 and probabilities as on the run', async () => {
    const runDir = join(dir, 'run-linear');
    const out = join(dir, 'exported', 'linear.onnx');
    const imgs = await imagesUnder(join(dir, 'imgs', 'val'));
    const a = await predict(runDir, imgs, { top: 3, cache: false });
    const b = await predict(out, imgs, { top: 3, cache: false });
    assert.equal(a.kind, 'run');
    assert.equal(b.kind, 'model');
    assert.equal(b.predictions.length, imgs.length);
    let max = 0;
    for (let i = 0; i < imgs.length; i++) {
      const pa = a.predictions[i]!;
      const pb = b.predictions[i]!;
      assert.equal(pb.path, pa.path);
      assert.equal(pb.top[0]!.label, pa.top[0]!.label, `${pa.path}: ${JSON.stringify(pb.top)} vs ${JSON.stringify(pa.top)}`);
      for (const t of pa.top) {
        const u = pb.top.find((v) => v.label === t.label);
        assert.ok(u, `${pa.path}: ${t.label} missing from ${JSON.stringify(pb.top)}`);
        max = Math.max(max, Math.abs(u.probability - t.probability));
      }
    }
    measured['tiny linear: predict(run) vs predict(exported)'] = max;
    assert.ok(max < 1e-4, `probabilities differ by ${max}`);

    // Without its sidecar the file still names its classes (ONNX metadata) and reads the softmax output.
    const bare = join(dir, 'exported', 'bare.onnx');
    await writeFile(bare, await readFile(out));
    const ref = await resolveModel(bare);
    assert.deepEqual(ref.labels, ['blue', 'green', 'red']);
    assert.equal(ref.logitsTensor, 'probabilities');
    assert.equal(ref.logitsAreProbabilities, true);
  });

  test('graft eval on the exported file: the same evaluation as on the run', async () => {
    const runDir = join(dir, 'run-linear');
    const out = join(dir, 'exported', 'linear.onnx');
    const a = await evalRun(runDir, join(dir, 'imgs', 'val'), { cache: false, out: join(dir, 'eval-run') });
    const b = await evalRun(out, join(dir, 'imgs', 'val'), { cache: false });
    assert.equal(b.evaluation.n, a.evaluation.n);
    assert.equal(b.evaluation.accuracy, a.evaluation.accuracy);
    assert.deepEqual(b.evaluation.confusion, a.evaluation.confusion);
    assert.ok(Math.abs(b.evaluation.logLoss - a.evaluation.logLoss) < 1e-5, `log loss ${b.evaluation.logLoss} vs ${a.evaluation.logLoss}`);
    assert.equal(b.out, join(dir, 'exported', 'linear-eval', 'val'));
    assert.ok((await stat(join(b.out, 'confusion.png'))).size > 0, 'confusion matrix written beside the model');
    await assert.rejects(evalRun(tiny, join(dir, 'imgs', 'val'), { cache: false }), (e: unknown) => e instanceof GraftError && /not a classifier with class names|classes/.test((e as Error).message));
  });

  test('mlp head: hidden layer + ReLU exported, dropout left out; probabilities within 1e-4', async () => {
    const runDir = join(dir, 'run-mlp');
    await trainRun({ ...data(), model: tiny, out: runDir, head: { kind: 'mlp', hidden: 16, dropout: 0.3, epochs: 40 } });
    const out = join(dir, 'exported', 'mlp.onnx');
    const res = await exportRun(runDir, out);
    assert.equal(res.head, 'mlp');
    const info = (await loadOnnx(out)).info;
    const ops = info.nodes.map((n) => n.opType);
    assert.ok(!ops.includes('Dropout'), `ops: ${ops}`);
    assert.equal(ops.filter((o) => o === 'Gemm').length, 2, `ops: ${ops}`);
    const paths = [...(await imagesUnder(join(dir, 'imgs', 'val'))), ...(await imagesUnder(join(dir, 'imgs', 'train')))];
    await compareOnImages(runDir, out, paths, 'tiny mlp');
  });

  test('a run trained on an exported model exports again: the earlier head’s names do not clash', async () => {
    const runDir = join(dir, 'run-on-export');
    await trainRun({ ...data(), model: join(dir, 'exported', 'linear.onnx'), out: runDir, head: { kind: 'mlp', hidden: 8, epochs: 10 } });
    assert.equal((await loadRun(runDir)).config.model.featureTensor, 'features');
    const out = join(dir, 'exported', 'twice.onnx');
    await exportRun(runDir, out);
    const names = (await loadOnnx(out)).info.nodes.map((n) => n.name);
    assert.equal(new Set(names).size, names.length, `duplicate node names: ${names}`);
    await compareOnImages(runDir, out, await imagesUnder(join(dir, 'imgs', 'val')), 'exported twice');
  });

  test('fine-tuned run: the exported graph carries the fine-tuned weights; matches the run and the TF.js executor', async () => {
    const runDir = join(dir, 'run-ft');
    const res = await finetuneRun({ ...data(), model: cnn, out: runDir, blocks: 1, finetune: { epochs: 3, batchSize: 4, lr: 1e-2, probeEpochs: 20 } });
    const out = join(dir, 'exported', 'ft.onnx');
    const exp = await exportRun(runDir, out);
    assert.equal(exp.backbone.finetuned, true);
    assert.equal(exp.backbone.path, join(runDir, 'model.onnx'));

    // The fine-tuned pointwise weights are in the export, not the original ones.
    const weights = (path: string, name: string) =>
      loadOnnx(path).then((m) => {
        const t = m.proto.graph!.initializer!.find((i) => i.name === name)!;
        // Builders differ: some write raw_data, some float_data.
        return t.rawData?.length ? new Float32Array(new Uint8Array(t.rawData).slice().buffer) : Float32Array.from(t.floatData ?? []);
      });
    const [orig, tuned, inExport] = await Promise.all([weights(cnn, 'pw_w'), weights(join(runDir, 'model.onnx'), 'pw_w'), weights(out, 'pw_w')]);
    assert.ok(maxAbsDiff(orig, tuned) > 1e-4, 'fine-tuning changed pw_w');
    assert.equal(maxAbsDiff(tuned, inExport), 0);

    const valPaths = await imagesUnder(join(dir, 'imgs', 'val'));
    const { got, classes } = await compareOnImages(runDir, out, valPaths, 'tiny fine-tuned');
    // The executor's validation probabilities (from training) give the same log loss as the exported graph.
    const y = Int32Array.from(valPaths, (p) => classes.findIndex((c) => p.includes(`/${c}/`)));
    const ll = logLoss(got, y, classes.length);
    measured['tiny fine-tuned: |log loss(export) - log loss(TF.js executor)|'] = Math.abs(ll - res.validation.logLoss);
    assert.equal(res.counts.val, valPaths.length);
    assert.ok(Math.abs(ll - res.validation.logLoss) < 1e-4, `log loss ${ll} vs executor ${res.validation.logLoss}`);
  });

  test('kNN run: refused, saying why; nothing written', async () => {
    const runDir = join(dir, 'run-knn');
    await trainRun({ ...data(), model: tiny, out: runDir, head: { kind: 'knn', k: 3 } });
    const out = join(dir, 'exported', 'knn.onnx');
    await assert.rejects(exportRun(runDir, out), (e: unknown) => e instanceof GraftError && /kNN heads cannot be exported/.test((e as Error).message) && /linear or mlp/.test((e as Error).message));
    await assert.rejects(stat(out), /ENOENT/);
    await assert.rejects(stat(`${out}.json`), /ENOENT/);
  });

  test('missing run folder, or a run whose backbone changed: clear errors', async () => {
    await assert.rejects(exportRun(join(dir, 'no-such-run'), join(dir, 'x.onnx')), (e: unknown) => e instanceof GraftError && /run directory not found/.test((e as Error).message));
    await assert.rejects(exportRun(join(dir, 'imgs'), join(dir, 'x.onnx')), (e: unknown) => e instanceof GraftError && /run config not found/.test((e as Error).message));
    // A run trained on a model file that was then replaced.
    const moved = join(dir, 'tiny-changed.onnx');
    await writeFile(moved, tinyClassifier({ size: 16, channels: 6, classes: 5 }));
    const runDir = join(dir, 'run-changed');
    await trainRun({ ...data(), model: moved, out: runDir, head: { epochs: 5 } });
    await writeFile(moved, tinyClassifier({ size: 16, channels: 7, classes: 5 }));
    await assert.rejects(exportRun(runDir, join(dir, 'x.onnx')), (e: unknown) => e instanceof GraftError && /changed since the run/.test((e as Error).message));
    await rm(moved);
    await assert.rejects(exportRun(runDir, join(dir, 'x.onnx')), (e: unknown) => e instanceof GraftError && /run-changed\/config\.json: the run's backbone is not at \S*tiny-changed\.onnx and graft's model store has no file with its SHA-256 [0-9a-f]{64}/.test((e as Error).message));
  });

  test('CLI: graft export prints what it wrote, --json, errors exit 1, usage errors exit 2', () => {
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'src', 'cli', 'entry.ts'), ...args], { encoding: 'utf8', timeout: 120_000 });
    const out = join(dir, 'cli', 'model.onnx');
    const r = cli('export', join(dir, 'run-linear'), '--out', out);
    assert.equal(r.status, 0, `stderr: ${r.stderr}`);
    assert.match(r.stdout, /probabilities \[batch, 3\]/);
    assert.match(r.stdout, /classes \(3\): blue, green, red/);
    assert.match(r.stdout, /model\.onnx\.json/);
    const j = cli('export', join(dir, 'run-mlp'), '--out', out, '--json', '-q');
    assert.equal(j.status, 0, `stderr: ${j.stderr}`);
    const parsed = JSON.parse(j.stdout);
    assert.equal(parsed.head, 'mlp');
    assert.equal(parsed.out, out);
    const knn = cli('export', join(dir, 'run-knn'), '--out', join(dir, 'cli', 'knn.onnx'));
    assert.equal(knn.status, 1, `stderr: ${knn.stderr}`);
    assert.equal(knn.stderr.trim().split('\n').length, 1, `one line: ${knn.stderr}`);
    assert.match(knn.stderr, /^graft: .*kNN heads cannot be exported/);
    const usage = cli('export', join(dir, 'run-linear'));
    assert.equal(usage.status, 2, `stderr: ${usage.stderr}`);
    const help = cli('export', '--help');
    assert.equal(help.status, 0, `stderr: ${help.stderr}`);
    assert.match(help.stdout, /sidecar/);
  });
});

describe('export: Cats vs Dogs on the shared MobileNet', { skip: SKIP_SHARED }, () => {
  test('linear head on 40 images, exported: same probabilities as the run (1e-4), via ORT and via graft predict', async () => {
    // 20 cats + 20 dogs through symlinks, so the run sees a small folder of the real photos.
    const train = join(dir, 'cd', 'train');
    const src = join(SHARED!, 'data', 'cats_vs_dogs', 'train');
    for (const [cls, stem] of [['cats', 'cat'], ['dogs', 'dog']] as const) {
      await mkdir(join(train, cls), { recursive: true });
      for (let i = 0; i < 20; i++) await symlink(join(src, cls, `${stem}.${i}.jpg`), join(train, cls, `${stem}.${i}.jpg`));
    }
    const runDir = join(dir, 'run-cd');
    const res = await trainRun({ data: train, model: MOBILENET, out: runDir, cache: join(dir, 'cache'), head: { epochs: 30 } });
    assert.equal(res.counts.train + res.counts.val, 40);
    const out = join(dir, 'exported', 'cats-dogs.onnx');
    const exp = await exportRun(runDir, out);
    assert.deepEqual(exp.classes, ['cats', 'dogs']);
    assert.ok(exp.nodes.dropped > 0, `the ImageNet classifier is dropped: ${JSON.stringify(exp.nodes)}`);
    assert.ok(exp.bytes < (await stat(MOBILENET)).size, `export ${exp.bytes} B is smaller than the backbone with its 1000-class classifier`);
    measured['MobileNet: self-check on random inputs'] = exp.verified!.maxAbsDiff;

    const held = [join(SHARED!, 'data', 'cats_vs_dogs', 'validation', 'cats', 'cat.2000.jpg'), join(SHARED!, 'data', 'cats_vs_dogs', 'validation', 'dogs', 'dog.2000.jpg')];
    const paths = [...held, ...(await imagesUnder(train)).slice(0, 6)];
    await compareOnImages(runDir, out, paths, 'MobileNet linear');

    const a = await predict(runDir, held, { top: 2, cache: false });
    const b = await predict(out, held, { top: 2, cache: false });
    let max = 0;
    for (let i = 0; i < held.length; i++) {
      assert.equal(b.predictions[i]!.top[0]!.label, a.predictions[i]!.top[0]!.label, `top-1 of ${held[i]}`);
      for (const t of a.predictions[i]!.top) max = Math.max(max, Math.abs(b.predictions[i]!.top.find((u) => u.label === t.label)!.probability - t.probability));
    }
    measured['MobileNet: predict(run) vs predict(exported)'] = max;
    assert.ok(max < 1e-4, `predict probabilities differ by ${max}`);
  });
});
