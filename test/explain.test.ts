/**
 * Explanations: each CAM method on hand-made activations, the geometry that carries a map onto the photo, a model
 * built here whose class evidence sits in one known quadrant (every method must put its maximum there), and
 * `graft explain` on Cats vs Dogs validation photos with a run trained here: removing the 20% most relevant pixels
 * must cost much more class probability than removing a random 20%.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, symlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { buildOnnx, type GraphSpec } from './helpers/onnx-builder.js';
import { parseOnnx } from '../src/models/onnx-file.js';
import onnxProto from 'onnx-proto';
import { eigenCam, gradCam, gradCamPlusPlus, type LayerMaps } from '../src/vision/cam.js';
import { mapOnPhoto, upsample } from '../src/vision/explain.js';
import { explainTask } from '../src/tasks/explain.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

const root = join(import.meta.dirname, '..');
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-explain-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

describe('CAM methods on hand-made maps', () => {
  // Two channels on a 2x2 grid: channel 0 fires at cell 0 and 3, channel 1 at cell 1.
  const maps = (gradient: number[]): LayerMaps => ({ k: 2, h: 2, w: 2, activations: Float32Array.of(2, 0, 0, 1, 0, 3, 0, 0), gradient: Float32Array.from(gradient) });

  test('Grad-CAM: channel weights are the mean gradient; negative evidence is cut', () => {
    const cam = gradCam(maps([1, 1, 1, 1, -2, -2, -2, -2]));
    // weights 1 and -2: cells = [2, -6, 0, 1] → ReLU
    assert.deepEqual([...cam], [2, 0, 0, 1]);
  });

  test('Grad-CAM++: only positive gradients weigh, by α = g² / (2g² + ΣA·g³)', () => {
    const cam = gradCamPlusPlus(maps([0.5, 0, 0, 0, 0, 0, 0, 0]));
    const alpha = 0.25 / (2 * 0.25 + 3 * 0.125 + 1e-7); // ΣA of channel 0 = 3
    assert.ok(Math.abs(cam[0]! - 2 * alpha * 0.5) < 1e-6);
    assert.ok(Math.abs(cam[3]! - 1 * alpha * 0.5) < 1e-6);
    assert.equal(cam[1], 0);
  });

  test('EigenCAM: the first principal component, oriented like the activations', () => {
    // One channel varies (cells 0 and 3 strong), the other is flat: the component follows channel 0.
    const m: LayerMaps = { k: 2, h: 2, w: 2, activations: Float32Array.of(5, 0, 0, 5, 1, 1, 1, 1) };
    const cam = eigenCam(m);
    // The unit component is ±[0.5, -0.5, -0.5, 0.5]: oriented positive on the strong cells, the rest cut.
    assert.ok(Math.abs(cam[0]! - 0.5) < 1e-6 && Math.abs(cam[3]! - 0.5) < 1e-6, `cells 0 and 3: ${[...cam]}`);
    assert.equal(cam[1], 0);
    assert.equal(cam[2], 0);
  });

  test('upsample keeps corners and is bilinear between; mapOnPhoto puts the crop where the model looked', () => {
    const up = upsample(Float32Array.of(0, 1, 2, 3), 2, 2, 4, 4);
    assert.equal(up[0], 0);
    assert.equal(up[15], 3);
    assert.ok(Math.abs(up[5]! - 0.75) < 1e-6); // cell (1,1) samples (0.25, 0.25) of the 2x2 grid
    // A 10x10 photo resized to 10x10 and centre-cropped to 6x6 (left = top = 2): outside the crop the map is 0.
    const input = new Float32Array(36).fill(1);
    const onPhoto = mapOnPhoto(input, { sx: 1, sy: 1, left: 2, top: 2, width: 6, height: 6 }, 10, 10);
    assert.equal(onPhoto[0], 0);
    assert.equal(onPhoto[5 * 10 + 5], 1);
    assert.equal(onPhoto[9 * 10 + 9], 0);
  });
});

/** input [N,3,16,16] → 1x1 conv (red detector, blue detector) → Relu ('act') → GAP → Gemm: class 0 = red, 1 = blue. */
function quadrantModel(): GraphSpec {
  return {
    inputs: [{ name: 'input', shape: ['batch', 3, 16, 16] }],
    outputs: ['features', 'logits'],
    initializers: [
      { name: 'w', dims: [2, 3, 1, 1], values: [1, -1, -1, -1, -1, 1] },
      { name: 'fc_w', dims: [2, 2], values: [4, 0, 0, 4] },
      { name: 'fc_b', dims: [2], values: [0, 0] },
    ],
    nodes: [
      { op: 'Conv', name: 'detect', inputs: ['input', 'w'], outputs: ['pre'] },
      { op: 'Relu', name: 'act', inputs: ['pre'], outputs: ['act'] },
      { op: 'GlobalAveragePool', name: 'gap', inputs: ['act'], outputs: ['g'] },
      { op: 'Flatten', name: 'flatten', inputs: ['g'], outputs: ['features'] },
      { op: 'Gemm', name: 'fc', inputs: ['features', 'fc_w', 'fc_b'], outputs: ['logits'] },
    ],
  };
}

