/**
 * `graft serve`'s API through Fastify's inject: every route, the prediction contract exactly, each awkward upload the
 * image tests use (answered or refused with a 4xx and a message; the server keeps serving), projects end to end on
 * ../shared Cats vs Dogs (upload, train as a job with events, evaluate, export, predict by project id), jobs (queue
 * limit, cancel), looking inside (layers, feature maps, attack, ideal image), token and host rules.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { buildApp } from '../src/server/app.js';
import type { ServerContext } from '../src/server/context.js';
import { startServer } from '../src/server/serve.js';
import { colourImage, hugePngHeader } from './helpers/images.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

const cvd = SHARED ? join(SHARED, 'data', 'cats_vs_dogs') : '';
let dir: string;
let app: FastifyInstance;
let ctx: ServerContext;

async function photos(split: 'train' | 'validation', cls: 'cats' | 'dogs', n: number, from = 0): Promise<{ name: string; bytes: Buffer }[]> {
  const names = (await readdir(join(cvd, split, cls))).sort().slice(from, from + n);
  return Promise.all(names.map(async (name) => ({ name, bytes: await readFile(join(cvd, split, cls, name)) })));
}

const predictUrl = (model = MOBILENET, top?: number) => `/api/predict?model=${encodeURIComponent(model)}${top ? `&top=${top}` : ''}`;
const post = (url: string, payload: Buffer | string, headers: Record<string, string> = { 'content-type': 'application/octet-stream' }) => app.inject({ method: 'POST', url, payload, headers });
const json = (url: string, body: unknown, method: 'POST' | 'DELETE' = 'POST') => app.inject({ method, url, payload: JSON.stringify(body), headers: { 'content-type': 'application/json' } });

/** Poll a job until it ends (bounded). */
async function waitJob(id: string, seconds = 120): Promise<{ state: string; result?: unknown; error?: string }> {
  const t0 = Date.now();
  for (;;) {
    const j = (await app.inject({ url: `/api/jobs/${id}` })).json();
    if (['done', 'failed', 'cancelled'].includes(j.state)) return j;
    if (Date.now() - t0 > seconds * 1000) throw new Error(`job ${id} still ${j.state} after ${seconds} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('graft serve API', { skip: SKIP_SHARED }, () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'graft-serve-'));
    process.env.GRAFT_HOME = join(dir, 'home');
    ({ app, ctx } = await buildApp({ projectsDir: join(dir, 'projects'), modelsDirs: [SHARED!], limits: { bodyBytes: 4 * 1024 * 1024 }, maxWaitingJobs: 2 }));
    await app.ready();
  });
  after(async () => {
    await app?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('predict: the contract, exactly', async () => {
    const [cat] = await photos('validation', 'cats', 1);
    const res = await post(predictUrl(MOBILENET, 3), cat!.bytes, { 'content-type': 'image/jpeg' });
    assert.equal(res.statusCode, 200);
    const body = res.json();
    assert.deepEqual(Object.keys(body), ['predictions']);
    assert.equal(body.predictions.length, 3);
    for (const p of body.predictions) assert.deepEqual(Object.keys(p).sort(), ['label', 'probability']);
    const probs = body.predictions.map((p: { probability: number }) => p.probability);
    assert.deepEqual(probs, [...probs].sort((a, b) => b - a), 'descending probability');
    assert.match(body.predictions[0].label, /cat|tabby|lynx|tiger/i);
    // Any Content-Type: the bytes are what counts (JSON, text, none at all).
    for (const headers of [{ 'content-type': 'application/json' }, { 'content-type': 'text/plain' }, {} as Record<string, string>]) {
      const r = await post(predictUrl(MOBILENET, 3), cat!.bytes, headers);
      assert.equal(r.statusCode, 200, JSON.stringify(headers) + ' ' + r.body);
      assert.deepEqual(r.json(), body);
    }
    // top defaults to 5
    assert.equal((await post(predictUrl(), cat!.bytes)).json().predictions.length, 5);
  });

  test('predict: every awkward upload gets an answer or a 4xx with a message, and the server keeps serving', async () => {
    const rgb: [number, number, number] = [200, 80, 40];
    const jpeg = await colourImage(rgb, 64, 48).jpeg().toBuffer();
    const good: Record<string, Buffer> = {
      'PNG named .jpg': await colourImage(rgb).png().toBuffer(),
      WebP: await colourImage(rgb).webp().toBuffer(),
      GIF: await colourImage(rgb).gif().toBuffer(),
      RGBA: await colourImage(rgb).ensureAlpha(0.5).png().toBuffer(),
      CMYK: await colourImage(rgb).toColourspace('cmyk').jpeg().toBuffer(),
      '16-bit': await colourImage(rgb).toColourspace('rgb16').png().toBuffer(),
      'EXIF-rotated': await colourImage(rgb, 60, 20).jpeg().withMetadata({ orientation: 6 }).toBuffer(),
      '1x1': await sharp({ create: { width: 1, height: 1, channels: 3, background: '#c85028' } }).png().toBuffer(),
    };
    for (const [what, bytes] of Object.entries(good)) {
      const r = await post(predictUrl(MOBILENET, 2), bytes);
      assert.equal(r.statusCode, 200, `${what}: ${r.body}`);
      assert.equal(r.json().predictions.length, 2);
    }
    const bad: [string, Buffer | string, number, RegExp][] = [
      ['zero bytes', Buffer.alloc(0), 400, /no image in the request body/],
      ['truncated JPEG', jpeg.subarray(0, jpeg.length >> 1), 400, /the upload.*(truncated|premature|corrupt|end)/i],
      ['text named .jpg', 'this is a text file, not a photo\n', 415, /not an image graft reads/],
      ['SVG', '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><image href="/etc/passwd"/></svg>', 415, /SVG/],
      ['60000x60000 PNG header', hugePngHeader(60_000, 60_000), 400, /60000x60000.*above the limit/],
      ['PDF', '%PDF-1.4\n%…', 415, /PDF/],
      ['5 MB (over the 4 MB cap)', Buffer.concat([jpeg, Buffer.alloc(5 * 1024 * 1024)]), 413, /larger than this server accepts/],
    ];
    for (const [what, bytes, status, message] of bad) {
      const r = await post(predictUrl(), bytes);
      assert.equal(r.statusCode, status, `${what}: ${r.body}`);
      assert.match(r.json().error, message, what);
    }
    assert.equal((await app.inject({ url: '/api/health' })).json().ok, true);
  });

  test('predict: bad parameters are 4xx naming the problem; nothing outside the allowed folders is read', async () => {
    const [cat] = await photos('validation', 'cats', 1);
    const cases: [string, number, RegExp][] = [
      ['/api/predict', 400, /model/],
      [predictUrl(MOBILENET).replace('predict?', 'predict?top=0&'), 400, /top=0/],
      [predictUrl('/etc/passwd'), 403, /outside the folders/],
      [predictUrl('../../../../etc/passwd'), 403, /outside the folders/],
      [predictUrl(join(SHARED!, 'nope.onnx')), 404, /no such file/],
      [predictUrl('no-such-model'), 404, /not a catalog model/],
      [predictUrl(join(SHARED!, 'data')), 400, /not a graft run/],
      [predictUrl(join(SHARED!, 'README.md')), 400, /not an \.onnx file/],
    ];
    for (const [url, status, message] of cases) {
      const r = await post(url, cat!.bytes);
      assert.equal(r.statusCode, status, `${url}: ${r.body}`);
      assert.match(r.json().error, message, url);
    }
  });

  test('predict: concurrent requests share ONNX Runtime runs (dynamic batching), answers unchanged', async () => {
    const imgs = await photos('validation', 'dogs', 12);
    const alone = (await post(predictUrl(MOBILENET, 1), imgs[0]!.bytes)).json();
    const pred = await ctx.pool.get(MOBILENET);
    const before = { ...pred.batcher.stats };
    const res = await Promise.all(imgs.map((im) => post(predictUrl(MOBILENET, 1), im.bytes)));
    assert.ok(res.every((r) => r.statusCode === 200));
    const batches = pred.batcher.stats.batches - before.batches;
    assert.equal(pred.batcher.stats.rows - before.rows, 12);
    assert.ok(batches < 12, `12 concurrent requests ran in ${batches} batches`);
    // Batched or alone, the same answer (to float rounding of a batch).
    assert.equal(res[0]!.json().predictions[0].label, alone.predictions[0].label);
    assert.ok(Math.abs(res[0]!.json().predictions[0].probability - alone.predictions[0].probability) < 1e-4);
  });

  test('projects: create, classes, uploads (raw and multipart, deduplicated), thumbnails, train as a job, evaluate, predict, export', async () => {
    const bad = await json('/api/projects', { name: 'x', backbone: '/etc/passwd' });
    assert.equal(bad.statusCode, 403);
    assert.match(bad.json().error, /^backbone \/etc\/passwd: outside/);
    const created = await json('/api/projects', { name: 'Cats and dogs', backbone: MOBILENET, classes: ['cats'] });
    assert.equal(created.statusCode, 201, created.body);
    const id = created.json().id as string;
    assert.equal((await json(`/api/projects/${id}/classes`, { name: 'dogs' })).statusCode, 201);
    assert.equal((await json(`/api/projects/${id}/classes`, { name: 'Dogs' })).statusCode, 409);
    assert.equal((await json(`/api/projects/${id}/classes`, { name: '../evil' })).statusCode, 400);

    const cats = await photos('train', 'cats', 8);
    const dogs = await photos('train', 'dogs', 8);
    for (const c of cats) {
      const r = await post(`/api/projects/${id}/classes/cats/images?name=${c.name}`, c.bytes, { 'content-type': 'image/jpeg' });
      assert.equal(r.statusCode, 201, r.body);
    }
    // The same photo again (in any class) is stored once.
    const dup = await post(`/api/projects/${id}/classes/dogs/images?name=again.jpg`, cats[0]!.bytes);
    assert.equal(dup.statusCode, 200);
    assert.equal(dup.json().duplicate, true);
    assert.equal(dup.json().class, 'cats');
    // Multipart: many files in one request; a bad one is rejected by name, the rest added.
    const boundary = '----graft' + Date.now();
    const parts = [...dogs.map((d) => ({ name: d.name, bytes: d.bytes })), { name: 'notes.jpg', bytes: Buffer.from('not a photo') }];
    const mp = Buffer.concat([
      ...parts.flatMap((p) => [Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${p.name}"\r\nContent-Type: image/jpeg\r\n\r\n`), p.bytes, Buffer.from('\r\n')]),
      Buffer.from(`--${boundary}--\r\n`),
    ]);
    const up = await post(`/api/projects/${id}/classes/dogs/images`, mp, { 'content-type': `multipart/form-data; boundary=${boundary}` });
    assert.equal(up.statusCode, 201, up.body);
    assert.equal(up.json().added.length, 8);
    assert.deepEqual(up.json().rejected.map((r: { name: string }) => r.name), ['notes.jpg']);

    const project = (await app.inject({ url: `/api/projects/${id}` })).json();
    assert.deepEqual(project.classes.map((c: { name: string; images: unknown[] }) => [c.name, c.images.length]), [['cats', 8], ['dogs', 8]]);
    const imageId = project.classes[0].images[0].id;
    const thumb = await app.inject({ url: `/api/projects/${id}/images/${imageId}?size=64` });
    assert.equal(thumb.statusCode, 200);
    assert.equal(thumb.headers['content-type'], 'image/jpeg');
    const meta = await sharp(thumb.rawPayload).metadata();
    assert.equal(Math.max(meta.width!, meta.height!), 64);
    assert.deepEqual((await app.inject({ url: `/api/projects/${id}/images/${imageId}` })).rawPayload, cats[0]!.bytes);
    // Ids, never paths.
    assert.equal((await app.inject({ url: `/api/projects/..%2F..%2Fetc/images/${imageId}` })).statusCode, 404);
    assert.equal((await app.inject({ url: `/api/projects/${id}/images/..%2Fproject.json` })).statusCode, 404);

    // Train (frozen) as a job; its events arrive over SSE (replayed after the end).
    const t = await json(`/api/projects/${id}/train`, { mode: 'frozen', epochs: 30 });
    assert.equal(t.statusCode, 202, t.body);
    const done = await waitJob(t.json().id);
    assert.equal(done.state, 'done', done.error);
    const result = done.result as { run: string; validation: { accuracy: number; n: number } };
    assert.match(result.run, /^run-\d{8}-\d{6}$/);
    assert.ok(result.validation.n >= 2);
    const sse = await app.inject({ url: `/api/jobs/${t.json().id}/events` });
    assert.equal(sse.headers['content-type'], 'text/event-stream; charset=utf-8');
    const events = [...sse.body.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    for (const e of ['state', 'progress', 'epoch', 'result']) assert.ok(events.includes(e), `${e} in ${events.join(',')}`);
    assert.match(sse.body, /"state":"done"/);
    // Resume after an event id: only what came later.
    const later = await app.inject({ url: `/api/jobs/${t.json().id}/events`, headers: { 'last-event-id': '3' } });
    const ids = (body: string) => [...body.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    assert.ok(ids(later.body).length > 0);
    assert.deepEqual(ids(later.body), ids(sse.body).filter((i) => i > 3));

    const runs = (await app.inject({ url: `/api/projects/${id}/runs` })).json().runs;
    assert.equal(runs[0].run, result.run);
    const ev = (await app.inject({ url: `/api/projects/${id}/runs/${result.run}/evaluation` })).json();
    assert.deepEqual(ev.classes, ['cats', 'dogs']);
    assert.equal(ev.items.length, result.validation.n);
    assert.equal(ev.evaluation.accuracy, result.validation.accuracy);
    const allIds = new Set(project.classes.flatMap((c: { images: { id: string }[] }) => c.images.map((i) => i.id)));
    for (const it of ev.items) assert.ok(allIds.has(it.image), 'evaluation items are image ids');
    assert.equal(ev.confusion ?? ev.evaluation.confusion.flat().reduce((a: number, b: number) => a + b, 0), ev.items.length);

    // Predict by project id: the newest run's classes.
    const [held] = await photos('validation', 'dogs', 1, 100);
    const p = await post(`/api/predict?model=${id}&top=2`, held!.bytes);
    assert.equal(p.statusCode, 200, p.body);
    assert.deepEqual(p.json().predictions.map((x: { label: string }) => x.label).sort(), ['cats', 'dogs']);
    assert.equal((await post(`/api/predict?model=${id}/${result.run}`, held!.bytes)).statusCode, 200);

    // Export: ONNX + sidecar, downloadable; the exported model predicts like the run.
    const ex = await app.inject({ method: 'POST', url: `/api/projects/${id}/runs/${result.run}/export` });
    assert.equal(ex.statusCode, 200, ex.body);
    const onnx = await app.inject({ url: ex.json().model });
    assert.equal(onnx.statusCode, 200);
    assert.ok(onnx.rawPayload.length > 1_000_000);
    const sidecar = (await app.inject({ url: ex.json().sidecar })).json();
    assert.deepEqual(sidecar.classes ?? sidecar.labels, ['cats', 'dogs']);

    // Deleting: an image, a class, the project.
    assert.equal((await app.inject({ method: 'DELETE', url: `/api/projects/${id}/images/${imageId}` })).statusCode, 200);
    assert.equal((await app.inject({ url: `/api/projects/${id}/images/${imageId}` })).statusCode, 404);
    assert.equal((await app.inject({ method: 'DELETE', url: `/api/projects/${id}/classes/dogs` })).json().classes.length, 1);
    assert.equal((await app.inject({ method: 'DELETE', url: `/api/projects/${id}` })).statusCode, 204);
    assert.equal((await app.inject({ url: `/api/projects/${id}` })).statusCode, 404);
  });

  test('jobs: a full line is refused with 429, a waiting job cancels, a running training cancels and leaves no run', async () => {
    const id = (await json('/api/projects', { name: 'jobs', backbone: MOBILENET, classes: ['cats', 'dogs'] })).json().id;
    for (const [cls, list] of [['cats', await photos('train', 'cats', 6, 20)], ['dogs', await photos('train', 'dogs', 6, 20)]] as const) {
      for (const im of list) assert.equal((await post(`/api/projects/${id}/classes/${cls}/images`, im.bytes)).statusCode, 201);
    }
    assert.equal((await json(`/api/projects/${id}/train`, { mode: 'bogus' })).statusCode, 400);
    const aug = await json(`/api/projects/${id}/train`, { mode: 'frozen', augment: 2 });
    assert.equal(aug.statusCode, 400);
    assert.match(aug.json().error, /augment applies to fine-tuning/);
    const first = (await json(`/api/projects/${id}/train`, { epochs: 500, mode: 'frozen' })).json();
    const second = (await json(`/api/projects/${id}/train`, {})).json();
    const third = (await json(`/api/projects/${id}/train`, {})).json();
    const fourth = await json(`/api/projects/${id}/train`, {});
    assert.equal(fourth.statusCode, 429, fourth.body);
    assert.match(fourth.json().error, /2 jobs are already waiting/);
    assert.equal((await app.inject({ url: `/api/jobs/${third.id}` })).json().position, 2);
    assert.equal((await app.inject({ method: 'POST', url: `/api/jobs/${second.id}/cancel` })).json().state, 'cancelled');
    assert.equal((await app.inject({ url: `/api/jobs/${third.id}` })).json().position, 1);
    assert.equal((await app.inject({ method: 'POST', url: `/api/jobs/${third.id}/cancel` })).json().state, 'cancelled');
    // Cancel the running one as soon as it runs.
    for (let i = 0; i < 200 && (await app.inject({ url: `/api/jobs/${first.id}` })).json().state === 'queued'; i++) await new Promise((r) => setTimeout(r, 20));
    await app.inject({ method: 'POST', url: `/api/jobs/${first.id}/cancel` });
    const end = await waitJob(first.id);
    assert.equal(end.state, 'cancelled', JSON.stringify(end));
    assert.deepEqual((await app.inject({ url: `/api/projects/${id}/runs` })).json().runs, []);
    assert.deepEqual(await readdir(join(dir, 'projects', id, 'runs')).catch(() => []), [], 'no half-made run folder');
    assert.equal((await app.inject({ url: '/api/jobs/nope' })).statusCode, 404);
  });

  test('look inside: layers, feature maps, class names', async () => {
    const layers = (await app.inject({ url: `/api/layers?model=${encodeURIComponent(MOBILENET)}` })).json();
    assert.ok(layers.layers.length > 10);
    const [cat] = await photos('validation', 'cats', 1);
    const fm = await post(`/api/featuremaps?model=${encodeURIComponent(MOBILENET)}&channels=8`, cat!.bytes);
    assert.equal(fm.statusCode, 200, fm.body);
    const body = fm.json();
    assert.equal(body.layers.length, 3);
    for (const l of body.layers) {
      assert.equal(l.channels.length, 8);
      const png = Buffer.from(l.png.replace(/^data:image\/png;base64,/, ''), 'base64');
      assert.equal((await sharp(png).metadata()).format, 'png');
    }
    const one = await post(`/api/featuremaps?model=${encodeURIComponent(MOBILENET)}&layers=${encodeURIComponent(layers.layers[2].name)}`, cat!.bytes);
    assert.equal(one.json().layers.length, 1);
    const wrong = await post(`/api/featuremaps?model=${encodeURIComponent(MOBILENET)}&layers=no_such_layer`, cat!.bytes);
    assert.equal(wrong.statusCode, 400);
    assert.doesNotMatch(wrong.json().error, /graft-serve-/, 'no temp paths in messages');
    const classes = (await app.inject({ url: `/api/classes?model=${encodeURIComponent(MOBILENET)}` })).json().classes;
    assert.equal(classes.length, 1000);
  });

  test('attack: the adversarial picture, verified after PNG encoding, fools the model toward the target', async () => {
    const [dog] = await photos('validation', 'dogs', 1, 3);
    const r = await post(`/api/attack?model=${encodeURIComponent(MOBILENET)}&target=tabby&eps=4&steps=20`, dog!.bytes);
    assert.equal(r.statusCode, 200, r.body);
    const a = r.json();
    assert.equal(a.success, true);
    assert.equal(a.adversarial.top[0].label, 'tabby');
    assert.notEqual(a.original.top[0].label, 'tabby');
    assert.ok(a.linfLevels <= 4, `L-inf ${a.linfLevels} levels`);
    for (const k of ['original', 'adversarial', 'perturbation']) assert.match(a[k].png, /^data:image\/png;base64,/);
    assert.equal((await post(`/api/attack?model=${encodeURIComponent(MOBILENET)}&target=unicorn`, dog!.bytes)).statusCode, 400);
    assert.equal((await post(`/api/attack?model=${encodeURIComponent(MOBILENET)}&eps=999`, dog!.bytes)).statusCode, 400);
  });

  test('ideal image: a job whose events carry the picture as it forms', async () => {
    const bad = await json('/api/dream', { model: MOBILENET, class: 'no such class' });
    assert.equal(bad.statusCode, 400);
    const j = await json('/api/dream', { model: MOBILENET, class: 'goldfish', steps: 20, imageEvery: 10 });
    assert.equal(j.statusCode, 202, j.body);
    const done = await waitJob(j.json().id);
    assert.equal(done.state, 'done', done.error);
    const res = done.result as { class: string; probability: number; png: string };
    assert.equal(res.class, 'goldfish');
    assert.ok(res.probability > 0.01, `p(goldfish) ${res.probability}`);
    const sse = (await app.inject({ url: `/api/jobs/${j.json().id}/events` })).body;
    assert.ok((sse.match(/^event: image$/gm) ?? []).length >= 2);
  });

  test('listings: models, projects, jobs; the API docs page', async () => {
    const models = (await app.inject({ url: '/api/models' })).json();
    assert.ok(models.catalog.some((m: { name: string; bytes?: number }) => m.name === 'mobilenet_v2_1.0_224' && (m.bytes ?? 0) > 1e6));
    assert.ok(Array.isArray(models.projects));
    const projects = (await app.inject({ url: '/api/projects' })).json().projects;
    assert.ok(projects.length >= 1, 'the projects made above');
    for (const p of projects) assert.match(p.id, /^[0-9a-f]{10}$/);
    const jobs = (await app.inject({ url: '/api/jobs' })).json().jobs;
    assert.ok(jobs.some((j: { kind: string; state: string }) => j.kind === 'train' && j.state === 'done'));
    const mine = (await app.inject({ url: `/api/jobs?project=${projects[0].id}` })).json().jobs;
    assert.ok(mine.every((j: { project?: string }) => j.project === projects[0].id));
    const docs = await app.inject({ url: '/api/docs/' });
    assert.equal(docs.statusCode, 200);
    assert.match(docs.body, /swagger/i);
  });

  test('unknown routes and methods: JSON 404', async () => {
    const r = await app.inject({ url: '/api/nope' });
    assert.equal(r.statusCode, 404);
    assert.match(r.json().error, /no route GET \/api\/nope/);
    assert.equal((await app.inject({ url: '/api/openapi.json' })).json().openapi, '3.0.3');
  });
});

