/**
 * The model store and downloader against a local HTTP server on 127.0.0.1 that injects faults: a connection dropped
 * mid-file (resumed with Range), 404, 500 then success, a wrong checksum, a slow response, an oversized file, two
 * processes pulling at once, trust on first use, and hostile model files (TF.js shard paths leaving the folder,
 * missing/short/long shards, garbage, ONNX external data leaving the folder).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import onnxProto from 'onnx-proto';
import { defaultSpec } from '../src/image/spec.js';
import type { CatalogEntry, CatalogFile, ModelFormat } from '../src/models/catalog.js';
import { resolveModel } from '../src/models/resolve.js';
import { checkTfjsFolder } from '../src/models/store-checks.js';
import { modelSourcePath } from '../src/models/model-source.js';
import { ModelStore, registerImporter, unregisterImporter } from '../src/models/store.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';

const { onnx } = onnxProto;
const root = join(import.meta.dirname, '..');
const tiny = Buffer.from(tinyClassifier());
const tinySha = createHash('sha256').update(tiny).digest('hex');
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
const routes = new Map<string, Handler>();
/** Files served as-is (with Range support) by path. */
const files = new Map<string, Buffer>();
const requests: { url: string; range?: string }[] = [];
const pending = new Set<ServerResponse>();
let server: Server;
let base: string;
let tmp: string;

function serveFile(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (m && Number(m[1]) < body.length) {
    const start = Number(m[1]);
    res.writeHead(206, { 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    res.end(body.subarray(start));
  } else {
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  }
}

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'graft-store-'));
  server = createServer((req, res) => {
    const url = req.url ?? '';
    requests.push({ url, range: req.headers.range });
    pending.add(res);
    res.on('close', () => pending.delete(res));
    const h = routes.get(url);
    if (h) return h(req, res);
    const f = files.get(url);
    if (f) return serveFile(req, res, f);
    res.writeHead(404);
    res.end('not found');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
});

after(async () => {
  for (const res of pending) res.destroy();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await rm(tmp, { recursive: true, force: true });
});

function entry(name: string, fileList: CatalogFile[], format: ModelFormat = 'onnx'): CatalogEntry {
  return {
    name,
    family: 'test',
    description: 'test entry',
    format,
    files: fileList,
    homepage: 'http://127.0.0.1/',
    license: 'test',
    preprocess: defaultSpec(),
    labels: 'none',
  };
}

let storeN = 0;
async function freshStore(): Promise<ModelStore> {
  return new ModelStore(join(tmp, `store-${storeN++}`));
}

const fast = { backoffMs: 5, timeoutMs: 3000, retries: 3, mirror: null };
const hits = (prefix: string) => requests.filter((r) => r.url.startsWith(prefix));

