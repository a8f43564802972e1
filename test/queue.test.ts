/**
 * The worker pool for real: Debian's redis-server started here on a free loopback port, three `graft worker`
 * processes and a coordinator (`graft extract --queue`) over ../shared Cats vs Dogs. What it writes must be the
 * bytes a local `graft extract` writes, through a worker killed with -9, Redis restarted, a poison image and a
 * coordinator killed and run again.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MOBILENET, SHARED } from './helpers/shared.js';

const root = join(import.meta.dirname, '..');
const redisBin = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
const cvd = SHARED ? join(SHARED, 'data', 'cats_vs_dogs', 'validation') : undefined;
const model = MOBILENET || undefined;
const skip = !redisBin ? 'redis-server is not installed (.ci/run installs it)' : !cvd || !model ? 'needs ../shared (Cats vs Dogs, MobileNet)' : false;

let dir: string;
let port: number;
let redis: ChildProcess | undefined;
const workers: ChildProcess[] = [];

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

/** redis-server on `port`, persisting to an append-only file so that a restart keeps the queue. */
async function startRedis(): Promise<void> {
  redis = spawn(redisBin, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', ''], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    if (spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG') return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('redis-server did not start');
}

async function stopRedis(): Promise<void> {
  if (!redis || redis.exitCode !== null) return;
  const gone = new Promise((r) => redis!.once('exit', r));
  redis.kill('SIGTERM');
  await gone;
}

const url = () => `redis://127.0.0.1:${port}`;

function graftArgs(args: string[]): string[] {
  return ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), ...args];
}

interface Proc { proc: ChildProcess; stdout: string; stderr: string; done: Promise<number | null> }

function run(args: string[], env: Record<string, string>): Proc {
  const proc = spawn(process.execPath, graftArgs(args), { env: { ...process.env, ...env } });
  const p: Proc = { proc, stdout: '', stderr: '', done: Promise.resolve(null) };
  proc.stdout!.on('data', (b) => (p.stdout += b));
  proc.stderr!.on('data', (b) => (p.stderr += b));
  p.done = new Promise((resolve) => proc.on('close', (code) => resolve(code)));
  return p;
}

/** A worker on the shared cache of `home`, one ORT thread (three share two cores), shards stall after 3 s. */
function startWorker(home: string, extraEnv: Record<string, string> = {}): Proc {
  const w = run(['worker', '--queue', url(), '--threads', '1', '--lock-seconds', '3'], { GRAFT_HOME: home, ...extraEnv });
  workers.push(w.proc);
  return w;
}

async function stopWorkers(ws: Proc[]): Promise<void> {
  for (const w of ws) if (w.proc.exitCode === null) w.proc.kill('SIGKILL');
  await Promise.all(ws.map((w) => w.done));
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A class-per-folder subset of the validation photos (links), `n` per class. */
async function subset(name: string, n: number): Promise<string> {
  const ds = join(dir, name);
  for (const cls of ['cats', 'dogs']) {
    await mkdir(join(ds, cls), { recursive: true });
    const files = (await readdir(join(cvd!, cls))).sort().slice(0, n);
    for (const f of files) await symlink(join(cvd!, cls, f), join(ds, cls, f));
  }
  return ds;
}

const local = new Map<string, { npy: Buffer; index: Record<string, unknown> }>();

/** `graft extract` on this machine without a cache: the reference every queue run is compared with. */
async function localExtract(ds: string): Promise<{ npy: Buffer; index: Record<string, unknown> }> {
  const hit = local.get(ds);
  if (hit) return hit;
  const out = join(dir, `local-${local.size}`);
  const r = spawnSync(process.execPath, graftArgs(['extract', model!, ds, '--out', out, '--no-cache', '--quiet']), { env: { ...process.env, GRAFT_HOME: join(dir, 'home-local') }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const res = { npy: await readFile(join(out, 'features.npy')), index: JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) };
  local.set(ds, res);
  return res;
}

async function written(out: string) {
  return { npy: await readFile(join(out, 'features.npy')), index: JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) };
}

function coordinator(ds: string, out: string, home: string, ...more: string[]): Proc {
  return run(['extract', model!, ds, '--out', out, '--queue', url(), '--shard-size', '20', '--json', ...more], { GRAFT_HOME: home });
}

/** Shard lines the workers logged: how many rows each computed (to find work done twice). */
function computedByWorkers(ws: Proc[]): number {
  return ws.reduce((sum, w) => sum + [...w.stderr.matchAll(/\((\d+) computed,/g)].reduce((a, m) => a + Number(m[1]), 0), 0);
}

before(async () => {
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), 'graft-queue-'));
  port = await freePort();
  await startRedis();
});

