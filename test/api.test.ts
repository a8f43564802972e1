/**
 * The public API as a TypeScript user meets it: everything imported from the package entry (src/index.ts, i.e.
 * `import … from 'graft'`), the whole lesson in a few lines each on ../shared Cats vs Dogs — extract, a head on frozen
 * features, fine-tuning, export, predict (files and an in-memory Classifier), the ideal image, an attack.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as graft from '../src/index.js';
import { attack, Classifier, dream, evaluate, exportModel, extract, finetune, predict, train } from '../src/index.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

let dir: string;
let data: string;
const cvd = SHARED ? join(SHARED, 'data', 'cats_vs_dogs') : '';

describe('the public API: the whole lesson', { skip: SKIP_SHARED }, () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'graft-api-'));
    data = join(dir, 'data');
    for (const cls of ['cats', 'dogs']) {
      await mkdir(join(data, cls), { recursive: true });
      for (const n of (await readdir(join(cvd, 'train', cls))).sort().slice(0, 12)) await symlink(join(cvd, 'train', cls, n), join(data, cls, n));
    }
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  test('about 30 names, each documented by its type; no engine internals at the top', () => {
    const names = Object.keys(graft);
    assert.ok(names.length <= 35, `${names.length} names: ${names.join(', ')}`);
    for (const n of ['extract', 'train', 'finetune', 'evaluate', 'predict', 'exportModel', 'dream', 'attack', 'explain', 'featureMaps', 'Classifier', 'serve']) assert.ok(names.includes(n), n);
    for (const n of ['GradientProgram', 'buildGradient', 'extractFeatures', 'trainHead']) assert.ok(!names.includes(n), `${n} belongs in graft/advanced`);
  });

  test('extract → train → fine-tune → export → predict → dream → attack', async () => {
    const cache = join(dir, 'cache');
    const feats = await extract(MOBILENET, data, { out: join(dir, 'feats'), cache });
    assert.equal(feats.n, 24);
    assert.equal(feats.dim, 768);

    const run = await train({ data, model: MOBILENET, out: join(dir, 'run'), cache, head: { epochs: 50 } });
    assert.equal(run.counts.train + run.counts.val, 24);

    const ft = await finetune({ data, model: MOBILENET, out: join(dir, 'ft'), cache, blocks: 1, finetune: { epochs: 2 } });
    assert.equal(ft.history.length, 2);

    const exported = await exportModel(join(dir, 'run'), join(dir, 'cats-dogs.onnx'));
    assert.deepEqual(exported.classes, ['cats', 'dogs']);

    const held = join(cvd, 'validation', 'dogs', (await readdir(join(cvd, 'validation', 'dogs'))).sort()[0]!);
    const viaFiles = await predict(join(dir, 'run'), [held], { cache, top: 1 });
    const clf = await Classifier.load(join(dir, 'cats-dogs.onnx'));
    try {
      const [fromPath, fromBytes] = await clf.predict([held, await readFile(held)], { top: 2 });
      assert.equal(fromPath!.top[0]!.label, viaFiles.predictions[0]!.top[0]!.label);
      assert.ok(Math.abs(fromPath!.top[0]!.probability - viaFiles.predictions[0]!.top[0]!.probability) < 1e-4, 'exported model = run');
      assert.deepEqual(fromBytes!.top, fromPath!.top);
      const [bad] = await clf.predict([Buffer.from('not an image')]);
      assert.equal(bad!.top.length, 0);
      assert.match(bad!.error!, /not|unsupported|image/i);
    } finally {
      await clf.dispose();
    }
    const ev = await evaluate(join(dir, 'run'), join(cvd, 'validation'), { cache, out: join(dir, 'eval') });
    assert.ok(ev.evaluation.accuracy > 0.7, `validation accuracy ${ev.evaluation.accuracy}`);

    const ideal = await dream(join(dir, 'run'), { className: 'dogs', steps: 10, out: join(dir, 'ideal.png') });
    assert.equal(ideal.class.name, 'dogs');

    const adv = await attack(join(dir, 'run'), [held], { method: 'pgd', eps: [4 / 255], target: 'cats', out: join(dir, 'adv') });
    assert.equal(adv.results.length, 1);
    assert.equal(adv.results[0]!.after[0]!.class, 'cats');
  });
});
