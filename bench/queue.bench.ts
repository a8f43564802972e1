/**
 * `npm run bench:queue`: the worker pool against a local extract, in one run on this machine. Starts its own
 * redis-server on a free loopback port (Debian's), then measures over the Cats vs Dogs validation photos:
 *   - local `graft extract` (no cache), img/s;
 *   - `graft extract --queue` with 1 worker (2 ORT threads) and with 2 workers (1 thread each), img/s, each with a
 *     fresh feature cache and workers warmed up (model loaded) beforehand;
 *   - the per-shard overhead: the same 200 images in shards of 1 and of 64, one worker.
 * On one machine the queue cannot beat the local run (the same two cores do the work, plus queue round trips and
 * a final pass that reads the rows back from the cache); what it shows is the cost, which N machines then divide.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MOBILENET, SHARED } from '../test/helpers/shared.js';

if (!SHARED) {
  console.log('bench:queue needs ../shared (set GRAFT_SHARED)');
  process.exit(0);
}
const redisBin = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
if (!redisBin) {
  console.log('bench:queue needs redis-server (apt-get install redis-server)');
  process.exit(0);
}
const root = join(import.meta.dirname, '..');
const data = join(SHARED, 'data', 'cats_vs_dogs', 'validation');
const warm = join(SHARED, 'data', 'cats_vs_dogs', 'train', 'cats');
const dir = await mkdtemp(join(tmpdir(), 'graft-bench-queue-'));
const port = await new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = (s.address() as { port: number }).port;
    s.close(() => resolve(p));
  });
});
const url = `redis://127.0.0.1:${port}`;
const redis = spawn(redisBin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
for (let i = 0; i < 100 && spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() !== 'PONG'; i++) await new Promise((r) => setTimeout(r, 100));

const graft = (args: string[]) => ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), ...args];

function extract(args: string[], home: string): { n: number; seconds: number } {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, graft(['extract', MOBILENET, ...args, '--json', '--quiet']), { env: { ...process.env, GRAFT_HOME: home }, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(r.stderr);
  const res = JSON.parse(r.stdout);
  // Whole command, as a user waits for it (process start and model load included, for local and queue alike).
  return { n: res.n, seconds: (performance.now() - t0) / 1000 };
}

async function withWorkers<T>(count: number, threads: number, home: string, fn: () => T): Promise<T> {
  const ws: ChildProcess[] = [];
  for (let i = 0; i < count; i++) ws.push(spawn(process.execPath, graft(['worker', '--queue', url, '--threads', String(threads), '--quiet']), { env: { ...process.env, GRAFT_HOME: home }, stdio: 'ignore' }));
  try {
    // Warm-up on other photos: every worker loads the model before the timed run.
    extract([warm, '--queue', url, '--shard-size', '8'], home);
    return fn();
  } finally {
    for (const w of ws) w.kill('SIGKILL');
  }
}

const rate = (r: { n: number; seconds: number }) => r.n / r.seconds;
try {
  const local = extract([data, '--no-cache'], join(dir, 'local'));
  const one = await withWorkers(1, 2, join(dir, 'one'), () => extract([data, '--queue', url], join(dir, 'one')));
  const two = await withWorkers(2, 1, join(dir, 'two'), () => extract([data, '--queue', url], join(dir, 'two')));
  // Per-shard overhead: 200 images in shards of 1 vs 64, one worker.
  const small = join(dir, 'small');
  for (const cls of ['cats', 'dogs']) {
    await mkdir(join(small, cls), { recursive: true });
    for (const f of (await readdir(join(data, cls))).sort().slice(0, 100)) await symlink(join(data, cls, f), join(small, cls, f));
  }
  const s1 = await withWorkers(1, 2, join(dir, 's1'), () => extract([small, '--queue', url, '--shard-size', '1'], join(dir, 's1')));
  const s64 = await withWorkers(1, 2, join(dir, 's64'), () => extract([small, '--queue', url, '--shard-size', '64'], join(dir, 's64')));
  const perShard = ((s1.seconds - s64.seconds) / (200 - Math.ceil(200 / 64))) * 1000;
  console.log(`images: ${local.n} (Cats vs Dogs validation), MobileNet v1 0.75, whole commands incl. start-up`);
  console.log(`local extract (no cache)        ${rate(local).toFixed(1)} img/s  (${local.seconds.toFixed(1)} s)`);
  console.log(`queue, 1 worker x 2 threads     ${rate(one).toFixed(1)} img/s  (${one.seconds.toFixed(1)} s)  = ${(rate(one) / rate(local)).toFixed(2)}x local`);
  console.log(`queue, 2 workers x 1 thread     ${rate(two).toFixed(1)} img/s  (${two.seconds.toFixed(1)} s)  = ${(rate(two) / rate(local)).toFixed(2)}x local`);
  console.log(`per-shard overhead              ${perShard.toFixed(1)} ms  (200 images: shards of 1 ${s1.seconds.toFixed(1)} s, of 64 ${s64.seconds.toFixed(1)} s)`);
} finally {
  redis.kill('SIGTERM');
  await rm(dir, { recursive: true, force: true });
}