describe('graft serve: token, host and rate limits', { skip: SKIP_SHARED }, () => {
  test('with a token, /api needs it; the docs and the page do not', async () => {
    const d = await mkdtemp(join(tmpdir(), 'graft-serve-tok-'));
    const { app: a } = await buildApp({ token: 'sesame-1234', projectsDir: join(d, 'p'), modelsDirs: [SHARED!] });
    try {
      assert.equal((await a.inject({ url: '/api/health' })).statusCode, 401);
      assert.equal((await a.inject({ url: '/api/health', headers: { authorization: 'Bearer wrong-token' } })).statusCode, 401);
      assert.equal((await a.inject({ url: '/api/health', headers: { authorization: 'Bearer sesame-1234' } })).statusCode, 200);
      assert.equal((await a.inject({ url: '/' })).statusCode, 200);
    } finally {
      await a.close();
      await rm(d, { recursive: true, force: true });
    }
  });

  test('listening beyond loopback needs a token; a taken port is a clear error', async () => {
    await assert.rejects(startServer({ host: '0.0.0.0', port: 0 }), /--token/);
    const s = await startServer({ port: 0 });
    try {
      assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const r = await fetch(`${s.url}/api/health`);
      assert.equal(r.status, 200);
      await assert.rejects(startServer({ port: s.port }), /in use/);
    } finally {
      await s.close();
    }
  });

  test('rate limit: over the limit is 429 with a message', async () => {
    const { app: a } = await buildApp({ rateLimit: 3, modelsDirs: [SHARED!] });
    try {
      const codes = [];
      for (let i = 0; i < 5; i++) codes.push((await a.inject({ url: '/api/health' })).statusCode);
      assert.deepEqual(codes, [200, 200, 200, 429, 429]);
      assert.match((await a.inject({ url: '/api/health' })).json().error, /too many requests/);
    } finally {
      await a.close();
    }
  });
});