after(async () => {
  for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
  await stopRedis();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('extraction over a Redis/BullMQ worker pool', { skip }, () => {
  test('3 workers over the Cats vs Dogs validation photos: the same bytes, order and skipped list as a local extract; predict --out too', async () => {
    const home = join(dir, 'home-main');
    const ws = [startWorker(home), startWorker(home), startWorker(home)];
    try {
      const out = join(dir, 'queue-main');
      const c = coordinator(cvd!, out, home, '--shard-size', '50');
      assert.equal(await c.done, 0, c.stderr);
      const res = JSON.parse(c.stdout);
      assert.equal(res.n, 1000);
      assert.equal(res.computed, 0, 'every row came from the workers, through the cache');
      assert.equal(res.queue.shards, 20);
      assert.ok(res.queue.workers.length >= 2, `shards spread over workers: ${res.queue.workers}`);
      const ref = await localExtract(cvd!);
      const got = await written(out);
      assert.ok(got.npy.equals(ref.npy), 'features.npy bit-identical to a local graft extract');
      assert.deepEqual(got.index, ref.index);

      // Batch prediction on the pool: the same lines as on this machine.
      const preds = join(dir, 'preds-queue.jsonl');
      const p = run(['predict', model!, join(cvd!, 'cats'), '--queue', url(), '--out', preds, '--quiet', '--top', '3'], { GRAFT_HOME: home });
      assert.equal(await p.done, 0, p.stderr);
      const localPreds = join(dir, 'preds-local.jsonl');
      const lp = spawnSync(process.execPath, graftArgs(['predict', model!, join(cvd!, 'cats'), '--out', localPreds, '--quiet', '--top', '3', '--no-cache']), { encoding: 'utf8' });
      assert.equal(lp.status, 0, lp.stderr);
      const lines = (await readFile(preds, 'utf8')).trim().split('\n');
      assert.equal(lines.length, 500);
      assert.equal(await readFile(preds, 'utf8'), await readFile(localPreds, 'utf8'));
    } finally {
      await stopWorkers(ws);
    }
  });

  test('a worker killed with -9 mid-shard: its shard is retried elsewhere, nothing lost or duplicated in the output', async () => {
    const ds = await subset('kill9', 100);
    const home = join(dir, 'home-kill9');
    const ws = [startWorker(home), startWorker(home), startWorker(home)];
    try {
      const out = join(dir, 'queue-kill9');
      const c = coordinator(ds, out, home);
      // Kill the first worker as soon as it has finished one shard: it is then inside its next one.
      await waitFor(() => /shard \S+: \d+ images/.test(ws[0]!.stderr), 120_000, 'a first shard');
      ws[0]!.proc.kill('SIGKILL');
      assert.equal(await c.done, 0, c.stderr);
      const got = await written(out);
      const ref = await localExtract(ds);
      assert.ok(got.npy.equals(ref.npy));
      assert.deepEqual(got.index, ref.index);
    } finally {
      await stopWorkers(ws);
    }
  });

  test('Redis restarted mid-run: workers and coordinator reconnect and finish', async () => {
    const ds = await subset('restart', 100);
    const home = join(dir, 'home-restart');
    const ws = [startWorker(home), startWorker(home)];
    try {
      const out = join(dir, 'queue-restart');
      const c = coordinator(ds, out, home);
      await waitFor(() => ws.some((w) => /shard \S+: \d+ images/.test(w.stderr)), 120_000, 'a first shard');
      await stopRedis();
      await new Promise((r) => setTimeout(r, 1500));
      await startRedis();
      assert.equal(await c.done, 0, c.stderr);
      assert.match(c.stderr + ws.map((w) => w.stderr).join(''), /reconnecting/);
      const got = await written(out);
      const ref = await localExtract(ds);
      assert.ok(got.npy.equals(ref.npy));
      assert.deepEqual(got.index, ref.index);
    } finally {
      await stopWorkers(ws);
    }
  });

  test('a poison image (every worker fails on it) is skipped once, and the rest is complete', async () => {
    const ds = await subset('poison', 50);
    const poison = (await readdir(join(ds, 'dogs'))).sort()[7]!;
    const home = join(dir, 'home-poison');
    const ws = [0, 1, 2].map(() => startWorker(home, { GRAFT_WORKER_FAULT: `fail-on:${poison}` }));
    try {
      const out = join(dir, 'queue-poison');
      const c = coordinator(ds, out, home);
      assert.equal(await c.done, 0, c.stderr);
      const res = JSON.parse(c.stdout);
      assert.equal(res.n, 99);
      assert.deepEqual(res.queue.poison, [join(ds, 'dogs', poison)]);
      const got = await written(out);
      const hits = (got.index.skipped as { path: string; reason: string }[]).filter((s) => s.path.endsWith(poison));
      assert.equal(hits.length, 1);
      assert.match(hits[0]!.reason, /failed on every worker/);
      // The 99 other rows are the local ones, in order.
      const ref = await localExtract(ds);
      const files = ref.index.files as string[];
      const drop = files.indexOf(join(ds, 'dogs', poison));
      const rowBytes = 768 * 4;
      const header = ref.npy.length - files.length * rowBytes;
      const expected = Buffer.concat([ref.npy.subarray(header, header + drop * rowBytes), ref.npy.subarray(header + (drop + 1) * rowBytes)]);
      assert.ok(got.npy.subarray(got.npy.length - 99 * rowBytes).equals(expected));
      assert.deepEqual(got.index.files, files.filter((f) => !f.endsWith(poison)));
    } finally {
      await stopWorkers(ws);
    }
  });

  test('the coordinator killed and run again with the same arguments: finished shards are not redone', async () => {
    const ds = await subset('again', 150);
    const home = join(dir, 'home-again');
    const ws = [startWorker(home), startWorker(home)];
    try {
      const out = join(dir, 'queue-again');
      const first = coordinator(ds, out, home);
      await waitFor(() => ws.some((w) => (w.stderr.match(/shard \S+: \d+ images/g) ?? []).length >= 3), 120_000, 'three shards');
      first.proc.kill('SIGKILL');
      await first.done;
      const second = coordinator(ds, out, home);
      assert.equal(await second.done, 0, second.stderr);
      const res = JSON.parse(second.stdout);
      assert.ok(res.queue.reused >= 3, `shards found done: ${res.queue.reused}`);
      assert.equal(res.computed, 0);
      // Every image computed exactly once over both coordinator runs (shards run by the workers, none twice).
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(computedByWorkers(ws), 300);
      const got = await written(out);
      const ref = await localExtract(ds);
      assert.ok(got.npy.equals(ref.npy));
      assert.deepEqual(got.index, ref.index);
    } finally {
      await stopWorkers(ws);
    }
  });

  test('graft train --queue: the extraction step on the pool gives the same run as a local train', async () => {
    const ds = await subset('train', 40);
    const home = join(dir, 'home-train');
    const ws = [startWorker(home), startWorker(home)];
    try {
      const q = run(['train', ds, '--model', model!, '--out', join(dir, 'run-queue'), '--queue', url(), '--shard-size', '16', '--json', '--quiet'], { GRAFT_HOME: home });
      assert.equal(await q.done, 0, q.stderr);
      const l = spawnSync(process.execPath, graftArgs(['train', ds, '--model', model!, '--out', join(dir, 'run-local'), '--no-cache', '--json', '--quiet']), { encoding: 'utf8' });
      assert.equal(l.status, 0, l.stderr);
      const [a, b] = [JSON.parse(q.stdout), JSON.parse(l.stdout)];
      assert.deepEqual(a.counts, { train: 64, val: 16 });
      assert.deepEqual(a.validation, b.validation, 'same features, same seed: the same head and metrics');
      assert.equal(a.bestEpoch, b.bestEpoch);
    } finally {
      await stopWorkers(ws);
    }
  });

  test('bad queue URLs and --queue without the cache are usage errors; an unreachable Redis is an error, not a hang', async () => {
    const bad = spawnSync(process.execPath, graftArgs(['worker', '--queue', 'http://x']), { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /expected a redis:\/\/ or rediss:\/\/ URL/);
    const noCache = spawnSync(process.execPath, graftArgs(['extract', model!, join(cvd!, 'cats'), '--queue', url(), '--no-cache']), { encoding: 'utf8', env: { ...process.env, GRAFT_HOME: join(dir, 'home-nocache') } });
    assert.equal(noCache.status, 2);
    assert.match(noCache.stderr, /--queue needs the feature cache/);
    // Nothing listening there: an error after the connect timeout, not a wait for ever.
    const closed = await freePort();
    const none = spawnSync(process.execPath, graftArgs(['extract', model!, join(cvd!, 'cats'), '--queue', `redis://127.0.0.1:${closed}`, '--quiet']), { encoding: 'utf8', env: { ...process.env, GRAFT_HOME: join(dir, 'home-closed') }, timeout: 60_000 });
    assert.equal(none.status, 1, none.stderr);
    assert.match(none.stderr, /cannot reach the queue at redis:\/\/127\.0\.0\.1:\d+ \(no answer in 10 s\)/);
  });
});
