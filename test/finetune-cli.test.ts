/**
 * Fine-tuning from the command line, as a user lives it: Ctrl-C and kill -9 in the middle of training and
 * `graft train --resume`; Ctrl-C before training starts; atomic checkpoints; `graft lr-find`; class balancing;
 * augmented views in a fine-tuning run. Everything runs on a tiny two-block CNN and small coloured JPEG folders.
 */
import { lossHook } from '../src/learn/fit.js';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { buildLoaded } from './helpers/onnx-builder.js';
import { InterruptedError } from '../src/errors.js';
import { readCheckpoint, writeCheckpoint } from '../src/learn/checkpoint.js';
import { finetune } from '../src/learn/finetune.js';
import { trainHead } from '../src/learn/heads.js';
import { loadOnnx } from '../src/models/onnx-file.js';
import { finetuneRun } from '../src/tasks/finetune.js';
import type { Reporter } from '../src/tasks/reporter.js';
import { mulberry32 } from '../src/util/random.js';
import { TINY_SIZE, tinyCnn, writeColourFolders, writeTinyCnn } from './helpers/tiny-cnn.js';

const REPO = join(import.meta.dirname, '..');
const ENTRY = join(REPO, 'src', 'cli', 'entry.ts');
const nodeArgs = (...args: string[]) => ['--import', 'tsx', ENTRY, ...args];

let dir: string;
let model: string;
let trainDir: string;
let valDir: string;
let smallTrain: string;
let smallVal: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-ftcli-'));
  model = await writeTinyCnn(join(dir, 'tiny.onnx'));
  // 96 training images: 3 steps of 32 per epoch (the CLI trains with the library's batch of 32).
  trainDir = await writeColourFolders(join(dir, 'imgs', 'train'), { red: 48, blue: 48 });
  valDir = await writeColourFolders(join(dir, 'imgs', 'val'), { red: 8, blue: 8 }, undefined, 1000);
  smallTrain = await writeColourFolders(join(dir, 'imgs', 'small-train'), { red: 8, blue: 8 });
  smallVal = await writeColourFolders(join(dir, 'imgs', 'small-val'), { red: 4, blue: 4 }, undefined, 500);
});
after(async () => rm(dir, { recursive: true, force: true }));

interface Running {
  child: ChildProcess;
  stderr: () => string;
  stdout: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

/** Start the CLI asynchronously, collecting its output. */
function startCli(...args: string[]): Running {
  const child = spawn(process.execPath, nodeArgs(...args), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, at: performance.now() })),
  );
  return { child, stderr: () => err, stdout: () => out, exit };
}

function runCli(...args: string[]) {
  return spawnSync(process.execPath, nodeArgs(...args), { encoding: 'utf8', timeout: 180_000 });
}

/** Poll until `probe` returns something truthy (or the child exits / time runs out: then fail with `what`). */
async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, r?: Running, timeoutMs = 120_000): Promise<T> {
  const t0 = performance.now();
  let exited = false;
  void r?.exit.then(() => (exited = true));
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (exited) assert.fail(`the CLI exited before ${what}; stderr:\n${r!.stderr()}`);
    if (performance.now() - t0 > timeoutMs) {
      r?.child.kill('SIGKILL');
      assert.fail(`timed out waiting for ${what}; stderr:\n${r?.stderr() ?? ''}`);
    }
    await new Promise((res) => setTimeout(res, 15));
  }
}

async function tryCheckpoint(path: string) {
  try {
    return await readCheckpoint(path);
  } catch {
    return undefined;
  }
}

