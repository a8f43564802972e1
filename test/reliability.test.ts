/**
 * Reliability as a careful user meets it, on purpose and by accident: links that lead out of a class folder, a run
 * folder inside the data, write failures (file-size limit, full disk, --out a file, an unwritable cache), two
 * writers of one run folder, a folder tree thousands of levels deep. Tiny model and images built here.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { findImages, openDataset } from '../src/data/index.js';
import { runLockPath, withRunLock } from '../src/learn/run-folder.js';
import { colourImage, type Rgb } from './helpers/images.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';

const root = join(import.meta.dirname, '..');
let dir: string;
let model: string;

const RUN_PICTURES = ['confusion.png', 'training-curve.png', 'top-losses.png'];

function graftArgs(args: string[]): string[] {
  return ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), ...args];
}

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, GRAFT_HOME: join(dir, 'home'), ...extra };
}

function graft(args: string[], extra: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, graftArgs(args), { encoding: 'utf8', env: env(extra), timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** graft started by a shell, so that a limit (`ulimit -f`) or a private mount can be set first. */
function graftInShell(prefix: string, args: string[], extra: Record<string, string> = {}, launcher: string[] = ['bash', '-c']) {
  const quoted = [process.execPath, ...graftArgs(args)].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync(launcher[0]!, [...launcher.slice(1), `${prefix}; ${quoted}; echo "rc=$?"; ${extra.AFTER ?? ''}`], {
    encoding: 'utf8',
    env: env(extra),
    timeout: 120_000,
  });
  return { stdout: r.stdout, stderr: r.stderr, code: Number(/rc=(\d+)/.exec(r.stdout)?.[1] ?? -1), status: r.status };
}

async function writeClass(folder: string, rgb: Rgb, n: number, seed0 = 1): Promise<void> {
  await mkdir(folder, { recursive: true });
  for (let i = 0; i < n; i++) await colourImage(rgb, 24, 24, seed0 + i).png().toFile(join(folder, `img${i}.png`));
}

/** A two-class dataset (red "cats", blue "dogs"), `n` images each. */
async function dataset(name: string, n = 6): Promise<string> {
  const ds = join(dir, name);
  await writeClass(join(ds, 'cats'), [220, 40, 40], n);
  await writeClass(join(ds, 'dogs'), [40, 40, 220], n, 100);
  return ds;
}

function trainArgs(data: string, out: string, ...more: string[]): string[] {
  return ['train', data, '--model', model, '--out', out, '--epochs', '200', '--json', '--quiet', ...more];
}

/** What is beside a run folder: graft's staging folders and locks are hidden names starting with `.name.graft-`. */
async function leftovers(parent: string): Promise<string[]> {
  return (await readdir(parent)).filter((n) => n.includes('.graft-'));
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-reliability-'));
  model = join(dir, 'tiny.onnx');
  await writeFile(model, tinyClassifier({ size: 16, metadata: { 'Image.NominalPixelRange': 'Normalized_0_1', 'Image.BitmapPixelFormat': 'Rgb8' } }));
});
// rm -rf (fts, relative to each folder) removes the 2047-deep tree that fs.rm cannot (ENAMETOOLONG).
after(() => void spawnSync('rm', ['-rf', dir]));

