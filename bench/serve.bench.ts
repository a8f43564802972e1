/**
 * Load on `graft serve` (issue 12): 64 concurrent clients (autocannon, loopback) post the 1000 Cats vs Dogs
 * validation JPEGs to /api/predict for 30 s; errors, p50/p99 latency and images/s, against `graft extract`'s
 * end-to-end img/s over the same photos measured in the same run (target: serve >= 0.8x extract).
 *   npm run bench:serve          (GRAFT_BENCH_SECONDS=30, GRAFT_BENCH_CONNECTIONS=64)
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import autocannon from 'autocannon';
import { openDataset } from '../src/data/index.js';
import { Backbone } from '../src/engine/backbone.js';

const shared = resolve(process.env.GRAFT_SHARED ?? join(import.meta.dirname, '..', '..', 'shared'));
const model = join(shared, 'models', 'mobilenet_v1_0.75_224.onnx');
const seconds = Number(process.env.GRAFT_BENCH_SECONDS ?? 30);
const connections = Number(process.env.GRAFT_BENCH_CONNECTIONS ?? 64);
const paths = (await openDataset(join(shared, 'data', 'cats_vs_dogs', 'validation'))).items.map((i) => i.path);
const bodies = await Promise.all(paths.map((p) => readFile(p)));

// 1. graft extract's pipeline (decode + preprocess + forward, no cache), the same photos, this machine, now.
const bb = await Backbone.load(model, { threads: availableParallelism() });
await bb.features(paths.slice(0, 64), { batchSize: 32 }); // warm the sessions
let t = performance.now();
await bb.features(paths, { batchSize: 32 });
const extractIps = paths.length / ((performance.now() - t) / 1000);
await bb.dispose();

// 2. The server in its own process, under load from this one.
const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'serve-child.ts'), shared], { stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise<string>((res, rej) => {
  child.stdout!.once('data', (d: Buffer) => res(d.toString().trim()));
  child.once('exit', (c) => rej(new Error(`server exited with ${c}`)));
});
const path = `/api/predict?model=${encodeURIComponent(model)}&top=1`;
try {
  // Warm: load the model, start the sessions.
  for (let i = 0; i < 4; i++) await fetch(url + path, { method: 'POST', body: bodies[i] });
  let next = 0;
  let wrong = 0;
  t = performance.now();
  const result = await autocannon({
    url,
    connections,
    duration: seconds,
    timeout: 30,
    requests: [
      {
        method: 'POST',
        path,
        setupRequest: (req: Record<string, unknown>) => ({ ...req, body: bodies[next++ % bodies.length], headers: { 'content-type': 'image/jpeg' } }),
        onResponse: (status: number, body: string) => {
          if (status !== 200 || !body.startsWith('{"predictions":[{"label"')) wrong++;
        },
      },
    ],
  });
  const wall = (performance.now() - t) / 1000;
  const ok = result['2xx'];
  const serveIps = ok / result.duration;
  const rows: [string, string][] = [
    ['machine', `${availableParallelism()} cores (${process.platform}), node ${process.version}`],
    ['graft extract (same photos, no cache)', `${extractIps.toFixed(1)} img/s`],
    [`POST /api/predict, ${connections} clients, ${result.duration.toFixed(0)} s`, `${serveIps.toFixed(1)} img/s (${ok} answered in ${wall.toFixed(1)} s)`],
    ['errors / non-2xx / timeouts / bad bodies', `${result.errors} / ${result.non2xx} / ${result.timeouts} / ${wrong}`],
    ['latency p50 / p90 / p99 / max', `${result.latency.p50} / ${result.latency.p90} / ${result.latency.p99} / ${result.latency.max} ms`],
    ['ratio serve / extract', `${(serveIps / extractIps).toFixed(3)} (target >= 0.8)`],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
  if (result.errors || result.non2xx || result.timeouts || wrong) process.exitCode = 1;
} finally {
  child.kill('SIGTERM');
}