const f32 = (base64: string) => {
  const b = Buffer.from(base64, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

/** What a finished fine-tuning run learned: head W and b (head.json) and the trained initializers of model.onnx. */
async function learned(run: string): Promise<Record<string, Float32Array>> {
  const head = JSON.parse(await readFile(join(run, 'head.json'), 'utf8')) as { params: { W: { base64: string }; b: { base64: string } } };
  const out: Record<string, Float32Array> = { 'head.W': f32(head.params.W.base64), 'head.b': f32(head.params.b.base64) };
  const config = JSON.parse(await readFile(join(run, 'config.json'), 'utf8')) as { head: { finetune: { trained: string[] } } };
  const m = await loadOnnx(join(run, 'model.onnx'));
  for (const name of config.head.finetune.trained) {
    const t = m.proto.graph!.initializer!.find((i) => i.name === name);
    assert.ok(t, `model.onnx has initializer ${name}`);
    out[`model.${name}`] = t.rawData?.length ? new Float32Array(Uint8Array.from(t.rawData).buffer) : Float32Array.from(t.floatData ?? []);
  }
  return out;
}

function assertSameWeights(a: Record<string, Float32Array>, b: Record<string, Float32Array>, tol: number, what: string): void {
  assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort(), `${what}: same tensors`);
  for (const k of Object.keys(a)) {
    assert.equal(a[k]!.length, b[k]!.length, `${what}: ${k} length`);
    let max = 0;
    for (let i = 0; i < a[k]!.length; i++) max = Math.max(max, Math.abs(a[k]![i]! - b[k]![i]!));
    assert.ok(max <= tol, `${what}: ${k} differs by up to ${max}`);
  }
}

const hasStackTrace = (s: string) => /^\s+at /m.test(s);

describe('graft train --finetune: interruption and --resume', () => {
  // Augmented views and dropout on, so the resumed run must reproduce which view each step draws and the masks.
  // 60 epochs of 3 steps: a few seconds of training on the tiny model; patience high so it never stops early.
  const EPOCHS = 60;
  const flags = () => [
    '--val', valDir, '--model', model, '--finetune', '1', '--epochs', String(EPOCHS), '--patience', '1000', '--lr', '0.01',
    '--augment', '2', '--dropout', '0.2', '--seed', '3', '--cache-dir', join(dir, 'cache'),
  ];
  let reference: Record<string, Float32Array> | undefined;
  let referenceHistory: { trainLoss: number }[] | undefined;
  /** The uninterrupted run with the same flags (computed once, shared by the Ctrl-C and kill -9 tests). */
  async function uninterrupted(): Promise<{ weights: Record<string, Float32Array>; history: { trainLoss: number }[] }> {
    if (!reference) {
      const runB = join(dir, 'runB');
      const r = runCli('train', trainDir, ...flags(), '--out', runB, '--json', '-q');
      assert.equal(r.status, 0, `uninterrupted run: ${r.stderr}`);
      reference = await learned(runB);
      referenceHistory = JSON.parse(await readFile(join(runB, 'history.json'), 'utf8'));
      assert.equal(referenceHistory!.length, EPOCHS, 'the uninterrupted run trains every epoch');
    }
    return { weights: reference, history: referenceHistory! };
  }

  test('Ctrl-C during training saves a checkpoint and exits 130; --resume then equals an uninterrupted run', async () => {
    const runA = join(dir, 'runA');
    const last = join(runA, 'checkpoints', 'last.ckpt');
    const r = startCli('train', trainDir, ...flags(), '--out', runA);
    // The first end-of-epoch checkpoint means the training loop is running.
    await waitFor('the first checkpoint', () => existsSync(last), r);
    r.child.kill('SIGINT');
    const { code, signal } = await r.exit;
    const err = r.stderr();
    assert.equal(code, 130, `exit code ${code} (signal ${signal}); stderr:\n${err}`);
    assert.match(err, /Ctrl-C: saving a checkpoint/, 'the first Ctrl-C says it saves');
    assert.match(err, /interrupted at epoch \d+, step \d+ of 3; saved .*checkpoints\/last\.ckpt/, `stderr names the checkpoint:\n${err}`);
    assert.ok(err.includes(`graft train --resume ${runA}`), `stderr says how to resume:\n${err}`);
    assert.ok(!hasStackTrace(err), `no stack trace:\n${err}`);
    assert.ok(!existsSync(join(runA, 'config.json')), 'the run was not finished (no config.json)');

    const ck = await readCheckpoint(last);
    const partial = ck.meta.partial as { epoch: number; step: number; lossSum: number; correct: number } | undefined;
    assert.ok(partial, `the checkpoint is a mid-training one (meta.partial): ${JSON.stringify(ck.meta.partial)}`);
    assert.ok(partial.epoch >= 2 && partial.epoch <= EPOCHS, `partial epoch ${partial.epoch}`);
    assert.ok(partial.step >= 0 && partial.step < 3, `partial step ${partial.step}`);
    assert.equal(ck.meta.epoch, partial.epoch - 1, 'meta.epoch = the last finished epoch');
    assert.equal((ck.meta.history as unknown[]).length, partial.epoch - 1, 'history up to the last finished epoch');
    assert.ok(Number.isFinite(partial.lossSum) && Number.isInteger(partial.correct), 'running sums saved');
    for (const k of ['w:dw_w', 'm:w:dw_w', 's:w:dw_w', 'head:W', 'm:head:W']) assert.ok(ck.tensors[k]?.length, `checkpoint holds ${k}`);
    for (const t of Object.values(ck.tensors)) assert.ok(t.every(Number.isFinite), 'checkpoint tensors finite');
    const leftovers = (await readdir(join(runA, 'checkpoints'))).filter((f) => f.endsWith('.tmp'));
    assert.deepEqual(leftovers, [], 'no temp files left behind');

    const resumed = runCli('train', '--resume', runA, '--json');
    assert.equal(resumed.status, 0, `resume: ${resumed.stderr}`);
    const j = JSON.parse(resumed.stdout) as { bestEpoch: number; run: string };
    assert.equal(j.run, runA);
    const hist = JSON.parse(await readFile(join(runA, 'history.json'), 'utf8')) as { trainLoss: number }[];
    assert.equal(hist.length, EPOCHS, 'the resumed run completes every epoch');

    const ref = await uninterrupted();
    assertSameWeights(await learned(runA), ref.weights, 1e-5, 'Ctrl-C + resume vs uninterrupted');
    // The epoch that was cut in two has the same training loss as in one go (the running sums were saved).
    for (let e = 0; e < EPOCHS; e++) assert.ok(Math.abs(hist[e]!.trainLoss - ref.history[e]!.trainLoss) < 1e-5, `epoch ${e + 1} train loss ${hist[e]!.trainLoss} vs ${ref.history[e]!.trainLoss}`);
  });

  test('kill -9 mid-training, then --resume from the last finished epoch: equals an uninterrupted run', async () => {
    const runK = join(dir, 'runK');
    const last = join(runK, 'checkpoints', 'last.ckpt');
    const r = startCli('train', trainDir, ...flags(), '--out', runK, '-q');
    const ck = await waitFor(
      'an end-of-epoch checkpoint',
      async () => {
        const c = await tryCheckpoint(last);
        return c && (c.meta.epoch as number) >= 1 && !c.meta.partial ? c : undefined;
      },
      r,
    );
    r.child.kill('SIGKILL');
    const { signal } = await r.exit;
    assert.equal(signal, 'SIGKILL', 'killed');
    const after = await readCheckpoint(last);
    assert.ok(!after.meta.partial, 'kill -9 leaves an end-of-epoch checkpoint (no partial)');
    assert.ok((after.meta.epoch as number) >= (ck.meta.epoch as number) && (after.meta.epoch as number) < EPOCHS, `killed mid-training (checkpoint at epoch ${after.meta.epoch} of ${EPOCHS})`);
    assert.ok(!existsSync(join(runK, 'config.json')), 'the run was not finished');

    const resumed = runCli('train', '--resume', runK, '--json', '-q');
    assert.equal(resumed.status, 0, `resume: ${resumed.stderr}`);
    const hist = JSON.parse(await readFile(join(runK, 'history.json'), 'utf8')) as unknown[];
    assert.equal(hist.length, EPOCHS);
    assertSameWeights(await learned(runK), (await uninterrupted()).weights, 1e-5, 'kill -9 + resume vs uninterrupted');
  });

  test('a second Ctrl-C quits at once; whatever last.ckpt is there is a whole checkpoint', async () => {
    const runD = join(dir, 'runD');
    const last = join(runD, 'checkpoints', 'last.ckpt');
    const r = startCli('train', trainDir, ...flags(), '--out', runD);
    await waitFor('the first checkpoint', () => existsSync(last), r);
    r.child.kill('SIGINT');
    await waitFor('the first Ctrl-C to be acknowledged', () => /Ctrl-C: saving/.test(r.stderr()), r, 10_000).catch(() => undefined);
    r.child.kill('SIGINT');
    const { code, signal } = await r.exit;
    const err = r.stderr();
    // Exit 130 from the handler; or, when the second Ctrl-C lands while Node is already tearing down after the saved
    // message (signal handlers are gone by then), death by SIGINT — either way after the checkpoint was written.
    const saved = /interrupted at epoch \d+, step \d+ of \d+; saved/.test(err);
    assert.ok(code === 130 || (signal === 'SIGINT' && saved), `exit code ${code} (signal ${signal}); stderr:\n${err}`);
    assert.ok(!hasStackTrace(err), `no stack trace:\n${err}`);
    const ck = await readCheckpoint(last);
    for (const t of Object.values(ck.tensors)) assert.ok(t.every(Number.isFinite), 'checkpoint tensors finite');
  });

  test('Ctrl-C before training starts (while images are read): exit 130 at once, no stack trace, nothing saved', async () => {
    const runC = join(dir, 'runC');
    // --no-cache and 8 augmented views (the later --augment wins): the prefix and every view are computed after the
    // first progress line, which leaves ample time to interrupt before training starts.
    const r = startCli('train', trainDir, ...flags(), '--augment', '8', '--no-cache', '--out', runC);
    await waitFor('the first progress line', () => /train prefix:/.test(r.stderr()), r);
    const t0 = performance.now();
    r.child.kill('SIGINT');
    const { code, signal, at } = await r.exit;
    const err = r.stderr();
    assert.equal(code, 130, `exit code ${code} (signal ${signal}); stderr:\n${err}`);
    assert.ok(at - t0 < 3000, `exits promptly (${Math.round(at - t0)} ms)`);
    assert.ok(!/before fine-tuning|Ctrl-C: saving/.test(err), `training had not started:\n${err}`);
    assert.match(err, /^graft: interrupted$/m, `says it was interrupted:\n${err}`);
    assert.ok(!hasStackTrace(err), `no stack trace:\n${err}`);
    assert.ok(!existsSync(join(runC, 'checkpoints')), 'no checkpoint written');
  });
});

describe('the abort signal is seen between steps, not only at the end of an epoch', () => {
  test('a timer that aborts right after training starts stops the first epoch after a step or two', async () => {
    // 640 rows, batch 8: 80 steps an epoch. The steps themselves only await microtasks; unless the loop yields to
    // the event loop, neither this timer nor a SIGINT handler runs before the epoch's checkpoint I/O.
    const S = TINY_SIZE;
    const n = 640;
    const rng = mulberry32(5);
    const x = Float32Array.from({ length: n * 4 * S * S }, () => rng());
    const y = Int32Array.from({ length: n }, (_, i) => i % 2);
    const ac = new AbortController();
    let steps = 0;
    const ckDir = join(dir, 'abort-ck');
    await assert.rejects(
      finetune({ model: buildLoaded(tinyCnn()), featureTensor: 'features', cut: 'r0', cutShape: [4, S, S], train: { x, n, y }, val: undefined, classes: ['a', 'b'] }, {
        epochs: 2,
        batchSize: 8,
        probeEpochs: 1,
        checkpointDir: ckDir,
        signal: ac.signal,
        onStart: () => setTimeout(() => ac.abort(), 0),
        callbacks: [lossHook((_e, _s, l) => (steps++, l))],
      }),
      (e: unknown) => e instanceof InterruptedError && /at epoch 1, step \d+ of 80/.test(e.message),
    );
    assert.ok(steps < 20, `stopped in the first epoch after ${steps} of 80 steps`);
    const ck = await readCheckpoint(join(ckDir, 'last.ckpt'));
    assert.deepEqual({ ...(ck.meta.partial as object), lossSum: 0, correct: 0 }, { epoch: 1, step: steps, lossSum: 0, correct: 0, rows: steps * 8 }, 'a mid-epoch checkpoint');
  });
});

describe('checkpoints are written atomically', () => {
  test('a checkpoint write that fails half-way (file size limit) leaves the previous last.ckpt intact', async () => {
    const ckDir = join(dir, 'atomic', 'checkpoints');
    const last = join(ckDir, 'last.ckpt');
    const good = { w: Float32Array.from({ length: 100 }, (_, i) => i / 7) };
    await writeCheckpoint(last, { epoch: 3, note: 'good' }, good);
    const before = await readFile(last);
    // A child process with a 512 KiB file size limit writes a 4 MB checkpoint over it: write() fails with EFBIG
    // part-way through the temp file, which must never be renamed over the good one.
    const script = join(dir, 'atomic', 'write-big.mts');
    await writeFile(
      script,
      `import { writeCheckpoint } from ${JSON.stringify(pathToFileURL(join(REPO, 'src', 'learn', 'checkpoint.ts')).href)};\n` +
        `try { await writeCheckpoint(${JSON.stringify(last)}, { epoch: 4, note: 'big' }, { w: new Float32Array(1 << 20).fill(1) }); console.log('written'); }\n` +
        `catch (e) { console.log('failed ' + (e as NodeJS.ErrnoException).code); }\n`,
    );
    const r = spawnSync('bash', ['-c', `ulimit -f 512 && exec "${process.execPath}" --import tsx "${script}"`], { encoding: 'utf8', cwd: REPO, timeout: 60_000 });
    assert.equal(r.status, 0, `child: ${r.stdout} ${r.stderr}`);
    assert.match(r.stdout, /failed EFBIG/, `the big write failed: ${r.stdout} ${r.stderr}`);
    assert.deepEqual(await readFile(last), before, 'last.ckpt unchanged, byte for byte');
    const ck = await readCheckpoint(last);
    assert.equal(ck.meta.note, 'good');
    assert.deepEqual(Array.from(ck.tensors.w!), Array.from(good.w));
    assert.deepEqual((await readdir(ckDir)).sort(), ['last.ckpt'], 'the half-written temp file was removed');
    // Without the limit the same write goes through.
    await writeCheckpoint(last, { epoch: 4, note: 'big' }, { w: new Float32Array(1 << 20).fill(1) });
    assert.equal((await readCheckpoint(last)).meta.note, 'big');
  });
});

describe('graft lr-find', () => {
  test('sweeps, writes a PNG, suggests a rate inside the range; --max-lr below --min-lr is a usage error', async () => {
    const png = join(dir, 'lr.png');
    const r = runCli('lr-find', smallTrain, '--val', smallVal, '--model', model, '--out', png, '--min-lr', '1e-5', '--max-lr', '10', '--steps', '30', '--no-cache', '--json', '-q');
    assert.equal(r.status, 0, `stderr: ${r.stderr}`);
    const head = await readFile(png);
    assert.deepEqual([...head.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
    const meta = await sharp(png).metadata();
    assert.equal(meta.format, 'png');
    assert.ok(meta.width === 900 && meta.height === 560, `size ${meta.width}x${meta.height}`);
    const j = JSON.parse(r.stdout) as { sweep: { lr: number; loss: number; smoothed: number }[]; suggested: number; png: string; stoppedEarly: boolean; counts: { train: number } };
    assert.equal(j.png, png);
    assert.equal(j.counts.train, 16);
    assert.ok(Array.isArray(j.sweep) && j.sweep.length >= 5 && j.sweep.length <= 30, `sweep of ${j.sweep?.length} steps`);
    assert.ok(Math.abs(j.sweep[0]!.lr - 1e-5) < 1e-12, `starts at --min-lr: ${j.sweep[0]!.lr}`);
    for (let i = 1; i < j.sweep.length; i++) assert.ok(j.sweep[i]!.lr > j.sweep[i - 1]!.lr, `lr increases at step ${i}`);
    for (const s of j.sweep) assert.ok(Number.isFinite(s.loss) && Number.isFinite(s.smoothed), 'losses finite');
    if (!j.stoppedEarly) assert.equal(j.sweep.length, 30, 'a sweep that did not diverge runs every step');
    assert.ok(j.suggested >= 1e-5 && j.suggested <= 10, `suggested ${j.suggested} within [1e-5, 10]`);

    const bad = runCli('lr-find', smallTrain, '--model', model, '--out', join(dir, 'bad.png'), '--min-lr', '0.1', '--max-lr', '0.01');
    assert.equal(bad.status, 2, `exit ${bad.status}: ${bad.stderr}`);
    assert.equal(bad.stderr.trim().split('\n').length, 1, `one line: ${bad.stderr}`);
    assert.match(bad.stderr, /--max-lr \(0\.01\) must be above --min-lr \(0\.1\)/);
    assert.ok(!existsSync(join(dir, 'bad.png')), 'nothing written');
  });
});

describe('graft lr-find: Ctrl-C', () => {
  test('Ctrl-C during the sweep (or while the images are read) quits at once with 130', async () => {
    // A sweep of 100000 tiny steps that never diverges would run for minutes.
    const png = join(dir, 'lr-int.png');
    const r = startCli('lr-find', smallTrain, '--val', smallVal, '--model', model, '--out', png, '--min-lr', '1e-9', '--max-lr', '2e-9', '--steps', '100000', '--no-cache');
    await waitFor('the first progress line', () => /val prefix:/.test(r.stderr()), r);
    await new Promise((res) => setTimeout(res, 1500)); // into the sweep
    const t0 = performance.now();
    r.child.kill('SIGINT');
    let timer: NodeJS.Timeout | undefined;
    const { code, signal, at } = await Promise.race([r.exit, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error('lr-find did not stop within 20 s of Ctrl-C')), 20_000)))])
      .catch((e) => {
        r.child.kill('SIGKILL');
        throw e;
      })
      .finally(() => clearTimeout(timer));
    const err = r.stderr();
    assert.equal(code, 130, `exit code ${code} (signal ${signal}); stderr:\n${err}`);
    assert.ok(at - t0 < 3000, `exits promptly (${Math.round(at - t0)} ms)`);
    assert.match(err, /^graft: interrupted$/m, `says it was interrupted:\n${err}`);
    assert.ok(!hasStackTrace(err), `no stack trace:\n${err}`);
    assert.ok(!existsSync(png), 'no plot written');
  });
});