describe('downloads', () => {
  test('a connection dropped mid-file is resumed with a Range request; the file is complete and verified', async () => {
    const half = Math.floor(tiny.length / 2);
    routes.set('/drop/model.onnx', (req, res) => {
      if (!req.headers.range) {
        res.writeHead(200, { 'content-length': tiny.length, etag: '"v1"' });
        res.write(tiny.subarray(0, half), () => setTimeout(() => res.destroy(), 200));
        return;
      }
      serveFile(req, res, tiny);
    });
    const store = await freshStore();
    const e = entry('t_drop', [{ name: 'model.onnx', urls: [`${base}/drop/model.onnx`], size: tiny.length, sha256: tinySha }]);
    const got = await store.pull(e, fast);
    const reqs = hits('/drop/');
    // Normally 2 requests; on a loaded machine the client may lose the first bytes with the connection (a stream
    // error drops what was not read yet), and then starts again once before resuming.
    assert.ok(reqs.length >= 2, `requests: ${reqs.length}`);
    assert.ok(reqs.slice(0, -1).every((r) => r.range === undefined), 'plain requests until bytes were kept');
    assert.equal(reqs.at(-1)!.range, `bytes=${half}-`);
    assert.deepEqual(await readFile(got.main), tiny);
    assert.equal(got.files[0]!.checksum, 'catalog');
    assert.equal(got.files[0]!.sha256, tinySha);
  });

  test('a partial file left by a failed pull is resumed by the next pull', async () => {
    const third = Math.floor(tiny.length / 3);
    routes.set('/drop2/model.onnx', (req, res) => {
      if (!req.headers.range) {
        res.writeHead(200, { 'content-length': tiny.length });
        res.write(tiny.subarray(0, third), () => setTimeout(() => res.destroy(), 200));
        return;
      }
      serveFile(req, res, tiny);
    });
    const store = await freshStore();
    const e = entry('t_drop2', [{ name: 'model.onnx', urls: [`${base}/drop2/model.onnx`], sha256: tinySha }]);
    await assert.rejects(store.pull(e, { ...fast, retries: 0 }), /download failed: t_drop2\/model\.onnx .*(connection lost|got \d+ of)/);
    assert.equal(await store.cached('t_drop2'), undefined);
    const got = await store.pull(e, { ...fast, retries: 2 });
    assert.equal(hits('/drop2/').at(-1)!.range, `bytes=${third}-`);
    assert.deepEqual(await readFile(got.main), tiny);
  });

  test('404 is a clear error naming the file and the URL', async () => {
    const store = await freshStore();
    const e = entry('t404', [{ name: 'model.onnx', urls: [`${base}/nothing-here/model.onnx`] }]);
    await assert.rejects(store.pull(e, fast), /download failed: t404\/model\.onnx \(http:\/\/127\.0\.0\.1:\d+\/nothing-here\/model\.onnx\): HTTP 404/);
    assert.equal(hits('/nothing-here/').length, 1, '404 is not retried');
  });

  test('500 then success: retried with backoff', async () => {
    let n = 0;
    routes.set('/flaky/model.onnx', (req, res) => {
      if (n++ === 0) {
        res.writeHead(500, 'Internal Server Error');
        res.end('oops');
      } else serveFile(req, res, tiny);
    });
    const store = await freshStore();
    const logs: string[] = [];
    const got = await store.pull(entry('t_flaky', [{ name: 'model.onnx', urls: [`${base}/flaky/model.onnx`], sha256: tinySha }]), {
      ...fast,
      log: (m) => logs.push(m),
    });
    assert.equal(hits('/flaky/').length, 2);
    assert.deepEqual(await readFile(got.main), tiny);
    assert.ok(logs.some((l) => /HTTP 500.*retrying/.test(l)), `a retry is logged: ${logs.join(' | ')}`);
  });

  test('500 every time: gives up after the retries', async () => {
    routes.set('/down/model.onnx', (_req, res) => {
      res.writeHead(503);
      res.end();
    });
    const store = await freshStore();
    await assert.rejects(
      store.pull(entry('t_down', [{ name: 'model.onnx', urls: [`${base}/down/model.onnx`] }]), { ...fast, retries: 2 }),
      /HTTP 503.*gave up after 3 attempts/,
    );
    assert.equal(hits('/down/').length, 3);
  });

  test('a wrong checksum deletes the file and says so', async () => {
    files.set('/bad/model.onnx', tiny);
    const store = await freshStore();
    const e = entry('t_badsum', [{ name: 'model.onnx', urls: [`${base}/bad/model.onnx`], sha256: 'ab'.repeat(32) }]);
    await assert.rejects(store.pull(e, fast), new RegExp(`checksum mismatch for t_badsum/model\\.onnx .*expected sha256 ${'ab'.repeat(32)}, got ${tinySha}; the downloaded file was deleted`));
    assert.equal(await store.cached('t_badsum'), undefined);
    const left = await readdir(store.tmp);
    assert.deepEqual(left.filter((f) => f.startsWith('dl-')), [], `no downloaded file left: ${left.join(', ')}`);
    assert.deepEqual(await readdir(store.blobs).catch(() => []), []);
  });

  test('a slow response times out (short timeout option)', async () => {
    routes.set('/slow/model.onnx', (_req, res) => {
      res.writeHead(200, { 'content-length': tiny.length });
      res.write(tiny.subarray(0, 10)); // then nothing
    });
    routes.set('/slow-headers/model.onnx', () => {
      /* never answers */
    });
    const store = await freshStore();
    const t0 = Date.now();
    await assert.rejects(
      store.pull(entry('t_slow', [{ name: 'model.onnx', urls: [`${base}/slow/model.onnx`] }]), { ...fast, timeoutMs: 300, retries: 0 }),
      /t_slow\/model\.onnx .*timed out \(no data for 300 ms\)/,
    );
    await assert.rejects(
      store.pull(entry('t_slow2', [{ name: 'model.onnx', urls: [`${base}/slow-headers/model.onnx`] }]), { ...fast, timeoutMs: 300, retries: 1 }),
      /timed out \(no data for 300 ms\).*gave up after 2 attempts/,
    );
    assert.ok(Date.now() - t0 < 5000, 'timeouts are prompt');
  });

  test('a file over the size cap is refused (announced or streamed)', async () => {
    const big = Buffer.alloc(5000, 7);
    files.set('/big/model.onnx', big);
    routes.set('/big-chunked/model.onnx', (_req, res) => {
      res.writeHead(200); // no content-length: chunked
      res.write(big.subarray(0, 2500));
      res.end(big.subarray(2500));
    });
    const store = await freshStore();
    await assert.rejects(
      store.pull(entry('t_big', [{ name: 'model.onnx', urls: [`${base}/big/model.onnx`] }]), { ...fast, maxBytes: 1000 }),
      /download refused: t_big\/model\.onnx .*5000 bytes is over the size cap of 1000 bytes/,
    );
    await assert.rejects(
      store.pull(entry('t_big2', [{ name: 'model.onnx', urls: [`${base}/big-chunked/model.onnx`] }]), { ...fast, maxBytes: 1000 }),
      /download refused: t_big2\/model\.onnx .*more than the size cap of 1000 bytes/,
    );
    await assert.rejects(
      store.pull(entry('t_big3', [{ name: 'model.onnx', urls: [`${base}/big/model.onnx`], size: 5000 }]), { ...fast, maxBytes: 1000 }),
      /size cap/,
    );
    assert.equal(hits('/big/').length, 1, 'a catalog size over the cap is refused before any request');
  });

  test('a file of the wrong size (catalog size known) is refused before it is kept', async () => {
    files.set('/size/model.onnx', tiny);
    const store = await freshStore();
    await assert.rejects(
      store.pull(entry('t_size', [{ name: 'model.onnx', urls: [`${base}/size/model.onnx`], size: tiny.length + 1 }]), fast),
      new RegExp(`size mismatch for t_size/model\\.onnx .*${tiny.length} bytes, expected ${tiny.length + 1}`),
    );
  });

  test('the second address is tried when the first fails', async () => {
    files.set('/second/model.onnx', tiny);
    const store = await freshStore();
    const got = await store.pull(
      entry('t_second', [{ name: 'model.onnx', urls: [`${base}/first-missing/model.onnx`, `${base}/second/model.onnx`], sha256: tinySha }]),
      fast,
    );
    assert.deepEqual(await readFile(got.main), tiny);
  });
});

