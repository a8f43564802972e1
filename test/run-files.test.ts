/**
 * What graft reads back from a run folder, through the CLI as a user meets it: a run folder moved (with its model, or
 * alone) still finds its backbone or says which file it looked for; hand-edited or damaged files (run config,
 * metrics, fine-tuning options, checkpoint meta) are one line naming the file and the field, never a stack trace.
 * Real MobileNet and Cats vs Dogs photos from ../shared.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readCheckpoint, writeCheckpoint } from '../src/learn/checkpoint.js';
import { ModelStore } from '../src/models/store.js';
import { defaultSpec } from '../src/image/spec.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

const root = join(import.meta.dirname, '..');
let dir: string;
let data: string;

function graft(args: string[], home = join(dir, 'home')) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, GRAFT_HOME: home },
    timeout: 300_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** One line on stderr that names `file` and matches `what`; no stack trace. */
function saysOneLine(r: { code: number | null; stderr: string }, what: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, what);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line:\n${r.stderr}`);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-run-files-'));
  if (!SHARED) return;
  // 5 cats and 5 dogs: enough for a frozen head, quick to extract.
  data = join(dir, 'data');
  for (const cls of ['cats', 'dogs']) {
    const from = join(SHARED, 'data', 'cats_vs_dogs', 'train', cls);
    await mkdir(join(data, cls), { recursive: true });
    for (const f of (await readdir(from)).sort().slice(0, 5)) await copyFile(join(from, f), join(data, cls, f));
  }
});
after(() => void spawnSync('rm', ['-rf', dir]));

describe('a run folder moved', { skip: SKIP_SHARED }, () => {
  test('recorded relative to the run; moved with its model, eval/predict/export work; moved alone, the store or a clear message', async () => {
    // The model beside the runs, as a project keeps it: project/models/mobilenet.onnx, project/runs/cats.
    const project = join(dir, 'project');
    const modelPath = join(project, 'models', 'mobilenet.onnx');
    await mkdir(join(project, 'models'), { recursive: true });
    await copyFile(MOBILENET, modelPath);
    const run = join(project, 'runs', 'cats');
    const t = graft(['train', data, '--model', modelPath, '--out', run, '--json', '--quiet']);
    assert.equal(t.code, 0, t.stderr);
    const config = JSON.parse(await readFile(join(run, 'config.json'), 'utf8'));
    assert.equal(config.model.path, join('..', '..', 'models', 'mobilenet.onnx'), 'relative to the run folder');
    assert.match(config.model.sha256, /^[0-9a-f]{64}$/);
    const photo = join(SHARED!, 'data', 'cats_vs_dogs', 'validation', 'cats', (await readdir(join(SHARED!, 'data', 'cats_vs_dogs', 'validation', 'cats'))).sort()[0]!);
    const before = graft(['eval', run, data, '--out', join(dir, 'eval-before'), '--json', '--quiet']);
    assert.equal(before.code, 0, before.stderr);
    const predictBefore = graft(['predict', run, photo, '--json', '--quiet']);
    assert.equal(predictBefore.code, 0, predictBefore.stderr);

    // The whole project moved: the absolute path recorded at training time leads nowhere now.
    const moved = join(dir, 'moved-project');
    await rename(project, moved);
    const movedRun = join(moved, 'runs', 'cats');
    const ev = graft(['eval', movedRun, data, '--out', join(dir, 'eval-after'), '--json', '--quiet']);
    assert.equal(ev.code, 0, ev.stderr);
    assert.deepEqual(JSON.parse(ev.stdout).evaluation, JSON.parse(before.stdout).evaluation, 'the same backbone and head: the same numbers');
    const p = graft(['predict', movedRun, photo, '--json', '--quiet']);
    assert.equal(p.code, 0, p.stderr);
    assert.deepEqual(JSON.parse(p.stdout).predictions[0].top, JSON.parse(predictBefore.stdout).predictions[0].top);
    const onnx = join(dir, 'exported.onnx');
    const x = graft(['export', movedRun, '--out', onnx, '--json', '--quiet']);
    assert.equal(x.code, 0, x.stderr);
    const px = graft(['predict', onnx, photo, '--json', '--quiet']);
    assert.equal(px.code, 0, px.stderr);
    assert.equal(JSON.parse(px.stdout).predictions[0].top[0].label, JSON.parse(p.stdout).predictions[0].top[0].label, 'the exported model agrees with the run');

    // The run alone, elsewhere: its relative path and its old absolute path both lead nowhere.
    const alone = join(dir, 'shared-with-me', 'cats');
    await mkdir(join(dir, 'shared-with-me'));
    await rename(movedRun, alone);
    const lost = graft(['predict', alone, photo, '--json', '--quiet']);
    saysOneLine(lost, new RegExp(`${join(alone, 'config.json')}: the run's backbone is not at ${join(dir, 'models', 'mobilenet.onnx')} nor ${modelPath}`));
    assert.match(lost.stderr, new RegExp(config.model.sha256), 'the hash to look for');
    // The report needs no backbone.
    assert.equal(graft(['report', alone, '--quiet']).code, 0);

    // Someone who has the same model in graft's store (pulled from wherever they got it) can use the run.
    const home = join(dir, 'other-home');
    const store = new ModelStore(join(home, 'models'));
    await store.pull(
      { name: 't_mobilenet', family: 'test', description: 'test entry', format: 'onnx', files: [{ name: 'mobilenet.onnx', urls: [join(moved, 'models', 'mobilenet.onnx')] }], homepage: 'http://127.0.0.1/', license: 'test', preprocess: defaultSpec(), labels: 'none' },
      { mirror: null },
    );
    const viaStore = graft(['predict', alone, photo, '--json', '--quiet'], home);
    assert.equal(viaStore.code, 0, viaStore.stderr);
    assert.deepEqual(JSON.parse(viaStore.stdout).predictions[0].top, JSON.parse(predictBefore.stdout).predictions[0].top);
  });

  test('a run written before relative paths (absolute model.path, no absolutePath) still loads', async () => {
    const run = join(dir, 'old-run');
    assert.equal(graft(['train', data, '--model', MOBILENET, '--out', run, '--json', '--quiet']).code, 0);
    const cfgPath = join(run, 'config.json');
    const cfg = JSON.parse(await readFile(cfgPath, 'utf8'));
    assert.equal(cfg.model.path, relative(run, MOBILENET));
    delete cfg.model.absolutePath;
    cfg.model.path = MOBILENET;
    await writeFile(cfgPath, JSON.stringify(cfg));
    const r = graft(['eval', run, data, '--json', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
  });
});