describe('a dataset walk that cannot escape its class folder', () => {
  test('links up to the dataset, across to another class and onto itself: every file once, under its own class', async () => {
    const ds = await dataset('links', 5);
    await symlink('..', join(ds, 'cats', 'up')); // the issue's case: listed every dog as a cat
    await symlink('../dogs', join(ds, 'cats', 'across'));
    await symlink('.', join(ds, 'cats', 'self'));
    await symlink('img0.png', join(ds, 'cats', 'again.png')); // the same file twice
    await mkdir(join(ds, 'dogs', 'sub'));
    await symlink('../..', join(ds, 'dogs', 'sub', 'loop')); // a loop two levels down
    await symlink('../../cats/img1.png', join(ds, 'dogs', 'sub', 'stolen.png')); // a cat photo linked from dogs

    const d = await openDataset(ds);
    assert.deepEqual(d.classes, ['cats', 'dogs']);
    const count = (label: number) => d.items.filter((i) => i.label === label).length;
    assert.equal(count(0), 5, 'five cats');
    assert.equal(count(1), 5, 'five dogs');
    for (const it of d.items) assert.match(it.path, it.label === 0 ? /\/cats\/img\d\.png$/ : /\/dogs\/img\d\.png$/);
    const reason = (end: string) => d.skipped.find((s) => s.path.endsWith(end))?.reason ?? '';
    assert.match(reason('/cats/up'), /loop/);
    assert.match(reason('/cats/self'), /loop/);
    assert.match(reason('/dogs/sub/loop'), /loop/);
    assert.match(reason('/cats/across'), /class folder 'dogs'/);
    assert.match(reason('/dogs/sub/stolen.png'), /class folder 'cats'/);
    assert.match(reason('/cats/again.png'), /same file as .*img0\.png/);

    // And through the CLI: the labels are right, so the tiny model separates red from blue.
    const r = graft(trainArgs(ds, join(dir, 'links-run')));
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    assert.equal(res.counts.train + res.counts.val, 10);
    assert.equal(res.validation.accuracy, 1);
  });

  test('a link to a folder outside the dataset is followed; a folder linked from two classes counts once', async () => {
    const ds = await dataset('outside', 3);
    const extra = join(dir, 'extra-cats');
    await writeClass(extra, [200, 60, 60], 2, 50);
    await symlink(extra, join(ds, 'cats', 'more'));
    await symlink(extra, join(ds, 'dogs', 'wrong'));
    const d = await openDataset(ds);
    assert.equal(d.items.filter((i) => i.label === 0).length, 5);
    assert.equal(d.items.filter((i) => i.label === 1).length, 3);
    assert.equal(d.skipped.filter((s) => /same file as/.test(s.reason)).length, 2);
  });

  test('a tree 2047 folders deep is scanned in seconds; what lies past the path-length limit is reported', async () => {
    const deep = join(dir, 'deep');
    let p = deep;
    const found: string[] = [];
    for (let level = 1; level <= 2047; level++) {
      p = join(p, 'a');
      // Below ~4096 bytes the file is reachable; past it no program can open it by path.
      if (level % 500 === 0 && p.length < 3900) found.push(join(p, 'x.png'));
    }
    // mkdir -p cannot make such a path in one call: build it a step at a time from a working directory (in a child,
    // not to move this process's cwd; a bash loop of mkdir + cd spent 105 s in the kernel re-resolving the path).
    await mkdir(deep);
    const build = 'const fs = require("fs"); process.chdir(process.argv[1]); for (let i = 0; i < 2047; i++) { fs.mkdirSync("a"); process.chdir("a"); }';
    const made = spawnSync(process.execPath, ['-e', build, deep]);
    assert.equal(made.status, 0);
    found.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const png = await colourImage([1, 2, 3], 8, 8).png().toBuffer();
    for (const f of found) await writeFile(f, png);
    const t0 = performance.now();
    const res = await findImages(deep);
    const seconds = (performance.now() - t0) / 1000;
    // Was 89 s of system time (realpath of every level); 1.4 s now on the 2-core VM. Bound generous for slow CI.
    assert.ok(seconds < 30, `scan took ${seconds.toFixed(1)} s`);
    assert.deepEqual(res.files, found);
    assert.equal(res.skipped.length, 1);
    assert.match(res.skipped[0]!.reason, /ENAMETOOLONG/);
  });
});