/** A 64x64 grey photo with a red square in the top-right quadrant (and optionally a blue one bottom-left). */
async function quadrantPhoto(path: string, blue: boolean): Promise<void> {
  const data = Buffer.alloc(64 * 64 * 3, 128);
  for (let y = 0; y < 64; y++)
    for (let x = 0; x < 64; x++) {
      const i = (y * 64 + x) * 3;
      if (x >= 40 && x < 56 && y >= 8 && y < 24) data.set([230, 20, 20], i);
      if (blue && x >= 8 && x < 24 && y >= 40 && y < 56) data.set([20, 20, 230], i);
    }
  await sharp(data, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(path);
}

/** Where the heat map's brightest pixel is: 'TR', 'TL', 'BR', 'BL'. */
async function brightestQuadrant(png: string): Promise<string> {
  assert.equal((await sharp(png).metadata()).channels, 1, 'an 8-bit grayscale PNG');
  const { data, info } = await sharp(png).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  let best = 0;
  for (let i = 1; i < info.width * info.height; i++) if (data[i]! > data[best]!) best = i;
  const x = best % info.width;
  const y = Math.floor(best / info.width);
  return `${y < info.height / 2 ? 'T' : 'B'}${x < info.width / 2 ? 'L' : 'R'}`;
}

describe('a model whose evidence sits in a known quadrant', () => {
  test('every method puts its maximum on the red square; gradient methods follow the class asked for', async () => {
    const model = join(dir, 'quadrant.onnx');
    const m = parseOnnx(buildOnnx(quadrantModel()), model);
    m.proto.metadataProps = [
      { key: 'Image.NominalPixelRange', value: 'Normalized_0_1' },
      { key: 'Image.BitmapPixelFormat', value: 'Rgb8' },
    ] as never;
    await writeFile(model, onnxProto.onnx.ModelProto.encode(m.proto).finish());
    await writeFile(`${model}.json`, JSON.stringify({ labels: ['red', 'blue'] }));
    const red = join(dir, 'red.png');
    const both = join(dir, 'both.png');
    await quadrantPhoto(red, false);
    await quadrantPhoto(both, true);
    for (const method of ['gradcam', 'gradcam++', 'scorecam', 'eigencam'] as const) {
      const out = join(dir, `q-${method}`);
      const res = await explainTask(model, [red], { method, out, layer: 'act', metrics: false });
      assert.equal(res.results[0]!.class, 'red');
      assert.deepEqual(res.results[0]!.grid, { h: 16, w: 16 });
      assert.equal(await brightestQuadrant(res.results[0]!.files.heatmap), 'TR', method);
      const meta = await sharp(res.results[0]!.files.overlay).metadata();
      assert.deepEqual([meta.width, meta.height, meta.channels], [64, 64, 3]);
    }
    for (const [cls, where] of [['red', 'TR'], ['blue', 'BL']] as const) {
      for (const method of ['gradcam', 'gradcam++'] as const) {
        const res = await explainTask(model, [both], { method, out: join(dir, `both-${method}-${cls}`), class: cls, metrics: false });
        assert.equal(res.layer, 'act', 'the default layer is the last spatial map before pooling');
        assert.equal(await brightestQuadrant(res.results[0]!.files.heatmap), where, `${method} for ${cls}`);
      }
    }
    // Seeded: the same call twice writes the same map.
    const a = await explainTask(model, [both], { method: 'gradcam', out: join(dir, 'again-1'), metrics: true, seed: 3 });
    const b = await explainTask(model, [both], { method: 'gradcam', out: join(dir, 'again-2'), metrics: true, seed: 3 });
    assert.ok((await readFile(a.results[0]!.files.heatmap)).equals(await readFile(b.results[0]!.files.heatmap)));
    assert.deepEqual(a.results[0]!.faithfulness, b.results[0]!.faithfulness);
  });
});

describe('graft explain on Cats vs Dogs (shared MobileNet, a run trained here)', { skip: SKIP_SHARED }, () => {
  test('for every method, the 20% most relevant pixels matter much more than a random 20%', async () => {
    const cvd = join(SHARED!, 'data', 'cats_vs_dogs');
    // A small frozen-head run: 60 photos a class.
    const train = join(dir, 'train');
    for (const c of ['cats', 'dogs']) {
      await mkdir(join(train, c), { recursive: true });
      for (const f of (await readdir(join(cvd, 'train', c))).sort().slice(0, 60)) await symlink(join(cvd, 'train', c, f), join(train, c, f));
    }
    const run = join(dir, 'run');
    const env = { ...process.env, GRAFT_HOME: join(dir, 'home') };
    const t = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), 'train', train, '--model', MOBILENET, '--out', run, '--quiet'], { env, encoding: 'utf8' });
    assert.equal(t.status, 0, t.stderr);
    const photos = join(dir, 'val');
    await mkdir(photos);
    for (const c of ['cats', 'dogs']) for (const f of (await readdir(join(cvd, 'validation', c))).sort().slice(0, 6)) await symlink(join(cvd, 'validation', c, f), join(photos, f));
    const report: string[] = [];
    for (const method of ['gradcam', 'gradcam++', 'eigencam', 'scorecam'] as const) {
      // Score-CAM runs one forward pass per channel (768 here): three photos keep it to half a minute.
      const inputs = method === 'scorecam' ? (await readdir(photos)).sort().filter((_, i) => i % 4 === 0).map((f) => join(photos, f)) : [photos];
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), 'explain', run, ...inputs, '--method', method, '--out', join(dir, `cvd-${method}`), '--json', '--quiet'], { env, encoding: 'utf8', maxBuffer: 1 << 26 });
      assert.equal(r.status, 0, r.stderr);
      const res = JSON.parse(r.stdout);
      const s = res.summary;
      report.push(`${method}: ${(100 * s.drop20).toFixed(1)} vs ${(100 * s.drop20Random).toFixed(1)} points (n=${s.n})`);
      assert.ok(s.drop20 > 1.5 * s.drop20Random, `${method}: top 20% removed costs ${s.drop20}, random 20% ${s.drop20Random}`);
      assert.ok(s.insertionAuc > s.randomInsertionAuc, `${method}: insertion beats random`);
      for (const item of res.results) {
        const photo = await sharp(item.image).rotate().metadata();
        const heat = await sharp(item.files.heatmap).metadata();
        assert.deepEqual([heat.width, heat.height], [photo.width, photo.height], 'the heat map is in the photo\'s grid');
      }
    }
    console.log(report.join('\n'));
  });
});