describe('store', () => {
  test('content-addressed, atomic, listed, removed', async () => {
    files.set('/ok/model.onnx', tiny);
    const store = await freshStore();
    const e = entry('t_ok', [{ name: 'model.onnx', urls: [`${base}/ok/model.onnx`], sha256: tinySha }]);
    const got = await store.pull(e, fast);
    assert.equal(got.downloaded, true);
    assert.deepEqual(await readdir(store.blobs), [tinySha]);
    assert.deepEqual(await readFile(join(store.blobs, tinySha)), tiny);
    // The catalog's preprocessing travels as a sidecar beside the ONNX file.
    const sidecar = JSON.parse(await readFile(`${got.main}.json`, 'utf8'));
    assert.deepEqual(sidecar.preprocess, defaultSpec());
    const special = { ...entry('t_side', [{ name: 'model.onnx', urls: [`${base}/ok/model.onnx`] }]), classifierNode: 'logits' };
    special.preprocess = defaultSpec({ size: [8, 8], mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] });
    const ref = await resolveModel((await store.pull(special, fast)).main);
    assert.match(ref.specSource, /sidecar config/);
    assert.deepEqual(ref.spec.mean, [0.5, 0.5, 0.5]);
    assert.deepEqual(ref.spec.size, [8, 8]);
    assert.equal(ref.logitsTensor, 'logits');
    await store.remove('t_side');
    const before = hits('/ok/').length;
    const again = await store.pull(e, fast);
    assert.equal(again.downloaded, false);
    assert.equal(hits('/ok/').length, before, 'served from the store');
    const listed = await store.list();
    assert.deepEqual(listed.map((l) => l.name), ['t_ok']);
    // A second entry with the same bytes shares the blob.
    files.set('/ok2/model.onnx', tiny);
    await store.pull(entry('t_ok2', [{ name: 'model.onnx', urls: [`${base}/ok2/model.onnx`] }]), fast);
    assert.deepEqual(await readdir(store.blobs), [tinySha]);
    // Nothing half-done is left behind.
    assert.deepEqual((await readdir(store.tmp)).filter((f) => !f.endsWith('.lock')), []);
    const r1 = await store.remove('t_ok');
    assert.equal(r1.removed, true);
    assert.deepEqual(await readdir(store.blobs), [tinySha], 'still used by t_ok2');
    const r2 = await store.remove('t_ok2');
    assert.equal(r2.freedBytes, tiny.length);
    assert.deepEqual(await readdir(store.blobs), []);
    assert.deepEqual(await store.list(), []);
  });

  test('two processes pulling the same model at once: one download, both get the file', async () => {
    routes.set('/slowok/model.onnx', (_req, res) => {
      res.writeHead(200, { 'content-length': tiny.length });
      let i = 0;
      const step = Math.ceil(tiny.length / 5);
      const tick = () => {
        if (i >= tiny.length) return res.end();
        res.write(tiny.subarray(i, i + step));
        i += step;
        setTimeout(tick, 80);
      };
      tick();
    });
    const storeRoot = join(tmp, 'shared-store');
    const e = entry('t_conc', [{ name: 'model.onnx', urls: [`${base}/slowok/model.onnx`], sha256: tinySha }]);
    const code = `
      import { ModelStore } from ${JSON.stringify(join(root, 'src', 'models', 'store.ts'))};
      const store = new ModelStore(process.env.STORE_ROOT);
      const r = await store.pull(JSON.parse(process.env.ENTRY), { backoffMs: 5, mirror: null, lock: { pollMs: 20 } });
      console.log(JSON.stringify({ main: r.main, downloaded: r.downloaded }));`;
    const run = () =>
      new Promise<{ main: string; downloaded: boolean }>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
          env: { ...process.env, STORE_ROOT: storeRoot, ENTRY: JSON.stringify(e) },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (err += d));
        const timer = setTimeout(() => child.kill(), 60_000);
        child.on('close', (codeNum) => {
          clearTimeout(timer);
          if (codeNum !== 0) return reject(new Error(`child failed (${codeNum}): ${err}`));
          resolve(JSON.parse(out.trim().split('\n').at(-1)!));
        });
      });
    const [a, b] = await Promise.all([run(), run()]);
    assert.equal(hits('/slowok/').length, 1, 'downloaded once');
    assert.equal(a.main, b.main);
    assert.equal([a, b].filter((r) => r.downloaded).length, 1);
    assert.deepEqual(await readFile(a.main), tiny);
  });

  test('a lock left by a process that died is broken; a live one is waited for', async () => {
    files.set('/stale/model.onnx', tiny);
    const store = await freshStore();
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((r) => dead.on('close', r));
    await mkdir(store.locks, { recursive: true });
    const lockFile = join(store.locks, 'entry-t_stale.lock');
    await writeFile(lockFile, JSON.stringify({ pid: dead.pid, host: hostname(), token: 'x', since: new Date().toISOString() }));
    const got = await store.pull(entry('t_stale', [{ name: 'model.onnx', urls: [`${base}/stale/model.onnx`] }]), fast);
    assert.deepEqual(await readFile(got.main), tiny);
    // Held by this (live) process: a second pull waits, and gives up when told to.
    await writeFile(join(store.locks, 'entry-t_held.lock'), JSON.stringify({ pid: process.pid, host: hostname(), token: 'y', since: new Date().toISOString() }));
    await assert.rejects(
      store.pull(entry('t_held', [{ name: 'model.onnx', urls: [`${base}/stale/model.onnx`] }]), { ...fast, lock: { waitMs: 300, pollMs: 20 } }),
      /timed out waiting for lock .*entry-t_held\.lock \(held by pid \d+/,
    );
  });

  test('two pulls in one process share one download', async () => {
    let n = 0;
    routes.set('/slowok2/model.onnx', (_req, res) => {
      n++;
      res.writeHead(200, { 'content-length': tiny.length });
      setTimeout(() => res.end(tiny), 150);
    });
    const store = await freshStore();
    const e = entry('t_conc2', [{ name: 'model.onnx', urls: [`${base}/slowok2/model.onnx`] }]);
    const [a, b] = await Promise.all([store.pull(e, { ...fast, lock: { pollMs: 10 } }), store.pull(e, { ...fast, lock: { pollMs: 10 } })]);
    assert.equal(n, 1);
    assert.equal(a.main, b.main);
  });

  test('trust on first use: recorded, kept by rm, then verified (tampered bytes refused)', async () => {
    let body: Buffer = tiny;
    routes.set('/tofu/model.onnx', (req, res) => serveFile(req, res, body));
    const store = await freshStore();
    const e = entry('t_tofu', [{ name: 'model.onnx', urls: [`${base}/tofu/model.onnx`] }]);
    const logs: string[] = [];
    const first = await store.pull(e, { ...fast, log: (m) => logs.push(m) });
    assert.equal(first.files[0]!.checksum, 'new');
    assert.ok(logs.some((l) => /trust on first use/.test(l)), `TOFU is said: ${logs.join(' | ')}`);
    const rec = (await store.checksumRecords())['t_tofu/model.onnx'];
    assert.equal(rec?.sha256, tinySha);
    assert.equal(rec?.size, tiny.length);

    await store.remove('t_tofu');
    assert.equal((await store.checksumRecords())['t_tofu/model.onnx']?.sha256, tinySha, 'rm keeps the record');
    const second = await store.pull(e, fast);
    assert.equal(second.files[0]!.checksum, 'recorded');

    await store.remove('t_tofu');
    // Same size, one byte changed: only the checksum can tell.
    const tampered = Buffer.from(tiny);
    tampered[tampered.length - 1]! ^= 1;
    body = tampered;
    await assert.rejects(store.pull(e, fast), new RegExp(`checksum mismatch for t_tofu/model\\.onnx .*expected sha256 ${tinySha}, got ${sha(tampered)}; the downloaded file was deleted`));
    assert.equal(await store.cached('t_tofu'), undefined);
    // Another model altogether (another size) is refused too.
    body = Buffer.from(tinyClassifier({ classes: 5 }));
    await assert.rejects(store.pull(e, fast), /size mismatch for t_tofu\/model\.onnx/);
    body = tampered;

    // A fresh store given the recorded checksums refuses the tampered bytes too.
    const fresh = await freshStore();
    await mkdir(fresh.root, { recursive: true });
    await copyFile(store.checksumsPath, fresh.checksumsPath);
    await assert.rejects(fresh.pull(e, fast), /checksum mismatch/);

    // --forget drops the record: the next download is trusted anew.
    const r = await store.remove('t_tofu', { forget: true });
    assert.equal(r.forgot, 1);
    assert.equal((await store.pull(e, fast)).files[0]!.checksum, 'new');
  });

  test('a garbage "model" is refused and its checksum is not recorded', async () => {
    files.set('/garbage/model.onnx', Buffer.from('<html>this is an error page, not a model</html>'.repeat(20)));
    const store = await freshStore();
    await assert.rejects(store.pull(entry('t_garbage', [{ name: 'model.onnx', urls: [`${base}/garbage/model.onnx`] }]), fast), /t_garbage\/model\.onnx: not an ONNX model/);
    assert.deepEqual(await store.checksumRecords(), {});
    assert.equal(await store.cached('t_garbage'), undefined);
    files.set('/garbage/model.tflite', Buffer.from('not a flatbuffer at all'));
    await assert.rejects(
      store.pull(entry('t_garbage2', [{ name: 'model.tflite', urls: [`${base}/garbage/model.tflite`] }], 'tflite'), fast),
      /t_garbage2\/model\.tflite: not a TFLite model/,
    );
  });

  test('URL downloads: once into the store, removable by URL', async () => {
    files.set('/url/some%20model.onnx', tiny);
    const store = await freshStore();
    const url = `${base}/url/some%20model.onnx`;
    const p = await store.fetchUrl(url, fast);
    assert.ok(p.startsWith(store.urls), p);
    assert.ok(p.endsWith('some_model.onnx'), p);
    assert.equal(await store.fetchUrl(url, fast), p);
    assert.equal(hits('/url/').length, 1);
    assert.equal((await store.list())[0]?.name, url);
    assert.equal((await store.remove(url)).removed, true);
    assert.deepEqual(await store.list(), []);
  });
});