describe('the run folder', () => {
  test('--out inside the data folder is refused before any work; a run left inside the data is not walked', async () => {
    const ds = await dataset('with-run', 4);
    const home = join(dir, 'home-refused');
    const inside = graft(trainArgs(ds, join(ds, 'run')), { GRAFT_HOME: home });
    assert.equal(inside.code, 2);
    assert.match(inside.stderr, /--out .*is inside the dataset folder/);
    assert.equal(existsSync(join(ds, 'run')), false);
    assert.equal(existsSync(home), false, 'refused before the model was opened or a feature cached');

    const holding = graft(trainArgs(join(ds, 'cats'), ds));
    assert.equal(holding.code, 2);
    assert.match(holding.stderr, /holds the dataset folder/);

    const val = await dataset('with-run-val', 2);
    const inVal = graft(trainArgs(ds, join(val, 'dogs', 'r'), '--val', val));
    assert.equal(inVal.code, 2);
    assert.match(inVal.stderr, /inside the --val folder/);

    // A run written elsewhere and then moved into the data (by hand) is passed over by the walk, and said so.
    const out = join(dir, 'moved-run');
    assert.equal(graft(trainArgs(ds, out)).code, 0);
    spawnSync('mv', [out, join(ds, 'cats', 'run')]);
    const d = await openDataset(ds);
    assert.equal(d.items.filter((i) => i.label === 0).length, 4, 'the run\'s PNGs are not cats');
    assert.match(d.skipped.find((s) => s.path.endsWith('/cats/run'))?.reason ?? '', /run folder written by graft/);
  });

  test('--out an existing file: a usage error at once, not after the extraction', async () => {
    const ds = await dataset('out-file', 3);
    const file = join(dir, 'notes.txt');
    await writeFile(file, 'notes\n');
    const home = join(dir, 'home-out-file');
    for (const out of [file, join(file, 'run')]) {
      const r = graft(trainArgs(ds, out), { GRAFT_HOME: home });
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /notes\.txt.* is (an existing |a )?file/);
    }
    const ex = graft(['extract', model, ds, '--out', file, '--quiet'], { GRAFT_HOME: home });
    assert.equal(ex.code, 2);
    assert.match(ex.stderr, /existing file/);
    assert.equal(existsSync(home), false, 'nothing extracted');
  });

  test('file-size limit (EFBIG) while writing the run: one clear line; the folder is the old run or none', async () => {
    const ds = await dataset('efbig', 4);
    const out = join(dir, 'efbig-out');
    // 8 KiB: the cached features (16 floats) fit, the run's JSON and PNGs do not.
    const r = graftInShell('ulimit -f 8', trainArgs(ds, out));
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^graft: cannot write .*efbig-out.*: file too large .*\(EFBIG\)$/m);
    assert.doesNotMatch(r.stderr, /unexpected error|    at /);
    assert.equal(existsSync(out), false, 'no half-written run folder');
    assert.deepEqual(await leftovers(dir), []);

    // Over an existing complete run: it stays as it was.
    assert.equal(graft(trainArgs(ds, out)).code, 0);
    const before = await readFile(join(out, 'config.json'), 'utf8');
    const again = graftInShell('ulimit -f 8', trainArgs(ds, out, '--seed', '7'));
    assert.equal(again.code, 1);
    assert.equal(await readFile(join(out, 'config.json'), 'utf8'), before);
    for (const f of RUN_PICTURES) assert.ok(existsSync(join(out, f)), f);
    assert.deepEqual(await leftovers(dir), []);
  });

  test('a full disk (ENOSPC, a 64 KiB tmpfs): one clear line and no run folder', async (t) => {
    const probe = spawnSync('unshare', ['-rm', 'sh', '-c', `mount -t tmpfs -o size=64k tmpfs '${dir}' && echo ok`], { encoding: 'utf8' });
    if (!/ok/.test(probe.stdout)) return t.skip('cannot mount a tmpfs in a private mount namespace here (unshare -rm)');
    const ds = await dataset('enospc', 4);
    const disk = join(dir, 'tiny-disk');
    await mkdir(disk);
    // The run folder goes to a tmpfs that the first PNGs fill; the listing after graft exits shows what it left.
    const r = graftInShell(`mount -t tmpfs -o size=64k tmpfs '${disk}' && head -c 40000 /dev/zero > '${disk}/filler'`, trainArgs(ds, join(disk, 'run')), { AFTER: `ls -A '${disk}'` }, ['unshare', '-rm', 'bash', '-c']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /^graft: cannot write .*: no space left on the device \(ENOSPC\)$/m);
    assert.doesNotMatch(r.stderr, /unexpected error|    at /);
    assert.deepEqual(r.stdout.trim().split('\n').slice(1), ['filler'], 'only the filler is left on the full disk');
  });

  test('an unwritable feature cache: a warning, and the run goes on without it', async () => {
    const ds = await dataset('nocache', 3);
    const blocker = join(dir, 'cache-is-a-file');
    await writeFile(blocker, 'x');
    const r = graft(['train', ds, '--model', model, '--out', join(dir, 'nocache-run'), '--epochs', '3', '--json'], { GRAFT_FEATURE_CACHE: join(blocker, 'features') });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr.match(/feature cache: cannot write/g)?.length, 1, r.stderr);
    assert.equal(JSON.parse(r.stdout).counts.train + JSON.parse(r.stdout).counts.val, 6);
  });

  test('a run folder moved elsewhere still loads: fine-tuned runs find their own model.onnx, frozen ones their backbone', async () => {
    const { writeTinyCnn, writeColourFolders } = await import('./helpers/tiny-cnn.js');
    const cnn = await writeTinyCnn(join(dir, 'tiny-cnn.onnx'));
    const data = await writeColourFolders(join(dir, 'moving-data'), { red: 6, blue: 6 });
    const ft = join(dir, 'ft-run');
    const r = graft(['train', data, '--model', cnn, '--out', ft, '--finetune', '1', '--epochs', '2', '--json', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(await readFile(join(ft, 'config.json'), 'utf8')).model.path, 'model.onnx', 'recorded relative to the run');
    const frozen = join(dir, 'frozen-run');
    assert.equal(graft(trainArgs(data, frozen)).code, 0);
    const elsewhere = join(dir, 'elsewhere');
    await mkdir(elsewhere);
    for (const run of [ft, frozen]) {
      const moved = join(elsewhere, `${run.split('/').pop()}-moved`);
      spawnSync('mv', [run, moved]);
      const p = graft(['predict', moved, join(data, 'red', 'red-0.jpg'), '--json', '--quiet']);
      assert.equal(p.code, 0, p.stderr);
      assert.equal(JSON.parse(p.stdout).predictions[0].top[0].label, 'red');
    }
  });

  test('--resume with hand-edited fine-tuning options: the file and the field are named, no stack trace', async () => {
    const run = join(dir, 'edited-run');
    await mkdir(run);
    await writeFile(join(run, 'finetune-options.json'), JSON.stringify({ data: join(dir, 'x'), model: model, blocks: 'two' }));
    const r = graft(['train', '--resume', run]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /finetune-options\.json: not a valid fine-tuning options file \(blocks: /);
    assert.doesNotMatch(r.stderr, /    at /);
  });

  test('one writer per run folder: a second graft on a held folder is refused; a dead holder\'s lock is taken over', async () => {
    const ds = await dataset('lock', 4);
    const out = join(dir, 'locked');
    await withRunLock(out, async () => {
      const r = graft(trainArgs(ds, out));
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`run folder .*locked is being written by another graft process \\(pid ${process.pid} `));
    });
    assert.equal(existsSync(out), false);

    // A lock left by a process that was killed (its pid no longer runs) does not block the next run.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    await writeFile(runLockPath(out), JSON.stringify({ pid: Number(dead.stdout), host: (await import('node:os')).hostname(), token: 'old', since: new Date().toISOString() }));
    const r = graft(trainArgs(ds, out));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(existsSync(runLockPath(out)), false, 'lock removed after the run');
  });

  test('two trains started together on one --out: one writes the run, the other is refused or follows it; never a mix', async () => {
    const ds = await dataset('race', 6);
    const out = join(dir, 'race-out');
    const start = (seed: string) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const p = spawn(process.execPath, graftArgs(trainArgs(ds, out, '--seed', seed)), { env: env() });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (b) => (stdout += b));
        p.stderr.on('data', (b) => (stderr += b));
        p.on('close', (code) => resolve({ code, stdout, stderr }));
      });
    const results = await Promise.all([start('1'), start('2')]);
    const ok = results.filter((r) => r.code === 0);
    assert.ok(ok.length >= 1, results.map((r) => r.stderr).join('\n'));
    for (const r of results.filter((x) => x.code !== 0)) assert.match(r.stderr, /is being written by another graft process/);
    // The folder is one whole run: metrics.json and config.json come from the same process, one that succeeded.
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    const metrics = JSON.parse(await readFile(join(out, 'metrics.json'), 'utf8'));
    const same = results
      .map((r, i) => ({ r, seed: i + 1 }))
      .filter(({ r }) => r.code === 0 && JSON.parse(r.stdout).validation.logLoss === metrics.validation.logLoss);
    assert.ok(same.some(({ seed }) => seed === config.data.splitSeed), 'config and metrics of one successful run');
    for (const f of RUN_PICTURES) assert.ok(existsSync(join(out, f)), f);
    assert.deepEqual(await leftovers(dir), []);
  });
});