describe('class balancing (--balance) for a frozen linear head', () => {
  /** Two overlapping Gaussian classes in 2-d: class 0 around (0, 0), class 1 around (1.2, 0.6), unit variance. */
  function blobs(n0: number, n1: number, seed: number) {
    const rng = mulberry32(seed);
    const gauss = () => Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
    const n = n0 + n1;
    const x = new Float32Array(n * 2);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const c = i < n0 ? 0 : 1;
      y[i] = c;
      x[2 * i] = gauss() + (c ? 1.2 : 0);
      x[2 * i + 1] = gauss() + (c ? 0.6 : 0);
    }
    return { x, n, d: 2, y };
  }

  test('90 vs 10 examples: the rare class is recalled more often with balance; the head records it', async () => {
    const train = blobs(90, 10, 11);
    const test = blobs(1000, 1000, 12);
    const recall1 = async (balance: boolean) => {
      const res = await trainHead(train, undefined, ['common', 'rare'], { kind: 'linear', epochs: 200, lr: 1e-2, seed: 0, balance });
      const p = await res.head.predictProba(test.x, test.n);
      let hit = 0;
      let n1 = 0;
      for (let i = 0; i < test.n; i++) {
        if (test.y[i] !== 1) continue;
        n1++;
        if (p[2 * i + 1]! > p[2 * i]!) hit++;
      }
      return { recall: hit / n1, json: res.head.toJSON() };
    };
    const plain = await recall1(false);
    const balanced = await recall1(true);
    assert.ok(balanced.recall > plain.recall + 0.2, `rare-class recall: balanced ${balanced.recall.toFixed(3)} vs plain ${plain.recall.toFixed(3)}`);
    const training = (j: unknown) => (j as { training: Record<string, unknown> }).training;
    assert.equal(training(balanced.json).balance, true, 'head.json training record says balance');
    assert.ok(!training(plain.json).balance, 'and not without it');
  });
});

