/**
 * The page of `graft serve` in a real browser: playwright-core driving Debian's chromium (GRAFT_CHROMIUM, else
 * `chromium`/`chromium-browser` on PATH; .ci/run installs it with apt; no browser download). One walk through the
 * lesson on ../shared Cats vs Dogs: create a project, two classes, upload 12 + 12 photos through the file input, train,
 * open a confusion-matrix cell, predict a held-back photo, look inside, an ideal image, attack, export (and run the
 * exported Node snippet). Screenshots go to test-artifacts/web/.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { buildApp } from '../src/server/app.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

const ROOT = resolve(import.meta.dirname, '..');
const ARTIFACTS = join(ROOT, 'test-artifacts', 'web');

function findChromium(): string | undefined {
  if (process.env.GRAFT_CHROMIUM) return existsSync(process.env.GRAFT_CHROMIUM) ? process.env.GRAFT_CHROMIUM : undefined;
  try {
    return execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).trim().split('\n')[0] || undefined;
  } catch {
    return undefined;
  }
}

const CHROMIUM = findChromium();
const SKIP: string | false = !CHROMIUM
  ? 'no chromium found (set GRAFT_CHROMIUM or apt-get install chromium); the browser tests skip'
  : SKIP_SHARED
    ? SKIP_SHARED
    : !existsSync(join(ROOT, 'dist', 'web', 'index.html'))
      ? 'the page is not built (npm run build:web); the browser tests skip'
      : false;
if (SKIP) console.log(`# web.test.ts: ${SKIP}`);

const cvd = SHARED ? join(SHARED, 'data', 'cats_vs_dogs') : '';
async function photos(split: 'train' | 'validation', cls: 'cats' | 'dogs', n: number): Promise<string[]> {
  return (await readdir(join(cvd, split, cls))).sort().slice(0, n).map((f) => join(cvd, split, cls, f));
}

/** Every <img> under the locator has decoded pixels. */
async function imagesLoaded(loc: Locator, timeout = 15_000): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const sizes = await loc.locator('img').evaluateAll((imgs) => imgs.map((i) => (i as HTMLImageElement).complete && (i as HTMLImageElement).naturalWidth > 0));
    if (sizes.length && sizes.every(Boolean)) return sizes.length;
    if (Date.now() - t0 > timeout) throw new Error(`images not loaded after ${timeout} ms: ${JSON.stringify(sizes)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('the page in a real browser', { skip: SKIP }, () => {
  let dir: string;
  let app: FastifyInstance;
  let browser: Browser;
  let page: Page;
  let url: string;
  const pageErrors: string[] = [];
  const outside: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'graft-web-'));
    process.env.GRAFT_HOME = join(dir, 'home');
    await mkdir(ARTIFACTS, { recursive: true });
    ({ app } = await buildApp({ projectsDir: join(dir, 'projects'), modelsDirs: [SHARED!] }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const addr = app.server.address();
    url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'], timeout: 30_000 });
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    context.setDefaultTimeout(20_000);
    page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(m.text());
    });
    // The page must work offline: anything not from the graft server is recorded and refused.
    await page.route('**/*', (route) => {
      const u = route.request().url();
      if (u.startsWith(url) || u.startsWith('data:') || u.startsWith('blob:')) return route.continue();
      outside.push(u);
      return route.abort();
    });
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await app?.close().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const projectId = () => page.evaluate(() => localStorage.getItem('graft.project'));

  test('create a project, upload Cats vs Dogs, train, evaluate, predict, attack, export', { timeout: 180_000 }, async () => {
    // A section as laid out on the page (clipped from a full-page capture: element captures stop at the viewport).
    const shot = async (name: string, loc?: Locator) => {
      if (!loc) return page.screenshot({ path: join(ARTIFACTS, name) });
      await loc.scrollIntoViewIfNeeded();
      const box = await loc.boundingBox();
      const scroll = await page.evaluate(() => ({ x: scrollX, y: scrollY }));
      if (!box) throw new Error(`${name}: nothing to capture`);
      return page.screenshot({ path: join(ARTIFACTS, name), fullPage: true, clip: { x: box.x + scroll.x, y: box.y + scroll.y, width: box.width, height: box.height } });
    };

    await page.goto(url, { timeout: 20_000 });
    await page.locator('#server-state', { hasText: 'server ready' }).waitFor();
    await shot('00-empty.png');

    // 1. A project with the shared MobileNet as its backbone, two classes, photos through the file input.
    if (!(await page.getByLabel('New project name', { exact: true }).isVisible())) await page.getByText('New project', { exact: true }).click();
    await page.getByLabel('New project name', { exact: true }).fill('pets');
    await page.getByLabel('Backbone', { exact: true }).fill(MOBILENET);
    await page.getByRole('button', { name: 'Create project' }).click();
    await page.locator('#current-project', { hasText: 'pets' }).waitFor();
    for (const cls of ['cats', 'dogs']) {
      await page.getByLabel('New class', { exact: true }).fill(cls);
      await page.getByRole('button', { name: 'Add class' }).click();
      await page.locator(`.class-card[data-class="${cls}"]`).waitFor();
    }
    for (const cls of ['cats', 'dogs'] as const) {
      const files = await photos('train', cls, 12);
      await page.locator(`.class-card[data-class="${cls}"] input.file-input`).setInputFiles(files);
      await page.locator(`.class-card[data-class="${cls}"] .count`, { hasText: '12 photos' }).waitFor({ timeout: 30_000 });
    }
    const cats = page.locator('.class-card[data-class="cats"]');
    assert.equal(await imagesLoaded(cats.locator('.thumbs')), 12, 'twelve cat thumbnails');
    assert.match(await cats.locator('.notice').innerText(), /Added 12 photos to cats/);
    await shot('01-classes.png', page.locator('#classes'));

    // 2. Train a frozen head; the curves come from the job's epoch events.
    await page.locator('#train-start').click();
    await page.locator('#train-state', { hasText: /^Done/ }).waitFor({ timeout: 90_000 });
    assert.ok((await page.locator('#train-charts path.chart-line').count()) >= 2, 'loss and accuracy curves drawn');
    assert.match(await page.locator('#train-state').innerText(), /validation accuracy \d+/);
    await shot('02-train.png', page.locator('#train'));

    // 3. Evaluate: metrics, then the biggest confusion-matrix cell opens its photos.
    await page.locator('#eval-accuracy').waitFor({ timeout: 60_000 });
    const runId = (await page.locator('#run-select').inputValue()).trim();
    assert.match(runId, /^run-/);
    const cells = page.locator('#confusion button.cell');
    assert.equal(await cells.count(), 4);
    const counts = await cells.evaluateAll((bs) => bs.map((b) => Number(b.textContent)));
    const biggest = counts.indexOf(Math.max(...counts));
    assert.ok(counts[biggest]! > 0);
    // By keyboard: the cells are real buttons.
    await cells.nth(biggest).focus();
    await page.keyboard.press('Enter');
    assert.equal(await cells.nth(biggest).getAttribute('aria-pressed'), 'true');
    const cell = page.locator('#cell-photos');
    await cell.locator('h4').waitFor();
    assert.equal(await cell.locator('figure').count(), counts[biggest]);
    assert.equal(await imagesLoaded(cell), counts[biggest]);
    const t = await cells.nth(biggest).getAttribute('data-true');
    const pr = await cells.nth(biggest).getAttribute('data-predicted');
    assert.match(await cell.locator('figcaption').first().innerText(), new RegExp(`true ${t}[\\s\\S]*predicted ${pr}`));
    await shot('03-evaluate.png', page.locator('#evaluate'));

    // 4. Predict a held-back validation photo with the project's newest run.
    // A clear cat from the validation folder, never uploaded (the first few are hard for a head trained on 24 photos).
    const heldBack = join(cvd, 'validation', 'cats', 'cat.2003.jpg');
    const predict = page.locator('#predict');
    await predict.getByLabel('Model').locator('option:checked', { hasText: 'pets: newest run' }).waitFor({ state: 'attached' });
    await predict.locator('input.file-input').setInputFiles(heldBack);
    await page.locator('#predict-top-label').waitFor({ timeout: 30_000 });
    assert.equal(await page.locator('#predict-top-label').innerText(), 'cats');
    assert.equal(await page.locator('#predict-result .bars li').count(), 2, 'two classes, two bars');
    await shot('04-predict.png', predict);

    // 5. Look inside: the default layers (early, middle, late) of the run's backbone for that photo, then one picked.
    const inside = page.locator('#inside');
    await inside.locator('#layer-select option:nth-child(3)').waitFor({ state: 'attached', timeout: 30_000 });
    await inside.locator('input.file-input').setInputFiles(heldBack);
    await inside.locator('#featuremaps figure').nth(2).waitFor({ timeout: 30_000 });
    assert.equal(await imagesLoaded(inside.locator('#featuremaps')), 3);
    await inside.getByRole('button', { name: 'Next layer' }).click();
    await page.waitForFunction(() => document.querySelectorAll('#featuremaps figure').length === 1, undefined, { timeout: 30_000 });
    assert.match(await inside.locator('#featuremaps figcaption').innerText(), new RegExp((await inside.locator('#layer-select').inputValue()).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    await shot('05-look-inside.png', inside);

    // 6. The ideal image of a class, a short run: pictures arrive as it forms, then the final probability.
    const dream = page.locator('#dream');
    await dream.locator('#dream-class option[value="cats"]').waitFor({ state: 'attached', timeout: 30_000 });
    await dream.locator('#dream-steps').fill('20');
    await dream.locator('#dream-start').click();
    await dream.locator('.job-state', { hasText: /^Done/ }).waitFor({ timeout: 60_000 });
    assert.match(await dream.locator('.job-state').innerText(), /p\(cats\) = \d/);
    assert.equal(await imagesLoaded(dream.locator('.dream')), 1);
    await shot('06-ideal-image.png', dream);

    // 7. Attack the same photo towards the other class with ε = 8/255.
    const attack = page.locator('#attack');
    await attack.locator('#attack-target option[value="dogs"]').waitFor({ state: 'attached', timeout: 60_000 });
    await attack.locator('#attack-target').selectOption('dogs');
    await attack.locator('#attack-eps').fill('8');
    assert.equal(await attack.locator('#attack-eps-value').innerText(), '8 / 255');
    await attack.locator('input.file-input').setInputFiles(heldBack);
    await attack.locator('#attack-start').click();
    const figs = page.locator('#attack-result figure');
    await figs.nth(2).waitFor({ timeout: 60_000 });
    assert.equal(await figs.count(), 3);
    assert.equal(await imagesLoaded(page.locator('#attack-result')), 3);
    assert.deepEqual(await figs.locator('figcaption b').allInnerTexts(), ['Original', 'Adversarial', 'Perturbation']);
    assert.equal(await figs.nth(0).locator('.bar-label').first().innerText(), 'cats', 'the original is a cat to the model');
    assert.equal(await figs.nth(1).locator('.bar-label').first().innerText(), 'dogs', 'the attacked photo is a dog to the model');
    assert.match(await attack.locator('.notice').innerText(), /Fooled/);
    await attack.scrollIntoViewIfNeeded();
    await shot('07-attack.png', attack);

    // 8. Export: download buttons and the snippets.
    await page.locator('#export-start').click();
    await page.locator('#export .snippet').first().waitFor({ timeout: 60_000 });
    assert.equal(await page.locator('#export .snippet').count(), 2);
    assert.match(await page.locator('#export .snippet pre').first().innerText(), /onnxruntime-node/);
    assert.ok(await page.getByRole('button', { name: 'Download model.onnx', exact: true }).isVisible());
    await shot('08-export.png', page.locator('#export'));

    // The Node snippet, run as printed next to the downloaded files, agrees with the server's prediction.
    const node = await page.locator('#export .snippet pre').first().innerText();
    const exportDir = join(ARTIFACTS, 'export');
    await mkdir(exportDir, { recursive: true });
    for (const f of ['model.onnx', 'model.onnx.json']) {
      const res = await fetch(`${url}/api/projects/${await projectId()}/runs/${runId}/export/${f}`);
      assert.equal(res.status, 200);
      await writeFile(join(exportDir, f), Buffer.from(await res.arrayBuffer()));
    }
    await writeFile(join(exportDir, 'snippet.mjs'), node);
    const printed = execFileSync(process.execPath, ['snippet.mjs', heldBack], { cwd: exportDir, encoding: 'utf8', timeout: 60_000 });
    assert.match(printed, /label: 'cats', probability: 0\.99/);

    await page.screenshot({ path: join(ARTIFACTS, '09-page.png'), fullPage: true });
    assert.deepEqual(outside, [], 'no requests outside the graft server');
    assert.deepEqual(pageErrors, [], 'no errors in the page');
  });

  test('with --token: the page takes #token=, sends it, loads thumbnails through it; a webcam photo', { timeout: 60_000 }, async () => {
    const secret = 'correct-horse-battery';
    const { app: locked } = await buildApp({ projectsDir: join(dir, 'locked'), modelsDirs: [SHARED!], token: secret });
    await locked.listen({ port: 0, host: '127.0.0.1' });
    const addr = locked.server.address();
    const base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    try {
      const auth = { authorization: `Bearer ${secret}` };
      const p = (await (await fetch(`${base}/api/projects`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'locked', backbone: MOBILENET, classes: ['cats'] }) })).json()) as { id: string };
      for (const f of await photos('train', 'cats', 2)) {
        const { readFile } = await import('node:fs/promises');
        const r = await fetch(`${base}/api/projects/${p.id}/classes/cats/images?name=x.jpg`, { method: 'POST', headers: auth, body: await readFile(f) });
        assert.equal(r.status, 201);
      }
      const pg = await ctx.newPage();
      pg.setDefaultTimeout(20_000);
      // Without the token: the server's own message, and a field to give it.
      await pg.goto(base);
      await pg.locator('#token-input').waitFor();
      assert.match(await pg.locator('#banner .notice').innerText(), /needs a token/);
      // With it in the fragment: it moves to sessionStorage, out of the address bar, and every request carries it.
      await pg.goto(`${base}/#token=${secret}`);
      await pg.locator('#server-state', { hasText: 'token set' }).waitFor();
      assert.equal(new URL(pg.url()).hash, '');
      await pg.locator('#current-project', { hasText: 'locked' }).waitFor();
      assert.equal(await imagesLoaded(pg.locator('.class-card[data-class="cats"] .thumbs')), 2);
      // The webcam (chromium's fake camera): snap one frame into the class.
      await pg.locator('.class-card[data-class="cats"]').getByRole('button', { name: 'Webcam…' }).click();
      const snap = pg.getByRole('button', { name: 'Take photo' });
      await pg.waitForFunction(() => !(document.querySelector('dialog.webcam .primary') as HTMLButtonElement | null)?.disabled, undefined, { timeout: 20_000 });
      await pg.waitForFunction(() => (document.querySelector('dialog.webcam video') as HTMLVideoElement | null)?.videoWidth! > 0, undefined, { timeout: 20_000 });
      await pg.screenshot({ path: join(ARTIFACTS, '11-webcam.png') });
      await snap.click();
      await pg.locator('.class-card[data-class="cats"] .count', { hasText: '3 photos' }).waitFor({ timeout: 20_000 });
      assert.match(await pg.locator('dialog.webcam [role="status"]').innerText(), /1 photo taken/);
      await pg.getByRole('button', { name: 'Done' }).click();
      assert.equal(await pg.locator('dialog.webcam').count(), 0, 'the dialog closed');
      assert.equal(await imagesLoaded(pg.locator('.class-card[data-class="cats"] .thumbs')), 3);
      await pg.screenshot({ path: join(ARTIFACTS, '10-token.png') });
    } finally {
      await ctx.close().catch(() => undefined);
      await locked.close().catch(() => undefined);
    }
  });
});