describe('graft serve: shutdown and the command line', { skip: SKIP_SHARED }, () => {
  test('shutting down stops a running fine-tune at a checkpoint: no run appears, the checkpoint stays for --resume', async () => {
    const d = await mkdtemp(join(tmpdir(), 'graft-serve-stop-'));
    const { app: a } = await buildApp({ projectsDir: join(d, 'p'), modelsDirs: [SHARED!] });
    try {
      const id = (await a.inject({ method: 'POST', url: '/api/projects', payload: { name: 'stop', backbone: MOBILENET, classes: ['cats', 'dogs'] } })).json().id;
      for (const [cls, list] of [['cats', await photos('train', 'cats', 6, 40)], ['dogs', await photos('train', 'dogs', 6, 40)]] as const) {
        for (const im of list) assert.equal((await a.inject({ method: 'POST', url: `/api/projects/${id}/classes/${cls}/images`, payload: im.bytes, headers: { 'content-type': 'image/jpeg' } })).statusCode, 201);
      }
      const job = (await a.inject({ method: 'POST', url: `/api/projects/${id}/train`, payload: { mode: 'finetune', blocks: 1, epochs: 200, patience: 1000 } })).json();
      // Wait for the first finished epoch, then close the server.
      const t0 = Date.now();
      for (;;) {
        const j = (await a.inject({ url: `/api/jobs/${job.id}` })).json();
        assert.ok(!['failed', 'done'].includes(j.state), JSON.stringify(j));
        if (j.progress?.task === 'fine-tuning' && j.progress.done >= 1) break;
        assert.ok(Date.now() - t0 < 120_000, 'no epoch within 2 minutes');
        await new Promise((r) => setTimeout(r, 100));
      }
      await a.close();
      const runDirs = await readdir(join(d, 'p', id, 'runs'));
      assert.equal(runDirs.length, 1);
      const files = await readdir(join(d, 'p', id, 'runs', runDirs[0]!));
      assert.ok(!files.includes('config.json'), `not a finished run: ${files.join(', ')}`);
      assert.ok((await readdir(join(d, 'p', id, 'runs', runDirs[0]!, 'checkpoints'))).includes('last.ckpt'), files.join(','));
    } finally {
      await a.close();
      await rm(d, { recursive: true, force: true });
    }
  });

  test('graft serve --help, and a non-loopback host without a token is a usage error (exit 2)', async () => {
    const { spawnSync } = await import('node:child_process');
    const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'src', 'cli', 'entry.ts'), 'serve', ...args], { encoding: 'utf8', timeout: 60_000 });
    const help = cli('--help');
    assert.equal(help.status, 0);
    assert.match(help.stdout, /--token/);
    assert.match(help.stdout, /\/api\/openapi\.json/);
    const open = cli('--host', '0.0.0.0', '--port', '0');
    assert.equal(open.status, 2, open.stderr);
    assert.match(open.stderr, /--host 0\.0\.0\.0 .*--token/);
  });
});
