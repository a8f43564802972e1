/**
 * The catalog: well-formed entries covering the required families, `graft models/pull/rm`, and real release files
 * pulled through a mirror (the shared folder, directly and served by a local HTTP server on 127.0.0.1), with their
 * checksums verified.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PreprocessSpecSchema } from '../src/image/spec.js';
import { catalogEntries, closeMatches, findEntry, MODEL_FORMATS } from '../src/models/catalog.js';
import { resolveModel } from '../src/models/resolve.js';
import { ModelStore, registerImporter, unregisterImporter } from '../src/models/store.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

const root = join(import.meta.dirname, '..');
let tmp: string;
let server: Server;
let base: string;
const served: string[] = [];

/** Where each catalog entry's files are in the shared folder (the test server's mirror layout <entry>/<file>). */
const SHARED_DIRS: Record<string, string> = {
  'mobilenet_v1_0.75_224': 'mobilenet_v1_0.75_224',
  'mobilenet_v1_0.25_224_tflite': 'tflite',
  'mobilenet_v2_1.0_224_quant': 'tflite',
  'mobilenet_v2_0.50_96_feature_vector': 'tfjs_graph/mobilenet_v2_0.50_96_feature_vector',
};

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'graft-catalog-'));
  server = createServer(async (req, res) => {
    served.push(req.url ?? '');
    const m = /^\/mirror\/([^/]+)\/(.+)$/.exec(req.url ?? '');
    const dir = m && SHARED && SHARED_DIRS[decodeURIComponent(m[1]!)];
    if (dir) {
      const modelsDir = join(SHARED!, 'models', dir);
      const file = join(modelsDir, decodeURIComponent(m![2]!));
      const st = relative(modelsDir, file).startsWith('..') ? undefined : await stat(file).catch(() => undefined);
      if (st?.isFile()) {
        res.writeHead(200, { 'content-length': st.size });
        createReadStream(file).pipe(res);
        return;
      }
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await rm(tmp, { recursive: true, force: true });
});

/** Run the CLI without blocking this process (its HTTP server must keep answering). */
function graft(env: Record<string, string>, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill(), 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const REQUIRED = ['vgg16', 'vgg19', 'resnet18', 'resnet50', 'resnet101', 'mobilenet_v2_1.0_224', 'mobilenet_v3_small_1.0_224', 'mobilenet_v3_large_1.0_224'];

describe('catalog', () => {
  test('entries are well formed', () => {
    const entries = catalogEntries();
    const names = new Set<string>();
    for (const e of entries) {
      assert.ok(/^[a-z0-9][a-z0-9._-]*$/.test(e.name), `name ${e.name}`);
      assert.ok(!names.has(e.name), `unique name ${e.name}`);
      names.add(e.name);
      assert.ok(MODEL_FORMATS.includes(e.format), `${e.name}: format ${e.format}`);
      assert.ok(e.files.length >= 1, `${e.name}: has files`);
      for (const f of e.files) {
        assert.ok(f.urls.length >= 1 && f.urls.every((u) => u.startsWith('https://')), `${e.name}/${f.name}: https URLs`);
        if (f.sha256 !== undefined) assert.ok(/^[0-9a-f]{64}$/.test(f.sha256), `${e.name}/${f.name}: sha256`);
        if (f.size !== undefined) assert.ok(Number.isInteger(f.size) && f.size > 0, `${e.name}/${f.name}: size`);
      }
      const main = e.files[0]!.name;
      const wantMain = { onnx: /\.onnx$/, 'tfjs-layers': /^model\.json$/, 'tfjs-graph': /^model\.json$/, tflite: /\.tflite$/ }[e.format];
      assert.ok(wantMain.test(main), `${e.name}: entry file ${main}`);
      assert.ok(PreprocessSpecSchema.safeParse(e.preprocess).success, `${e.name}: preprocess`);
      assert.ok(e.license && e.homepage.startsWith('https://'), `${e.name}: licence and homepage`);
      assert.ok(['imagenet-1000', 'imagenet-1001', 'none'].includes(e.labels), `${e.name}: labels`);
    }
  });

  test('the required families are offered', () => {
    for (const n of REQUIRED) assert.ok(findEntry(n), `catalog has ${n}`);
    const v1 = catalogEntries().filter((e) => e.family === 'mobilenet_v1').map((e) => e.name);
    for (const w of ['0.25', '0.50', '0.75', '1.0']) assert.ok(v1.includes(`mobilenet_v1_${w}_224`), `MobileNet v1 width ${w}`);
    assert.ok(catalogEntries().some((e) => e.family === 'efficientnet_lite'), 'an EfficientNet-Lite');
    const families = new Set(catalogEntries().map((e) => e.family));
    for (const f of ['vgg', 'resnet', 'mobilenet_v1', 'mobilenet_v2', 'mobilenet_v3', 'efficientnet_lite']) assert.ok(families.has(f), `family ${f}`);
  });

  test('close matches for misspelt names', () => {
    assert.equal(closeMatches('resnet-50')[0], 'resnet50');
    assert.equal(closeMatches('VGG16')[0], 'vgg16');
    assert.ok(closeMatches('mobilenet_v1_0.75').includes('mobilenet_v1_0.75_224'), 'width prefix');
    assert.deepEqual(closeMatches('zzzzzzzzzzzz'), []);
  });

  test('graft models --json lists every required family; graft pull of an unknown name suggests names', async () => {
    const home = join(tmp, 'home-list');
    const r = await graft({ GRAFT_HOME: home }, 'models', '--json');
    assert.equal(r.code, 0, r.stderr);
    const list = JSON.parse(r.stdout) as { name: string; family: string; format: string; cached: boolean }[];
    for (const n of REQUIRED) assert.ok(list.some((e) => e.name === n), `listed: ${n}`);
    assert.ok(list.every((e) => e.cached === false), 'nothing cached in a fresh home');
    const table = await graft({ GRAFT_HOME: home }, 'models');
    assert.match(table.stdout, /^name\s+family\s+format\s+input\s+params\s+size\s+cached/);
    assert.match(table.stdout, /vgg16\s+vgg\s+onnx\s+224x224\s+138\.4M/);
    const bad = await graft({ GRAFT_HOME: home }, 'pull', 'resnet_05');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /unknown model 'resnet_05'.*did you mean .*resnet50/);
  });
});

describe('catalog models from a mirror', { skip: SKIP_SHARED }, () => {
  test('mobilenet_v1_0.75_224 pulls from the shared folder as a folder mirror; every checksum verifies', async () => {
    const store = new ModelStore(join(tmp, 'store-dir-mirror'));
    const got = await store.pull('mobilenet_v1_0.75_224', { mirror: join(SHARED!, 'models') });
    assert.equal(got.files.length, 56);
    assert.equal(got.bytes, 10457307);
    assert.ok(got.files.every((f) => f.checksum === 'catalog'), 'all verified against the catalog');
    assert.deepEqual(await store.checksumRecords(), {}, 'nothing to record: the catalog knows them all');
  });

  test('mobilenet_v1_0.75_224 pulls from an HTTP mirror (GRAFT_MIRROR) with the progress total known', async () => {
    const store = new ModelStore(join(tmp, 'store-http-mirror'));
    let last = { received: 0, total: 0 as number | undefined };
    const prev = process.env.GRAFT_MIRROR;
    process.env.GRAFT_MIRROR = `${base}/mirror`;
    try {
      const got = await store.pull('mobilenet_v1_0.75_224', { onProgress: (p) => (last = { received: p.received, total: p.total }) });
      assert.ok(got.files.every((f) => f.checksum === 'catalog' && f.source.startsWith(`${base}/mirror/mobilenet_v1_0.75_224/`)), 'from the mirror, verified');
    } finally {
      if (prev === undefined) delete process.env.GRAFT_MIRROR;
      else process.env.GRAFT_MIRROR = prev;
    }
    assert.deepEqual(last, { received: 10457307, total: 10457307 });
  });

  test('the TFLite releases with published checksums verify', async () => {
    const store = new ModelStore(join(tmp, 'store-tflite'));
    for (const name of ['mobilenet_v1_0.25_224_tflite', 'mobilenet_v2_1.0_224_quant']) {
      const got = await store.pull(name, { mirror: `${base}/mirror` });
      assert.equal(got.files[0]!.checksum, 'catalog', name);
    }
  });

  test('a TF.js graph model without published checksums: recorded on first pull, verified after', async () => {
    const store = new ModelStore(join(tmp, 'store-tofu'));
    const name = 'mobilenet_v2_0.50_96_feature_vector';
    const first = await store.pull(name, { mirror: `${base}/mirror` });
    assert.deepEqual(first.files.map((f) => [f.name, f.checksum]), [['model.json', 'new'], ['group1-shard1of1.bin', 'new']]);
    await store.remove(name);
    const second = await store.pull(name, { mirror: `${base}/mirror` });
    assert.deepEqual(second.files.map((f) => f.checksum), ['recorded', 'recorded']);
  });

  test('resolving a TF.js catalog name: needs the importer, or runs through a registered one with the catalog preprocessing', async () => {
    const home = join(tmp, 'home-resolve');
    const prevHome = process.env.GRAFT_HOME;
    const prevMirror = process.env.GRAFT_MIRROR;
    process.env.GRAFT_HOME = home;
    process.env.GRAFT_MIRROR = join(SHARED!, 'models');
    const prev = unregisterImporter('tfjs-layers');
    try {
      await assert.rejects(resolveModel('mobilenet_v1_0.75_224'), /mobilenet_v1_0\.75_224: format tfjs-layers needs the importer \(not yet available\)/);
      // A stand-in importer (the shared ONNX export of the same network) shows the plumbing.
      const { readFile } = await import('node:fs/promises');
      registerImporter('tfjs-layers', async () => new Uint8Array(await readFile(MOBILENET)), { version: 'test' });
      const ref = await resolveModel('mobilenet_v1_0.75_224');
      assert.ok(ref.path.startsWith(join(home, 'models', 'entries', 'mobilenet_v1_0.75_224')), ref.path);
      assert.match(ref.specSource, /sidecar config/);
      assert.equal(ref.spec.layout, 'NCHW', 'a converted model keeps the layout of the ONNX graph the importer wrote');
      assert.deepEqual(ref.spec.mean, [0.5, 0.5, 0.5]);
    } finally {
      unregisterImporter('tfjs-layers');
      if (prev) registerImporter('tfjs-layers', prev.convert, { version: prev.version });
      if (prevHome === undefined) delete process.env.GRAFT_HOME;
      else process.env.GRAFT_HOME = prevHome;
      if (prevMirror === undefined) delete process.env.GRAFT_MIRROR;
      else process.env.GRAFT_MIRROR = prevMirror;
    }
  });

  test('graft pull / models --cached / rm', async () => {
    const env = { GRAFT_HOME: join(tmp, 'home-cli'), GRAFT_MIRROR: `${base}/mirror` };
    const p = await graft(env, 'pull', 'mobilenet_v1_0.25_224_tflite', '--json');
    assert.equal(p.code, 0, p.stderr);
    const pulled = JSON.parse(p.stdout);
    assert.equal(pulled.downloaded, true);
    assert.equal(pulled.files[0].checksum, 'catalog');
    const again = await graft(env, 'pull', 'mobilenet_v1_0.25_224_tflite');
    assert.match(again.stdout, /is already in the store/);
    const cached = await graft(env, 'models', '--cached', '--json');
    assert.deepEqual(JSON.parse(cached.stdout).map((c: { name: string }) => c.name), ['mobilenet_v1_0.25_224_tflite']);
    const listed = JSON.parse((await graft(env, 'models', '--json')).stdout) as { name: string; cached: boolean }[];
    assert.equal(listed.find((e) => e.name === 'mobilenet_v1_0.25_224_tflite')?.cached, true);
    const r = await graft(env, 'rm', 'mobilenet_v1_0.25_224_tflite');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /removed mobilenet_v1_0\.25_224_tflite \(freed 1\.9 MB\)/);
    assert.equal((await graft(env, 'models', '--cached')).stdout.trim().startsWith('no models in the store'), true);
    const again2 = await graft(env, 'rm', 'mobilenet_v1_0.25_224_tflite');
    assert.equal(again2.code, 1);
    assert.match(again2.stderr, /not in the store/);
  });
});
