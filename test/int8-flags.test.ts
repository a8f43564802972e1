/**
 * `--int8` through the tasks: quantised once, calibrated on the images at hand, kept keyed by model + calibration
 * set (reused the second time), recorded in the run; the exported model of an int8 run is int8 too; features close
 * to float; fine-tuning refuses it.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadRun } from '../src/learn/run.js';
import { parseOnnx } from '../src/models/onnx-file.js';
import { exportRun } from '../src/tasks/export.js';
import { extractDir } from '../src/tasks/extract.js';
import { int8Dir } from '../src/tasks/int8.js';
import { predict } from '../src/tasks/predict.js';
import { trainRun } from '../src/tasks/train.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

let dir: string;
let data: string;
const saved = process.env.GRAFT_HOME;

describe('--int8 on extract / train / predict', { skip: SKIP_SHARED }, () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'graft-int8-'));
    process.env.GRAFT_HOME = join(dir, 'home');
    data = join(dir, 'data');
    for (const cls of ['cats', 'dogs']) {
      await mkdir(join(data, cls), { recursive: true });
      const src = join(SHARED!, 'data', 'cats_vs_dogs', 'train', cls);
      for (const n of (await readdir(src)).sort().slice(0, 15)) await symlink(join(src, n), join(data, cls, n));
    }
  });
  after(async () => {
    if (saved === undefined) delete process.env.GRAFT_HOME;
    else process.env.GRAFT_HOME = saved;
    await rm(dir, { recursive: true, force: true });
  });

  test('extract: int8 features close to float; the quantised model is made once and reused', async () => {
    const cache = join(dir, 'cache');
    const float = await extractDir(MOBILENET, data, { cache, out: join(dir, 'f32') });
    const a = await extractDir(MOBILENET, data, { cache, int8: true, out: join(dir, 'i8') });
    assert.equal(a.n, float.n);
    const made = (await readdir(int8Dir())).filter((f) => f.endsWith('.onnx'));
    assert.equal(made.length, 1);
    const before = await readFile(join(int8Dir(), made[0]!));
    const b = await extractDir(MOBILENET, data, { cache, int8: true });
    assert.equal(b.fromCache, b.n, 'the same int8 model (same hash) serves its cached rows');
    assert.deepEqual(await readFile(join(int8Dir(), made[0]!)), before);
    // Mean cosine between int8 and float rows, read back from the .npy files.
    const rows = async (d: string) => new Float32Array((await readFile(join(d, 'features.npy'))).buffer.slice(128));
    const f = await rows(join(dir, 'f32'));
    const q = await rows(join(dir, 'i8'));
    const dim = float.dim;
    let sum = 0;
    for (let i = 0; i < float.n; i++) {
      let ab = 0, aa = 0, bb = 0;
      for (let j = 0; j < dim; j++) {
        const x = f[i * dim + j]!, y = q[i * dim + j]!;
        ab += x * y; aa += x * x; bb += y * y;
      }
      sum += ab / Math.sqrt(aa * bb);
    }
    assert.ok(sum / float.n > 0.99, `mean cosine ${sum / float.n}`);
  });

  test('train --int8: the run records it, predict and export use the int8 backbone; fine-tuning refuses it', async () => {
    const out = join(dir, 'run');
    const res = await trainRun({ data, model: MOBILENET, out, int8: true, cache: join(dir, 'cache') });
    assert.equal(res.counts.train + res.counts.val, 30);
    const run = await loadRun(out);
    assert.ok(run.config.int8);
    assert.ok(run.config.model.path.startsWith(int8Dir()));
    const p = await predict(out, [join(SHARED!, 'data', 'cats_vs_dogs', 'validation', 'dogs', 'dog.2000.jpg')], { top: 1 });
    assert.equal(p.predictions.length, 1);
    const ex = await exportRun(out, join(dir, 'exported.onnx'));
    const ops = new Set(parseOnnx(await readFile(ex.out)).info.nodes.map((n) => n.opType));
    assert.ok(ops.has('QuantizeLinear') && ops.has('DequantizeLinear'), 'the exported model is int8 too');
    const { spawnSync } = await import('node:child_process');
    const cli = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'src', 'cli', 'entry.ts'), 'train', data, '--model', MOBILENET, '--out', join(dir, 'ft'), '--finetune', '1', '--int8'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(cli.status, 2, cli.stderr);
    assert.match(cli.stderr, /--int8 applies to frozen-feature training/);
  });
});
