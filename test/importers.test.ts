/** Importers into ONNX, checked against an independent execution: the shared ONNX export of the same weights. */
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, symlink, writeFile, copyFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { loadTensor } from '../src/image/preprocess.js';
import { importTfjsLayers } from '../src/models/importers/tfjs-layers.js';
import { resolveModel } from '../src/models/resolve.js';
import { Backbone } from '../src/engine/backbone.js';
import { convertModel } from '../src/tasks/convert.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-import-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, 'same length');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('TF.js layers importer', { skip: SKIP_SHARED }, () => {
  const modelJson = () => join(SHARED!, 'models', 'mobilenet_v1_0.75_224', 'model.json');

  test('shared MobileNet v1 0.75: features and logits equal the shared ONNX within 1e-4 (golden input and a photo)', async () => {
    const imported = await ort.InferenceSession.create(await importTfjsLayers(modelJson()));
    const reference = await ort.InferenceSession.create(MOBILENET);
    const golden = new Float32Array(3 * 224 * 224);
    for (let c = 0; c < 3; c++) for (let h = 0; h < 224; h++) for (let w = 0; w < 224; w++) golden[c * 224 * 224 + h * 224 + w] = Math.sin(0.01 * (h * 224 + w) + c);
    const spec = (await resolveModel(MOBILENET)).spec;
    const photo = await loadTensor(join(SHARED!, 'data', 'imagenet', 'samples', 'n02123045_tabby.JPEG'), spec);
    for (const x of [golden, photo]) {
      const feeds = { input: new ort.Tensor('float32', x, [1, 3, 224, 224]) };
      const a = await imported.run(feeds);
      const r = await reference.run(feeds);
      for (const k of ['features', 'logits']) {
        const d = maxAbsDiff(a[k]!.data as Float32Array, r[k]!.data as Float32Array);
        assert.ok(d < 1e-4, `${k}: max abs diff ${d}`);
      }
    }
  });

  test('graft convert writes an ONNX file that graft resolves (features and logits found)', async () => {
    const out = join(dir, 'mnv1.onnx');
    const res = await convertModel(join(SHARED!, 'models', 'mobilenet_v1_0.75_224'), out);
    assert.deepEqual(res.outputs, ['features', 'logits', 'output']);
    const ref = await resolveModel(out, { preprocess: { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] } });
    assert.equal(ref.featureTensor, 'features');
    assert.equal(ref.logitsTensor, 'logits');
    assert.equal(ref.labels?.length, 1000);
  });

  test('the catalog entry mobilenet_v1_0.75_224 pulls the TF.js files from a mirror and imports them', async () => {
    const saved = { home: process.env.GRAFT_HOME, mirror: process.env.GRAFT_MIRROR };
    process.env.GRAFT_HOME = join(dir, 'home');
    process.env.GRAFT_MIRROR = join(SHARED!, 'models');
    try {
      const bb = await Backbone.load('mobilenet_v1_0.75_224');
      // The catalog records the TF.js release's own pipeline (the whole image squashed to 224); the bare ONNX file
      // says nothing about cropping and gets graft's default, so compare with the same crop.
      assert.equal(bb.spec.cropPct, null);
      const ref = await Backbone.load(MOBILENET, { preprocess: { cropPct: null } });
      try {
        assert.deepEqual(bb.spec, ref.spec);
        const files = ['n02119022_red_fox.JPEG', 'n01443537_goldfish.JPEG'].map((f) => join(SHARED!, 'data', 'imagenet', 'samples', f));
        const a = await bb.logits(files, { batchSize: 2 });
        const r = await ref.logits(files, { batchSize: 2 });
        const d = maxAbsDiff(a.features, r.features);
        assert.ok(d < 1e-4, `logits max abs diff ${d}`);
      } finally {
        await bb.dispose();
        await ref.dispose();
      }
    } finally {
      if (saved.home === undefined) delete process.env.GRAFT_HOME;
      else process.env.GRAFT_HOME = saved.home;
      if (saved.mirror === undefined) delete process.env.GRAFT_MIRROR;
      else process.env.GRAFT_MIRROR = saved.mirror;
    }
  });

  test('untrusted model files: shard path leaving the folder, missing shard, wrong-size shard, garbage JSON', async () => {
    const src = join(SHARED!, 'models', 'mobilenet_v1_0.75_224');
    const json = JSON.parse(await readFile(modelJson(), 'utf8'));
    const copyModel = async (name: string, edit: (j: typeof json) => void) => {
      const d = join(dir, name);
      await mkdir(d, { recursive: true });
      for (const f of await readdir(src)) if (f.startsWith('group')) await copyFile(join(src, f), join(d, f));
      const j = structuredClone(json);
      edit(j);
      await writeFile(join(d, 'model.json'), JSON.stringify(j));
      return join(d, 'model.json');
    };
    const outside = await copyModel('escape', (j) => (j.weightsManifest[0].paths = ['../../../etc/passwd']));
    await assert.rejects(importTfjsLayers(outside), /refused file path '..\/..\/..\/etc\/passwd': it leaves the model's folder/);
    const missing = await copyModel('missing', (j) => (j.weightsManifest[0].paths = ['group999-shard1of1']));
    await assert.rejects(importTfjsLayers(missing), /group999-shard1of1' is missing/);
    // Another group's shard under a name of its own (a shard listed twice is refused before sizes are compared).
    const wrong = await copyModel('wrong', (j) => (j.weightsManifest[0].paths = ['wrong-shard']));
    await copyFile(join(src, json.weightsManifest[1].paths[0]), join(wrong, '..', 'wrong-shard'));
    await assert.rejects(importTfjsLayers(wrong), /weight shards \[wrong-shard\] hold \d+ bytes, the manifest needs \d+ \(truncated/);
    const twice = await copyModel('twice', (j) => (j.weightsManifest[0].paths = [j.weightsManifest[1].paths[0]]));
    await assert.rejects(importTfjsLayers(twice), /shard 'group2-shard1of1' is listed twice/);
    const linked = join(dir, 'linked');
    await mkdir(linked);
    await writeFile(join(linked, 'model.json'), JSON.stringify(json));
    for (const f of await readdir(src)) if (f.startsWith('group')) await symlink(join(src, f), join(linked, f));
    await assert.rejects(importTfjsLayers(join(linked, 'model.json')), /link leading out of the model's folder/);
    const garbage = join(dir, 'garbage.json');
    await writeFile(garbage, '{"this is": not json');
    await assert.rejects(importTfjsLayers(garbage), /not a TF.js model\.json/);
    const truncatedDir = join(dir, 'truncated');
    await mkdir(truncatedDir);
    for (const f of await readdir(src)) if (f !== 'model.json') await copyFile(join(src, f), join(truncatedDir, f));
    await writeFile(join(truncatedDir, 'model.json'), JSON.stringify(json));
    const shard = join(truncatedDir, json.weightsManifest[0].paths[0]);
    const bytes = await readFile(shard);
    await writeFile(shard, bytes.subarray(0, bytes.length - 8));
    await assert.rejects(importTfjsLayers(join(truncatedDir, 'model.json')), /truncated or wrong shard|bytes/);
  });
});
