/** The CLI as a user meets it: exit codes, one-line errors, --help, --json. Runs the built entry point via tsx. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { threadCount } from '../src/engine/ort.js';
import { colourImage } from './helpers/images.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';

const root = join(import.meta.dirname, '..');
let dir: string;

function graft(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, GRAFT_HOME: join(dir, 'home') },
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-cli-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

describe('graft CLI', () => {
  test('--help for the program and every command, exit 0', () => {
    const top = graft('--help');
    assert.equal(top.code, 0);
    for (const cmd of ['train', 'eval', 'predict', 'extract', 'layers']) {
      assert.match(top.stdout, new RegExp(`\\b${cmd}\\b`));
      const r = graft(cmd, '--help');
      assert.equal(r.code, 0, `${cmd} --help`);
      assert.match(r.stdout, /Usage: graft/);
      assert.match(r.stdout, /--json/);
    }
  });

  test('unknown flag and missing argument: usage error, exit 2', () => {
    const r = graft('predict', '--frobnicate', 'x', 'y');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown option '--frobnicate'/);
    assert.equal(graft('train').code, 2);
    assert.equal(graft('nosuchcommand').code, 2);
  });

  test('wrong model path, non-ONNX model, missing run directory: one clear line, exit 1', async () => {
    const img = join(dir, 'x.png');
    await writeFile(img, 'x');
    const missing = graft('predict', join(dir, 'nope.onnx'), img);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr.trim().split('\n').length, 1);
    assert.match(missing.stderr, /model not found: .*nope\.onnx/);

    const notOnnx = join(dir, 'model.onnx');
    await writeFile(notOnnx, 'hello, I am text\n'.repeat(10));
    const bad = graft('layers', notOnnx);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /model\.onnx: not an ONNX model/);
    assert.doesNotMatch(bad.stderr, /at .*\.ts:\d+/);

    const noRun = graft('eval', join(dir, 'no-run'), dir);
    assert.equal(noRun.code, 1);
    assert.match(noRun.stderr, /run directory not found: .*no-run/);
  });

  test('layers --json on a model built in the test', async () => {
    const p = join(dir, 'tiny.onnx');
    await writeFile(p, tinyClassifier());
    const r = graft('layers', p, '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.featureTensor, 'features');
    assert.deepEqual(j.nodes.map((n: { opType: string }) => n.opType), ['Conv', 'Relu', 'GlobalAveragePool', 'Flatten', 'Gemm']);
  });

  test('--threads above the core count is capped, with a warning, and the work finishes', async () => {
    const p = join(dir, 'tiny-threads.onnx');
    await writeFile(p, tinyClassifier({ size: 16, metadata: { 'Image.NominalPixelRange': 'Normalized_0_1', 'Image.BitmapPixelFormat': 'Rgb8' } }));
    const imgs = join(dir, 'thread-imgs');
    await mkdir(imgs, { recursive: true });
    for (let i = 0; i < 3; i++) await colourImage([40 * i, 90, 200 - 40 * i], 20, 20, i).png().toFile(join(imgs, `c${i}.png`));
    const r = graft('extract', p, imgs, '--out', join(dir, 'thread-feats'), '--threads', '999', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`--threads 999: this machine has ${availableParallelism()} cores; using ${availableParallelism()}`));
    assert.equal(JSON.parse(r.stdout).n, 3);
  });
});

test('threadCount: the request, never more than the cores, at least 1', () => {
  const cores = availableParallelism();
  assert.equal(threadCount(undefined), cores);
  assert.equal(threadCount(999), cores);
  assert.equal(threadCount(1), 1);
  assert.equal(threadCount(0), 1);
});
