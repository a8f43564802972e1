/** The CLI as a user meets it: exit codes, one-line errors, --help, --json. Runs the built entry point via tsx. */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { displayPath } from '../src/cli/output.js';
import { floatRange } from '../src/cli/options.js';
import { threadCount } from '../src/engine/ort.js';
import { colourImage } from './helpers/images.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';
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
    // An empty folder is said, not reported as 0 images extracted.
    const emptyDir = join(dir, 'empty-folder');
    mkdirSync(emptyDir, { recursive: true });
    const tiny = join(dir, 'tiny-for-empty.onnx');
    writeFileSync(tiny, tinyClassifier());
    const empty = graft('extract', tiny, emptyDir);
    assert.equal(empty.code, 1, empty.stderr);
    assert.match(empty.stderr, /graft: no image could be read in .*empty-folder \(no image files found\)/);
    // A head that fine-tuning cannot train (kNN: no gradient) is refused, not silently replaced by a linear one.
    const knn = graft('train', 'data', '--model', 'm.onnx', '--out', 'o', '--finetune', '1', '--head', 'knn');
    assert.equal(knn.code, 2);
    assert.match(knn.stderr, /--head knn cannot be fine-tuned: a kNN head has no gradient/);
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

/** A tiny classifier whose input is [0, 1] RGB (no preprocessing warning), and its three class names. */
async function tinyModel(name: string): Promise<{ model: string; labels: string }> {
  const model = join(dir, name);
  await writeFile(model, tinyClassifier({ metadata: { 'Image.NominalPixelRange': 'Normalized_0_1', 'Image.BitmapPixelFormat': 'Rgb8' } }));
  const labels = join(dir, `${name}.labels.txt`);
  await writeFile(labels, 'a\nb\nc\n');
  return { model, labels };
}

describe('graft predict: exit code', () => {
  test('1 when a named input is missing or an image cannot be decoded, after printing what it could; 0 for other file types in a folder', async () => {
    const { model, labels } = await tinyModel('tiny-predict.onnx');
    const folder = join(dir, 'predict-folder');
    await mkdir(folder, { recursive: true });
    const good = join(folder, 'good.png');
    await colourImage([200, 30, 30], 20, 20, 1).png().toFile(good);
    await writeFile(join(folder, 'notes.txt'), 'not an image, and not meant to be one');
    const p = (...args: string[]) => graft('predict', model, ...args, '--labels', labels, '--top', '1');

    // Only a file of another type beside the image: reported, not a failure.
    const ok = p(folder);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stderr, /notes\.txt: not an image file type/);
    assert.match(ok.stdout, /good\.png\n/);

    // A named input that does not exist: the other prediction is printed, then exit 1 with one line saying why.
    const missing = join(dir, 'no-such-image.png');
    const m = p(good, missing);
    assert.equal(m.code, 1, m.stderr);
    assert.match(m.stdout, /good\.png\n\s+[\d.]+%\s+\w/, `the good image is still classified:\n${m.stdout}`);
    assert.match(m.stderr, /no-such-image\.png: file not found/);
    assert.match(m.stderr, /^graft: 1 input\(s\) missing or unreadable/m);

    // An image in a folder that cannot be decoded: exit 1, twice (the second time its failure comes from the cache).
    await writeFile(join(folder, 'broken.jpg'), 'this is not a JPEG');
    for (const run of [1, 2]) {
      const b = p(folder);
      assert.equal(b.code, 1, `run ${run}: ${b.stderr}`);
      assert.match(b.stdout, /good\.png\n/);
      assert.match(b.stderr, /broken\.jpg: /);
      assert.match(b.stderr, /^graft: 1 input\(s\) missing or unreadable/m, `run ${run}: ${b.stderr}`);
    }

    // An empty image file in a folder cannot be read either (found by the folder walk, before any decoding).
    const other = join(dir, 'predict-empty');
    await mkdir(other, { recursive: true });
    await colourImage([30, 200, 30], 20, 20, 3).png().toFile(join(other, 'fine.png'));
    await writeFile(join(other, 'empty.png'), '');
    const e = p(other);
    assert.equal(e.code, 1, e.stderr);
    assert.match(e.stderr, /empty\.png: empty file/);
    assert.match(e.stdout, /fine\.png\n/);

    // --json: the whole JSON is printed (and parses), and the exit code still says something is missing.
    const j = p(folder, missing, '--json');
    assert.equal(j.code, 1, j.stderr);
    const res = JSON.parse(j.stdout) as { predictions: { path: string }[]; skipped: { path: string }[]; failed: number };
    assert.deepEqual(res.predictions.map((x) => x.path), [good]);
    assert.equal(res.failed, 2);
    assert.equal(res.skipped.length, 3, 'notes.txt, the missing file and broken.jpg are listed');

    const help = graft('predict', '--help');
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Exit codes: 0 when every image was classified; 1 when an input named on the command line is missing/);
  });
});