describe('hostile model files', () => {
  const topo = { keras_version: '2.1.4', backend: 'tensorflow', model_config: { class_name: 'Model', config: { layers: [] } } };
  const modelJson = (paths: string[], shape = [2, 3]) =>
    Buffer.from(JSON.stringify({ modelTopology: topo, weightsManifest: [{ paths, weights: [{ name: 'w', shape, dtype: 'float32' }] }] }));
  const shard = Buffer.alloc(24, 1);
  const mirror = () => `${base}/m`;

  test('a TF.js shard path that leaves the folder is refused, and nothing outside is fetched', async () => {
    files.set('/m/secret.bin', Buffer.alloc(24, 9));
    files.set('/secret.bin', Buffer.alloc(24, 9));
    const store = await freshStore();
    for (const [i, p] of ['../secret.bin', '../../secret.bin', 'a/../../secret.bin', '/secret.bin', '%2e%2e/secret.bin', '..\\secret.bin', 'http://127.0.0.1/secret.bin', 'C:/secret.bin'].entries()) {
      const name = `t_evil${i}`;
      files.set(`/m/${name}/model.json`, modelJson([p]));
      await assert.rejects(
        store.pull(entry(name, [{ name: 'model.json', urls: ['https://example.invalid/model.json'] }], 'tfjs-layers'), { ...fast, mirror: mirror() }),
        /refused file path .*leaves the model's folder/,
        p,
      );
    }
    assert.deepEqual(hits('/secret.bin'), []);
    assert.deepEqual(hits('/m/secret.bin'), []);
    assert.deepEqual(await store.list(), []);
    assert.deepEqual(await store.checksumRecords(), {});

    // The same from a folder mirror.
    const dir = join(tmp, 'evil-mirror');
    await mkdir(join(dir, 't_evil_dir'), { recursive: true });
    await writeFile(join(dir, 'secret.bin'), Buffer.alloc(24, 9));
    await writeFile(join(dir, 't_evil_dir', 'model.json'), modelJson(['../secret.bin']));
    await assert.rejects(
      store.pull(entry('t_evil_dir', [{ name: 'model.json', urls: ['https://example.invalid/model.json'] }], 'tfjs-layers'), { ...fast, mirror: dir }),
      /refused file path '\.\.\/secret\.bin'/,
    );
    // And a local TF.js folder checked before an importer reads it.
    await assert.rejects(checkTfjsFolder(join(dir, 't_evil_dir')), /refused file path/);
  });

  test('a local TF.js folder whose shard is a link leading outside is refused before the importer runs', async () => {
    const dir = join(tmp, 'link-model');
    await mkdir(dir, { recursive: true });
    await writeFile(join(tmp, 'outside.bin'), Buffer.alloc(24));
    await writeFile(join(dir, 'model.json'), modelJson(['group1-shard1of1.bin']));
    await symlink(join(tmp, 'outside.bin'), join(dir, 'group1-shard1of1.bin'));
    await assert.rejects(checkTfjsFolder(dir), /refused weight shard 'group1-shard1of1\.bin': it is a link leading out of the model's folder/);
    const prev = unregisterImporter('tfjs-layers');
    let called = false;
    registerImporter('tfjs-layers', async () => {
      called = true;
      return tiny;
    });
    try {
      await assert.rejects(modelSourcePath(dir, { store: await freshStore() }), /link leading out/);
      assert.equal(called, false);
    } finally {
      unregisterImporter('tfjs-layers');
      if (prev) registerImporter('tfjs-layers', prev.convert, { version: prev.version });
    }
  });

  test('missing, truncated and over-long shards, and a garbage model.json, are clear errors', async () => {
    const store = await freshStore();
    const pull = (name: string) => store.pull(entry(name, [{ name: 'model.json', urls: ['https://example.invalid/model.json'] }], 'tfjs-layers'), { ...fast, mirror: mirror() });

    files.set('/m/t_missing/model.json', modelJson(['group1-shard1of1.bin']));
    await assert.rejects(pull('t_missing'), /t_missing\/group1-shard1of1\.bin .*HTTP 404/);

    files.set('/m/t_short/model.json', modelJson(['group1-shard1of1.bin']));
    files.set('/m/t_short/group1-shard1of1.bin', shard.subarray(0, 12));
    await assert.rejects(pull('t_short'), /hold 12 bytes, the manifest needs 24 \(truncated or missing data/);

    files.set('/m/t_long/model.json', modelJson(['group1-shard1of1.bin']));
    files.set('/m/t_long/group1-shard1of1.bin', Buffer.alloc(30));
    await assert.rejects(pull('t_long'), /hold 30 bytes, the manifest needs 24 \(too long/);

    files.set('/m/t_garbage/model.json', Buffer.from([0x50, 0x4b, 3, 4, 0xff, 0x00, 0x13]));
    await assert.rejects(pull('t_garbage'), /t_garbage\/model\.json: not a TF.js model\.json \(not valid JSON/);

    files.set('/m/t_nomanifest/model.json', Buffer.from(JSON.stringify({ modelTopology: topo })));
    await assert.rejects(pull('t_nomanifest'), /no weightsManifest/);

    files.set('/m/t_ok/model.json', modelJson(['group1-shard1of1.bin']));
    files.set('/m/t_ok/group1-shard1of1.bin', shard);
    const ok = await pull('t_ok');
    assert.deepEqual(ok.files.map((f) => f.name), ['model.json', 'group1-shard1of1.bin']);
    assert.ok(ok.files.every((f) => f.checksum === 'new'), 'TOFU for every file');
    assert.deepEqual(Object.keys(await store.checksumRecords()).sort(), ['t_ok/group1-shard1of1.bin', 't_ok/model.json']);
    assert.deepEqual(await store.list().then((l) => l.map((x) => x.name)), ['t_ok']);
  });

  test('TF.js shards are fetched beside model.json at its official address (query string kept)', async () => {
    files.set('/hub/m1/model.json?tfjs-format=file', modelJson(['group1-shard1of1.bin']));
    files.set('/hub/m1/group1-shard1of1.bin?tfjs-format=file', shard);
    const store = await freshStore();
    const got = await store.pull(entry('t_hub', [{ name: 'model.json', urls: [`${base}/hub/m1/model.json?tfjs-format=file`] }], 'tfjs-layers'), fast);
    assert.equal(got.files[1]!.source, `${base}/hub/m1/group1-shard1of1.bin?tfjs-format=file`);
  });

  function withExternal(location: string): Buffer {
    const m = onnx.ModelProto.decode(tiny);
    const t = m.graph!.initializer![0]!;
    t.dataLocation = 1;
    t.externalData = [onnx.StringStringEntryProto.create({ key: 'location', value: location })];
    t.floatData = [];
    t.rawData = new Uint8Array(0);
    return Buffer.from(onnx.ModelProto.encode(m).finish());
  }

  test('an ONNX file whose external data leaves its folder is refused', async () => {
    const store = await freshStore();
    for (const [i, loc] of ['../outside.bin', '/etc/passwd', '../../../../etc/passwd', 'sub/../../x.bin'].entries()) {
      files.set(`/m/t_ext${i}/model.onnx`, withExternal(loc));
      await assert.rejects(
        store.pull(entry(`t_ext${i}`, [{ name: 'model.onnx', urls: ['https://example.invalid/model.onnx'] }]), { ...fast, mirror: mirror() }),
        /external data: refused file path .*leaves the model's folder/,
        loc,
      );
    }
    files.set('/m/t_ext_missing/model.onnx', withExternal('weights.bin'));
    await assert.rejects(
      store.pull(entry('t_ext_missing', [{ name: 'model.onnx', urls: ['https://example.invalid/model.onnx'] }]), { ...fast, mirror: mirror() }),
      /external data: file 'weights\.bin' is missing/,
    );
    // External data inside the folder, listed with the model, is fine.
    files.set('/m/t_ext_ok/model.onnx', withExternal('weights.bin'));
    files.set('/m/t_ext_ok/weights.bin', Buffer.alloc(64));
    const ok = await store.pull(
      entry('t_ext_ok', [
        { name: 'model.onnx', urls: ['https://example.invalid/model.onnx'] },
        { name: 'weights.bin', urls: ['https://example.invalid/weights.bin'] },
      ]),
      { ...fast, mirror: mirror() },
    );
    assert.equal(ok.files.length, 2);
  });
});

describe('model sources', () => {
  test('an unknown name lists close catalog names', async () => {
    const store = await freshStore();
    await assert.rejects(modelSourcePath('resnet_50', { store }), /unknown model 'resnet_50'.*did you mean resnet50\b/);
    await assert.rejects(modelSourcePath('mobilenetv3_small', { store }), /did you mean .*mobilenet_v3_small_1\.0_224/);
  });

  test('paths stay paths; URLs go to the store', async () => {
    const store = await freshStore();
    assert.equal(await modelSourcePath(join(tmp, 'nope.onnx'), { store }), join(tmp, 'nope.onnx'));
    files.set('/src/tiny.onnx', tiny);
    const p = await modelSourcePath(`${base}/src/tiny.onnx`, { store, ...fast });
    assert.ok(p.startsWith(store.root), p);
  });

  test('a TF.js folder needs its importer; a registered importer converts it', async () => {
    const dir = join(tmp, 'tfjs-local');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'model.json'), modelJsonLocal());
    await writeFile(join(dir, 'group1-shard1of1.bin'), Buffer.alloc(24));
    const store = await freshStore();
    const prev = unregisterImporter('tfjs-layers');
    try {
      await assert.rejects(modelSourcePath(dir, { store }), /format tfjs-layers needs the importer \(not yet available\)/);
      let seen = '';
      registerImporter('tfjs-layers', async (file) => {
        seen = file;
        return tiny;
      });
      const p = await modelSourcePath(dir, { store });
      assert.equal(seen, join(dir, 'model.json'));
      assert.deepEqual(await readFile(p), tiny);
    } finally {
      unregisterImporter('tfjs-layers');
      if (prev) registerImporter('tfjs-layers', prev.convert, { version: prev.version });
    }
  });
});

function modelJsonLocal(): Buffer {
  const topo = { keras_version: '2.1.4', backend: 'tensorflow', model_config: { class_name: 'Model', config: { layers: [] } } };
  return Buffer.from(JSON.stringify({ modelTopology: topo, weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: [{ name: 'w', shape: [2, 3], dtype: 'float32' }] }] }));
}
