/** Models by URL: downloaded once into the cache (served here by a local HTTP server on 127.0.0.1). */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Backbone } from '../src/engine/backbone.js';
import { downloadToCache } from '../src/models/model-source.js';
import { MOBILENET, SKIP_SHARED } from './helpers/shared.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';

let server: Server;
let base: string;
let home: string;
const hits: string[] = [];
const tiny = Buffer.from(tinyClassifier());

before(async () => {
  home = await mkdtemp(join(tmpdir(), 'graft-dl-'));
  process.env.GRAFT_HOME = home;
  server = createServer(async (req, res) => {
    hits.push(req.url ?? '');
    if (req.url === '/tiny.onnx') {
      res.writeHead(200, { 'content-length': tiny.length });
      res.end(tiny);
    } else if (req.url === '/mobilenet.onnx' && MOBILENET) {
      const body = await readFile(MOBILENET);
      res.writeHead(200, { 'content-length': body.length });
      res.end(body);
    } else if (req.url === '/short.onnx') {
      // Announce more bytes than are sent, then drop the connection.
      res.writeHead(200, { 'content-length': tiny.length * 2 });
      res.write(tiny);
      res.destroy();
    } else {
      res.writeHead(404);
      res.end('not found');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
});
after(async () => {
  server.close();
  delete process.env.GRAFT_HOME;
  await rm(home, { recursive: true, force: true });
});

describe('model by URL', () => {
  test('downloads once, then serves from the cache', async () => {
    const a = await downloadToCache(`${base}/tiny.onnx`);
    const b = await downloadToCache(`${base}/tiny.onnx`);
    assert.equal(a, b);
    assert.ok(a.startsWith(home), 'a.startsWith(home)');
    assert.deepEqual(await readFile(a), tiny);
    assert.equal(hits.filter((h) => h === '/tiny.onnx').length, 1);
  });

  test('404 and a dropped connection are clear errors and leave no file behind', async () => {
    await assert.rejects(downloadToCache(`${base}/missing.onnx`), /download failed: .*missing\.onnx: HTTP 404/);
    // retries: 0, so that each call is one request (the downloader retries and resumes by default).
    await assert.rejects(downloadToCache(`${base}/short.onnx`, { retries: 0 }), /download failed: .*short\.onnx/);
    // Not cached as if complete: a second attempt goes to the server again.
    const before = hits.filter((h) => h === '/short.onnx').length;
    await assert.rejects(downloadToCache(`${base}/short.onnx`, { retries: 0 }));
    assert.equal(hits.filter((h) => h === '/short.onnx').length, before + 1);
  });

  test('the shared MobileNet by URL works like the local file', { skip: SKIP_SHARED }, async () => {
    const bb = await Backbone.load(`${base}/mobilenet.onnx`);
    try {
      assert.equal(bb.ref.logitsTensor, 'logits');
      assert.deepEqual(bb.spec.mean, [0.5, 0.5, 0.5]);
    } finally {
      await bb.dispose();
    }
  });
});