describe('file names with control characters in human output', () => {
  test('displayPath escapes control characters JSON-style and keeps other characters', () => {
    assert.equal(displayPath('/a/b c/chat-été-猫-🐱.jpg'), '/a/b c/chat-été-猫-🐱.jpg');
    assert.equal(displayPath('new\nline\ttab\rcr'), 'new\\nline\\ttab\\rcr');
    assert.equal(displayPath('esc\x1b[31mred\x7f\u0085\u2028.png'), 'esc\\u001b[31mred\\u007f\\u0085\\u2028.png');
    assert.equal(displayPath('\u0000'), '\\u0000');
  });

  test('predict, its skipped list and eval print a newline in a file name as \\n, on one line; --json keeps the name', async () => {
    const { model, labels } = await tinyModel('tiny-names.onnx');
    const folder = join(dir, 'names');
    await mkdir(folder, { recursive: true });
    const odd = join(folder, 'first\nsecond.png');
    await colourImage([30, 200, 30], 20, 20, 2).png().toFile(odd);
    const bad = join(folder, 'bad\nname.jpg');
    await writeFile(bad, 'not a JPEG');
    const r = graft('predict', model, folder, '--labels', labels, '--top', '1');
    assert.equal(r.code, 1, r.stderr); // bad\nname.jpg cannot be decoded
    const outLines = r.stdout.split('\n');
    assert.ok(outLines.includes(join(folder, 'first\\nsecond.png')), `the path on one line, escaped:\n${r.stdout}`);
    assert.ok(!outLines.some((l) => l.startsWith('second.png')), `no line starts with the name's second half:\n${r.stdout}`);
    const errLines = r.stderr.split('\n');
    assert.ok(errLines.some((l) => l.startsWith(`  ${join(folder, 'bad\\nname.jpg')}: `)), `skipped list, escaped:\n${r.stderr}`);
    assert.ok(!errLines.some((l) => l.startsWith('name.jpg')), `no line starts with the name's second half:\n${r.stderr}`);

    const j = graft('predict', model, odd, '--labels', labels, '--json');
    assert.equal(j.code, 0, j.stderr);
    assert.equal((JSON.parse(j.stdout) as { predictions: { path: string }[] }).predictions[0]!.path, odd, 'JSON holds the real name');

    // eval's "most confidently wrong": a red image filed under blue, its name with a newline.
    const train = join(dir, 'names-train');
    const val = join(dir, 'names-val');
    for (const [root, n] of [[train, 8], [val, 2]] as const) {
      for (const [cls, rgb] of [['red', [220, 30, 30]], ['blue', [30, 40, 220]]] as const) {
        await mkdir(join(root, cls), { recursive: true });
        for (let i = 0; i < n; i++) await colourImage([...rgb], 20, 20, i + 1).png().toFile(join(root, cls, `${cls}-${i}.png`));
      }
    }
    await colourImage([220, 30, 30], 20, 20, 7).png().toFile(join(val, 'blue', 'really\nred.png'));
    const run = join(dir, 'names-run');
    const t = graft('train', train, '--val', val, '--model', model, '--out', run, '-q');
    assert.equal(t.code, 0, t.stderr);
    const e = graft('eval', run, val, '-q');
    assert.equal(e.code, 0, e.stderr);
    const lines = e.stdout.split('\n');
    assert.ok(lines.some((l) => l.startsWith(`  ${join(val, 'blue', 'really\\nred.png')}: blue called red`)), `most confidently wrong, escaped:\n${e.stdout}`);
    assert.ok(!lines.some((l) => l.startsWith('red.png')), `no line starts with the name's second half:\n${e.stdout}`);
  });
});