describe('damaged or hand-edited files', { skip: SKIP_SHARED }, () => {
  test('run config and metrics: the file and the field named, exit 1, one line', async () => {
    const run = join(dir, 'edited');
    assert.equal(graft(['train', data, '--model', MOBILENET, '--out', run, '--json', '--quiet']).code, 0);
    const cfgPath = join(run, 'config.json');
    const good = await readFile(cfgPath, 'utf8');
    const cfg = JSON.parse(good);
    cfg.model.sha256 = 42;
    await writeFile(cfgPath, JSON.stringify(cfg));
    saysOneLine(graft(['predict', run, join(data, 'cats', (await readdir(join(data, 'cats')))[0]!)]), /config\.json: not a valid run config \(model\.sha256: .*expected string/);
    await writeFile(cfgPath, good.slice(0, good.length / 2));
    saysOneLine(graft(['eval', run, data]), /config\.json: not valid JSON/);
    await writeFile(cfgPath, good);
    const metricsPath = join(run, 'metrics.json');
    const metrics = JSON.parse(await readFile(metricsPath, 'utf8'));
    metrics.validation.perClass[0].recall = 'high';
    await writeFile(metricsPath, JSON.stringify(metrics));
    saysOneLine(graft(['report', run]), /metrics\.json: not a valid metrics file \(validation\.perClass\.0\.recall: /);
  });

  test('fine-tuning --resume: options with a wrong type, checkpoint meta damaged: named, exit 1, one line', async () => {
    const run = join(dir, 'ft');
    const t = graft(['train', data, '--model', MOBILENET, '--out', run, '--finetune', '1', '--epochs', '1', '--json', '--quiet']);
    assert.equal(t.code, 0, t.stderr);
    const optionsPath = join(run, 'finetune-options.json');
    const options = await readFile(optionsPath, 'utf8');
    const edited = JSON.parse(options);
    edited.finetune = { ...edited.finetune, lr: 'fast' };
    await writeFile(optionsPath, JSON.stringify(edited));
    saysOneLine(graft(['train', '--resume', run, '--quiet']), /finetune-options\.json: not a valid fine-tuning options file \(finetune\.lr: .*expected number/);
    await writeFile(optionsPath, options);

    const last = join(run, 'checkpoints', 'last.ckpt');
    const ck = await readCheckpoint(last);
    await writeCheckpoint(last, { ...ck.meta, bestEpoch: 'one' }, ck.tensors);
    saysOneLine(graft(['train', '--resume', run, '--quiet']), /last\.ckpt: damaged checkpoint \(meta\.bestEpoch: .*expected number/);
    await writeCheckpoint(last, { ...ck.meta, history: [{ epoch: 1 }] }, ck.tensors);
    saysOneLine(graft(['train', '--resume', run, '--quiet']), /last\.ckpt: damaged checkpoint \(meta\.history\.0\.trainLoss: /);
    // Put back as it was, resuming works (nothing left to train: the run is rewritten from its checkpoint).
    await writeCheckpoint(last, ck.meta, ck.tensors);
    const r = graft(['train', '--resume', run, '--json', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
  });
});