describe('augmented views in a fine-tuning run', () => {
  function recorder() {
    const info: string[] = [];
    const notes: Record<string, string[]> = {};
    const r: Reporter = {
      info: (m) => info.push(m),
      update: (task, _done, note) => {
        if (note) (notes[task] ??= []).push(note);
      },
    };
    return { r, info, notes };
  }

  test('same seed: identical head; other seed: different; config records the views; the second run comes from the cache', async () => {
    const cache = join(dir, 'aug-cache');
    const run = async (name: string, seed: number) => {
      const rec = recorder();
      const res = await finetuneRun({
        data: smallTrain,
        val: smallVal,
        model,
        blocks: 1,
        cache,
        seed,
        out: join(dir, name),
        augment: { views: 2 },
        finetune: { epochs: 3, batchSize: 4, lr: 1e-2, dropout: 0.2, probeEpochs: 20 },
        reporter: rec.r,
      });
      return { res, rec, head: JSON.parse(await readFile(join(dir, name, 'head.json'), 'utf8')).params as Record<string, { base64: string }> };
    };
    const countFiles = async (d: string): Promise<number> => {
      let n = 0;
      for (const e of await readdir(d, { withFileTypes: true })) n += e.isDirectory() ? await countFiles(join(d, e.name)) : 1;
      return n;
    };

    const a = await run('aug-a', 1);
    assert.ok(a.rec.info.some((m) => /augmentation: 2 view\(s\)/.test(m)), `augmentation announced: ${a.rec.info.join(' | ')}`);
    assert.ok(!a.rec.info.some((m) => /served from the cache/.test(m)), 'the first run computes everything');
    const filesAfterA = await countFiles(cache);
    // 16 train + 8 val plain rows + 2 views of the 16 training images.
    assert.equal(filesAfterA, 16 + 8 + 2 * 16, `cache entries after the first run: ${filesAfterA}`);

    const b = await run('aug-b', 1);
    assert.deepEqual(b.head, a.head, 'same seed: identical head weights');
    for (const k of Object.keys(a.res.weights)) assert.deepEqual(Array.from(b.res.weights[k]!), Array.from(a.res.weights[k]!), `same seed: identical ${k}`);
    assert.ok(b.rec.info.some((m) => /train prefix: 16 of 16 images served from the cache/.test(m)), `plain rows from the cache: ${b.rec.info.join(' | ')}`);
    assert.ok(b.rec.info.some((m) => /val prefix: 8 of 8 images served from the cache/.test(m)), 'validation rows from the cache');
    for (const task of ['train view 1/2', 'train view 2/2']) assert.deepEqual(b.rec.notes[task]?.at(-1), '16 from cache', `${task} from the cache: ${JSON.stringify(b.rec.notes[task])}`);
    assert.equal(await countFiles(cache), filesAfterA, 'the second run added nothing to the cache');

    const c = await run('aug-c', 2);
    assert.notDeepEqual(c.head, a.head, 'another seed: another head');
    // Other views (the seed picks the crops and flips): 2 × 16 new cache entries; the plain rows are shared.
    assert.equal(await countFiles(cache), filesAfterA + 2 * 16, 'another seed, other augmented views');

    const config = JSON.parse(await readFile(join(dir, 'aug-a', 'config.json'), 'utf8'));
    assert.equal(config.head.finetune.augment.views, 2, `config.json head.finetune.augment: ${JSON.stringify(config.head.finetune.augment)}`);
    const saved = JSON.parse(await readFile(join(dir, 'aug-a', 'finetune-options.json'), 'utf8'));
    assert.equal(saved.augment.views, 2, 'finetune-options.json keeps the views for --resume');
  });
});