describe('number options say exactly what they accept', () => {
  test('an open range is "a finite number >= x": Infinity is refused and not offered', () => {
    assert.equal(floatRange(0), 'a finite number >= 0');
    assert.equal(floatRange(0, 0.95), 'a number in [0, 0.95]');
    assert.equal(floatRange(-Infinity, 1), 'a finite number <= 1');
    assert.equal(floatRange(), 'a finite number');
    for (const v of ['Infinity', '-1', 'abc']) {
      const r = graft('train', 'data', '--model', 'm.onnx', '--out', 'o', '--lr', v);
      assert.equal(r.code, 2, `--lr ${v}: ${r.stderr}`);
      assert.match(r.stderr, /--lr must be a finite number >= 0\n/, `--lr ${v}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /Infinity\]/);
    }
    for (const [cmd, flag] of [['dream', '--tv'], ['dream', '--l2'], ['lr-find', '--max-lr'], ['pull', '--timeout'], ['train', '--clip-norm']] as const) {
      const r = graft(cmd, 'x', flag, 'Infinity');
      assert.equal(r.code, 2, `${cmd} ${flag}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`${flag} must be a finite number >= [\\d.e-]+\\n`), `${cmd} ${flag}: ${r.stderr}`);
    }
    const d = graft('train', 'data', '--dropout', '2');
    assert.match(d.stderr, /--dropout must be a number in \[0, 0\.95\]/);
  });
});

/** Start the CLI without waiting, collecting its output. */
function startGraft(...args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, GRAFT_HOME: join(dir, 'home') },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  return { child, exit, stdout: () => stdout, stderr: () => stderr };
}

/** Poll `probe` until true; fail (and kill the child) if the child exits first or time runs out. */
async function until(what: string, probe: () => Promise<boolean> | boolean, r: ReturnType<typeof startGraft>, ms = 120_000): Promise<void> {
  let exited = false;
  void r.exit.then(() => (exited = true));
  const t0 = performance.now();
  while (!(await probe())) {
    if (exited) assert.fail(`the command exited before ${what}; stderr:\n${r.stderr()}`);
    if (performance.now() - t0 > ms) {
      r.child.kill('SIGKILL');
      assert.fail(`timed out waiting for ${what}; stderr:\n${r.stderr()}`);
    }
    await new Promise((res) => setTimeout(res, 20));
  }
}

describe('Ctrl-C (SIGINT)', () => {
  test('graft train (frozen head, no checkpoints): "graft: interrupted" and exit 130, nothing written', async () => {
    const { model } = await tinyModel('tiny-sigint.onnx');
    const data = join(dir, 'sigint-data');
    for (const [cls, rgb] of [['red', [220, 30, 30]], ['blue', [30, 40, 220]]] as const) {
      await mkdir(join(data, cls), { recursive: true });
      for (let i = 0; i < 10; i++) await colourImage([...rgb], 20, 20, i + 1).png().toFile(join(data, cls, `${cls}-${i}.png`));
    }
    const out = join(dir, 'sigint-run');
    // Epochs and patience far beyond what finishes: the head trains until interrupted.
    const r = startGraft('train', data, '--model', model, '--out', out, '--epochs', '100000000', '--patience', '100000000');
    await until('the features to be extracted (head training starts next)', () => /^val features:/m.test(r.stderr()), r);
    await new Promise((res) => setTimeout(res, 300));
    r.child.kill('SIGINT');
    const { code, signal } = await r.exit;
    const err = r.stderr();
    assert.equal(code, 130, `exit code ${code} (signal ${signal}); stderr:\n${err}`);
    const lines = err.trimEnd().split('\n');
    assert.equal(lines.at(-1), 'graft: interrupted', `the last line:\n${err}`);
    assert.equal(lines.filter((l) => /interrupt/i.test(l)).length, 1, `said once:\n${err}`);
    assert.doesNotMatch(err, /^\s+at /m, 'no stack trace');
    assert.ok(!existsSync(join(out, 'config.json')), 'no run written');
  });

  test('graft extract on the shared photos: one line "graft: interrupted", exit 130, while ONNX Runtime workers run', { skip: SKIP_SHARED }, async () => {
    const cache = join(dir, 'sigint-cache');
    const r = startGraft('extract', MOBILENET, join(SHARED!, 'data', 'cats_vs_dogs', 'train'), '--cache-dir', cache);
    const anyEntry = async (d: string): Promise<boolean> => {
      const entries = await readdir(d, { withFileTypes: true, recursive: true }).catch(() => []);
      return entries.some((e) => e.isFile() && e.name.endsWith('.bin'));
    };
    // Entries in the cache: the extraction is under way (2000 photos: far from done).
    await until('the first cached features', () => anyEntry(cache), r);
    r.child.kill('SIGINT');
    const { code, signal } = await r.exit;
    // Exactly the line: no C++ abort from worker threads stopped mid-batch (that would be exit 134 and a
    // "terminate called ..." message), no stack trace, no other output.
    assert.equal(code, 130, `exit code ${code} (signal ${signal}); stderr:\n${r.stderr()}`);
    assert.equal(r.stderr(), 'graft: interrupted\n');
    assert.equal(r.stdout(), '');
  });
});
