/** graft featuremaps: maps of inner layers for one image, the grid PNGs, layer shapes, the CLI command. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import onnxProto from 'onnx-proto';
import sharp from 'sharp';
import { GraftError, ImageError } from '../src/errors.js';
import { loadTensor } from '../src/image/preprocess.js';
import { defaultSpec } from '../src/image/spec.js';
import { layers } from '../src/tasks/layers.js';
import { viridis, viridisTable } from '../src/vision/colormap.js';
import { featureMapPaths, renderFeatureMapPng, tileSize, writeFeatureMapPngs } from '../src/vision/featuremap-png.js';
import { closeMatches, featureMaps, pickDefaultLayers, tensorLayout } from '../src/vision/featuremaps.js';
import { buildLoaded } from './helpers/onnx-builder.js';
import { loadImageAndTensor } from '../src/image/preprocess.js';
import { MOBILENET, SHARED, SKIP_SHARED } from './helpers/shared.js';

const { onnx } = onnxProto;
const root = join(import.meta.dirname, '..');
let dir: string;

// ---------------------------------------------------------------------------------------------------------------------
// A tiny conv net: input 8x8 -> conv1 (3x3, no padding, 3->4) -> relu1 [4,6,6] -> conv2 (1x1, stride 2, 4->6) ->
// relu2 [6,3,3] -> GlobalAveragePool -> Flatten = features. The NHWC twin takes [N,8,8,3], transposes to NCHW for the
// convs and back to NHWC after relu2 (relu_nhwc [1,3,3,6]).

const S = 8, C1 = 4, C2 = 6;
const W1 = (j: number, k: number, dy: number, dx: number) => 0.3 * Math.sin(1 + j * 7 + k * 3 + dy + 0.5 * dx);
const B1 = (j: number) => 0.4 * (j - 1.5);
const W2 = (m: number, j: number) => Math.cos(m * 4 + j);
const B2 = (m: number) => 0.05 * m;

function vi(name: string, dims: (number | string)[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({ elemType: 1, shape: onnx.TensorShapeProto.create({ dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) }) }),
    }),
  });
}
const init = (name: string, dims: number[], values: number[]) => onnx.TensorProto.create({ name, dims, dataType: 1, floatData: values });
const node = (name: string, opType: string, input: string[], output: string[], attribute: object[] = []) => onnx.NodeProto.create({ name, opType, input, output, attribute });
const ints = (name: string, v: number[]) => ({ name, type: 7, ints: v });

function convNet(layout: 'NCHW' | 'NHWC'): Uint8Array {
  const w1: number[] = [];
  for (let j = 0; j < C1; j++) for (let k = 0; k < 3; k++) for (let dy = 0; dy < 3; dy++) for (let dx = 0; dx < 3; dx++) w1.push(W1(j, k, dy, dx));
  const w2: number[] = [];
  for (let m = 0; m < C2; m++) for (let j = 0; j < C1; j++) w2.push(W2(m, j));
  const nhwc = layout === 'NHWC';
  const nodes = [
    ...(nhwc ? [node('to_nchw', 'Transpose', ['input'], ['x_nchw'], [ints('perm', [0, 3, 1, 2])])] : []),
    node('conv1', 'Conv', [nhwc ? 'x_nchw' : 'input', 'w1', 'b1'], ['conv1_out'], [ints('kernel_shape', [3, 3])]),
    node('relu1', 'Relu', ['conv1_out'], ['relu1_out']),
    node('conv2', 'Conv', ['relu1_out', 'w2', 'b2'], ['conv2_out'], [ints('kernel_shape', [1, 1]), ints('strides', [2, 2])]),
    node('relu2', 'Relu', ['conv2_out'], ['relu2_out']),
    ...(nhwc
      ? [
          node('to_nhwc', 'Transpose', ['relu2_out'], ['t_nhwc'], [ints('perm', [0, 2, 3, 1])]),
          node('relu_nhwc', 'Relu', ['t_nhwc'], ['relu_nhwc_out']),
          node('pool', 'ReduceMean', ['relu_nhwc_out'], ['features'], [ints('axes', [1, 2]), { name: 'keepdims', type: 2, i: 0 }]),
        ]
      : [node('pool', 'GlobalAveragePool', ['relu2_out'], ['pool_out']), node('flatten', 'Flatten', ['pool_out'], ['features'])]),
  ];
  const graph = onnx.GraphProto.create({
    name: 'convnet',
    input: [vi('input', nhwc ? ['batch', S, S, 3] : ['batch', 3, S, S])],
    output: [vi('features', ['batch', C2])],
    initializer: [init('w1', [C1, 3, 3, 3], w1), init('b1', [C1], [0, 1, 2, 3].map(B1)), init('w2', [C2, C1, 1, 1], w2), init('b2', [C2], [0, 1, 2, 3, 4, 5].map(B2))],
    node: nodes,
  });
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'graft-test',
    opsetImport: [{ domain: '', version: 13 }],
    graph,
    metadataProps: [
      { key: 'Image.BitmapPixelFormat', value: 'Rgb8' },
      { key: 'Image.NominalPixelRange', value: 'Normalized_0_1' },
    ],
  });
  return onnx.ModelProto.encode(model).finish();
}

/** relu1 and relu2 by hand for a solid colour (the maps are then constant). */
function handValues(rgb: [number, number, number]): { relu1: number[]; relu2: number[] } {
  const x = rgb.map((v) => v / 255);
  const relu1 = Array.from({ length: C1 }, (_, j) => {
    let s = B1(j);
    for (let k = 0; k < 3; k++) for (let dy = 0; dy < 3; dy++) for (let dx = 0; dx < 3; dx++) s += W1(j, k, dy, dx) * x[k]!;
    return Math.max(0, s);
  });
  const relu2 = Array.from({ length: C2 }, (_, m) => Math.max(0, B2(m) + relu1.reduce((s, r, j) => s + W2(m, j) * r, 0)));
  return { relu1, relu2 };
}

let nchwModel: string, nhwcModel: string, solid: string, gradient: string, textFile: string;
const RGB: [number, number, number] = [200, 40, 120];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-fm-'));
  nchwModel = join(dir, 'convnet.onnx');
  nhwcModel = join(dir, 'convnet-nhwc.onnx');
  await writeFile(nchwModel, convNet('NCHW'));
  await writeFile(nhwcModel, convNet('NHWC'));
  solid = join(dir, 'solid.png');
  await sharp({ create: { width: S, height: S, channels: 3, background: { r: RGB[0], g: RGB[1], b: RGB[2] } } }).png().toFile(solid);
  const g = Buffer.alloc(S * S * 3);
  for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) g.set([x * 30, y * 30, (x * y * 7) % 256], (y * S + x) * 3);
  gradient = join(dir, 'gradient.png');
  await sharp(g, { raw: { width: S, height: S, channels: 3 } }).png().toFile(gradient);
  textFile = join(dir, 'notes.jpg');
  await writeFile(textFile, 'not a photo\n');
});
after(async () => rm(dir, { recursive: true, force: true }));

const close = (a: number, b: number, tol = 1e-5) => Math.abs(a - b) <= tol * Math.max(1, Math.abs(b));

describe('featureMaps on a tiny conv net', () => {
  test('map values equal a hand computation for a solid-colour image', async () => {
    const res = await featureMaps(nchwModel, solid, { layers: ['relu1', 'relu2_out'], select: 'first', threads: 1 });
    const hand = handValues(RGB);
    const [l1, l2] = res.layers;
    assert.ok(l1 && l2, 'two layers');
    assert.deepEqual(l1.shape, [1, C1, 6, 6]);
    assert.deepEqual(l2.shape, [1, C2, 3, 3]);
    assert.equal(l1.op, 'Relu');
    assert.equal(l2.node, 'relu2');
    assert.equal(l2.tensor, 'relu2_out');
    assert.deepEqual(l1.channels, [0, 1, 2, 3], 'all 4 channels (fewer than 32)');
    for (const [l, want] of [[l1, hand.relu1], [l2, hand.relu2]] as const) {
      assert.equal(l.layout, 'NCHW');
      l.maps.forEach((m, c) => {
        assert.equal(m.length, l.height * l.width);
        for (const v of m) assert.ok(close(v, want[c]!), `${l.layer} channel ${c}: ${v} vs ${want[c]}`);
        assert.ok(close(l.channelStats[c]!.mean, want[c]!), `mean of channel ${c}`);
      });
    }
    assert.ok(hand.relu1.some((v) => v === 0) || hand.relu2.some((v) => v === 0), 'the weights make some channel dead (checks zeroFraction)');
    const deadFraction = hand.relu2.filter((v) => v === 0).length / C2;
    assert.ok(close(l2.stats.zeroFraction, deadFraction), `zeroFraction ${l2.stats.zeroFraction} vs ${deadFraction}`);
    assert.equal(l2.stats.flatChannels, C2, 'a solid image gives flat maps');
    assert.deepEqual([res.image.width, res.image.height], [S, S]);
  });

  test('channel selection: strongest mean first, or the first n', async () => {
    const hand = handValues(RGB).relu2;
    const order = hand.map((v, i) => ({ v, i })).sort((a, b) => b.v - a.v || a.i - b.i).map((x) => x.i);
    const strong = await featureMaps(nchwModel, solid, { layers: ['relu2'], channels: 3, threads: 1 });
    assert.deepEqual(strong.layers[0]!.channels, order.slice(0, 3));
    assert.equal(strong.layers[0]!.selection, 'strongest');
    assert.equal(strong.layers[0]!.maps.length, 3);
    assert.ok(close(strong.layers[0]!.maps[0]![0]!, hand[order[0]!]!), 'map 0 is the strongest channel');
    const first = await featureMaps(nchwModel, solid, { layers: ['relu2'], channels: 2, select: 'first', threads: 1 });
    assert.deepEqual(first.layers[0]!.channels, [0, 1]);
    await assert.rejects(featureMaps(nchwModel, solid, { channels: 0 }), RangeError);
  });

  test('NHWC model: layout found per tensor, maps identical to the NCHW model', async () => {
    const a = await featureMaps(nchwModel, gradient, { layers: ['relu1', 'relu2'], select: 'first', threads: 1 });
    const b = await featureMaps(nhwcModel, gradient, { layers: ['relu1', 'relu2', 'relu_nhwc'], select: 'first', threads: 1 });
    assert.equal(b.spec.layout, 'NHWC');
    assert.deepEqual(b.layers.map((l) => l.layout), ['NCHW', 'NCHW', 'NHWC'], 'Conv outputs are NCHW, the transposed one NHWC');
    assert.deepEqual(b.layers[2]!.shape, [1, 3, 3, C2]);
    assert.deepEqual([b.layers[2]!.height, b.layers[2]!.width, b.layers[2]!.channelCount], [3, 3, C2]);
    const nonConstant = a.layers[1]!.maps.some((m) => m.some((v) => v !== m[0]));
    assert.ok(nonConstant, 'a gradient image gives non-constant maps');
    for (const [i, j] of [[0, 0], [1, 1], [1, 2]] as const) {
      const la = a.layers[i]!, lb = b.layers[j]!;
      assert.deepEqual(lb.channels, la.channels);
      la.maps.forEach((m, c) => m.forEach((v, p) => assert.ok(close(lb.maps[c]![p]!, v), `${lb.layer} channel ${c} pixel ${p}`)));
    }
  });

  test('default layers: early and late candidates, in graph order', async () => {
    const res = await featureMaps(nchwModel, gradient, { threads: 1 });
    assert.deepEqual(res.layers.map((l) => [l.layer, l.role]), [['relu1', 'early'], ['relu2', 'late']]);
    const nhwc = await featureMaps(nhwcModel, gradient, { threads: 1 });
    // relu2 feeds a Transpose (not an activation), so it is a block end too; its resolution equals the late one's.
    assert.deepEqual(nhwc.layers.map((l) => [l.layer, l.role]), [['relu1', 'early'], ['relu2', 'middle'], ['relu_nhwc', 'late']]);
  });

  test('unknown layer: GraftError listing valid layers, close matches first', async () => {
    await assert.rejects(featureMaps(nchwModel, solid, { layers: ['relu3'] }), (err: Error) => {
      assert.ok(err instanceof GraftError, 'GraftError');
      assert.match(err.message, /layer 'relu3' not found/);
      assert.match(err.message, /closest first: relu1, relu2, /);
      assert.match(err.message, /conv1/);
      assert.match(err.message, /graft layers/);
      return true;
    });
    assert.equal(closeMatches('clip_5', ['/n/Clip', '/n/Clip_1', '/n/Clip_50', '/n/Clip_5', '/n/Relu_5'])[0], '/n/Clip_5');
    assert.deepEqual(closeMatches('relu5', ['/n/Conv_5', '/n/Relu_5', '/n/Relu_15']).slice(0, 2), ['/n/Relu_5', '/n/Relu_15']);
    assert.equal(closeMatches('Conv_3', ['/n/Conv', '/n/Conv_13', '/n/Conv_3'])[0], '/n/Conv_3');
  });

  test('a layer that is not 4-D is a clear error', async () => {
    await assert.rejects(featureMaps(nchwModel, solid, { layers: ['features'] }), (err: Error) => {
      assert.ok(err instanceof GraftError, 'GraftError');
      assert.match(err.message, /'features' \(Flatten flatten\) gives a 2-D float32 tensor \[1, 6\]; feature maps need a 4-D tensor/);
      return true;
    });
  });

  test('unreadable and missing images: ImageError naming the file', async () => {
    await assert.rejects(featureMaps(nchwModel, textFile), (err: Error) => err instanceof ImageError && /notes\.jpg: not an image/.test(err.message));
    await assert.rejects(featureMaps(nchwModel, join(dir, 'missing.png')), (err: Error) => err instanceof ImageError && /missing\.png: file not found/.test(err.message));
  });

  test('loadImageAndTensor gives exactly the tensor of loadTensor (resize, crop)', async () => {
    const photo = join(dir, 'photo.jpg');
    const px = Buffer.alloc(50 * 37 * 3);
    for (let i = 0; i < px.length; i++) px[i] = (i * 37) % 251;
    await sharp(px, { raw: { width: 50, height: 37, channels: 3 } }).jpeg().toFile(photo);
    for (const spec of [defaultSpec({ size: [16, 16], cropPct: 0.875 }), defaultSpec({ size: [12, 20], layout: 'NHWC', channelOrder: 'BGR' })]) {
      const { image, tensor } = await loadImageAndTensor(photo, spec);
      assert.deepEqual([image.height, image.width], spec.size);
      assert.deepEqual(tensor, await loadTensor(photo, spec));
    }
  });
});

describe('tensor layout from the graph', () => {
  test('a Transpose as the very first node (index 0) still gives its output the permuted layout', () => {
    const m = buildLoaded({
      inputs: [{ name: 'img', shape: [1, 4, 4, 3] }],
      outputs: ['r'],
      nodes: [
        { op: 'Transpose', name: 'to_nchw', inputs: ['img'], outputs: ['t'], attrs: { perm: { ints: [0, 3, 1, 2] } } },
        { op: 'Relu', name: 'relu', inputs: ['t'], outputs: ['r'] },
      ],
    });
    assert.equal(tensorLayout(m, 't', 'NHWC'), 'NCHW');
    assert.equal(tensorLayout(m, 'r', 'NHWC'), 'NCHW', 'Relu keeps the layout it is given');
    assert.equal(tensorLayout(m, 'img', 'NHWC'), 'NHWC');
  });
});

describe('default layer choice', () => {
  test('early = end of the first downsampled stage, middle = geometric-mean stride, late = last', () => {
    const mk = (res: number[]) => res.map((r, index) => ({ tensor: `t${index}`, node: { name: `n${index}`, opType: 'Relu', inputs: [], outputs: [] }, index, h: r, w: r }));
    const resnet = mk([112, 56, 56, 56, 28, 28, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7, 7]);
    assert.deepEqual(pickDefaultLayers(resnet, [224, 224]).map((p) => [p.c.h, p.c.index, p.role]), [[112, 0, 'early'], [28, 7, 'middle'], [7, 16, 'late']]);
    const mobilenet = mk([112, 112, 112, 56, 56, 56, 56, 28, 28, 28, 28, 14, 14, 14, 7, 7]);
    assert.deepEqual(pickDefaultLayers(mobilenet, [224, 224]).map((p) => p.c.h), [112, 28, 7]);
    assert.deepEqual(pickDefaultLayers(mk([32, 32, 32]), [32, 32]).map((p) => p.role), ['early', 'middle', 'late'], 'no downsampling: spread out');
    assert.deepEqual(pickDefaultLayers(mk([10]), [20, 20]).map((p) => p.role), ['late']);
  });
});

describe('colour map and PNGs', () => {
  test('viridis matches published values and gets lighter along the scale', () => {
    // matplotlib's _viridis_data entries 0, 64, 128, 192 and 255 (CC0).
    const near = (got: number[], want: number[]) => got.every((g, i) => Math.abs(g - want[i]!) < 0.015);
    const ref: [number, number[]][] = [
      [0, [0.267004, 0.004874, 0.329415]],
      [64, [0.229739, 0.322361, 0.545706]],
      [128, [0.127568, 0.566949, 0.550556]],
      [192, [0.369214, 0.788888, 0.382914]],
      [255, [0.993248, 0.906157, 0.143936]],
    ];
    for (const [i, want] of ref) assert.ok(near(viridis(i / 255), want), `viridis(${i}/255) = ${viridis(i / 255)}, want ${want}`);
    const t = viridisTable();
    assert.equal(t.length, 768);
    const lum = (i: number) => 0.2126 * t[3 * i]! + 0.7152 * t[3 * i + 1]! + 0.0722 * t[3 * i + 2]!;
    for (let i = 8; i < 256; i += 8) assert.ok(lum(i) > lum(i - 8), `luminance rises at ${i}`);
  });

  test('tile sizes, output paths', () => {
    assert.deepEqual(tileSize(7, 7, 112), { th: 112, tw: 112 });
    assert.deepEqual(tileSize(28, 14, 112), { th: 112, tw: 56 });
    assert.deepEqual(tileSize(3, 3, 112), { th: 111, tw: 111 });
    assert.deepEqual(tileSize(224, 224, 112), { th: 112, tw: 112 });
    const ls = [{ layer: '/n/Clip_2' }, { layer: 'relu2' }];
    assert.deepEqual(featureMapPaths('out/maps.png', ls.slice(0, 1)), ['out/maps.png']);
    assert.deepEqual(featureMapPaths('out/maps.PNG', ls), ['out/maps-1.png', 'out/maps-2.png']);
    assert.deepEqual(featureMapPaths('out/maps', ls), [join('out/maps', '1-n_Clip_2.png'), join('out/maps', '2-relu2.png')]);
  });

  test('PNG: input beside the grid, tiles in viridis, size as rendered', async () => {
    const res = await featureMaps(nchwModel, gradient, { layers: ['relu1'], select: 'first', threads: 1 });
    const r = await renderFeatureMapPng(res, res.layers[0]!);
    const meta = await sharp(r.png).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', r.width, r.height]);
    // 4 tiles of 6x6 maps at 18x (108 px) beside the 200 px left column (the 8x8 input enlarged to 160 px).
    assert.ok(r.width >= 200 + 4 * 108 && r.height >= 160 + 56, `size ${r.width}x${r.height}`);
    const files = await writeFeatureMapPngs({ ...res, layers: [res.layers[0]!, res.layers[0]!] }, join(dir, 'pngs', 'm.png'));
    assert.deepEqual(files, [join(dir, 'pngs', 'm-1.png'), join(dir, 'pngs', 'm-2.png')]);
    for (const f of files) assert.ok(existsSync(f), `${f} written`);
    // Every pixel of the grid is either background, text or a viridis colour: sample the middle of the first tile.
    const { data, info } = await sharp(r.png).raw().toBuffer({ resolveWithObject: true });
    const lut = viridisTable();
    const onLut = (x: number, y: number) => {
      const o = (y * info.width + x) * info.channels;
      for (let i = 0; i < 256; i++) if (lut[3 * i] === data[o] && lut[3 * i + 1] === data[o + 1] && lut[3 * i + 2] === data[o + 2]) return true;
      return false;
    };
    const gridX = 20 + 200 + 40, gridY = 20 + 56;
    assert.ok(onLut(gridX + 54, gridY + 54), 'first tile is drawn in viridis colours');
  });
});

describe('layers with shapes', () => {
  test('each listed node has the shape of its output; --no-shapes leaves them out', async () => {
    const res = await layers(nchwModel, { threads: 1 });
    const shape = (n: string) => res.nodes.find((x) => x.name === n)?.shape;
    assert.deepEqual(shape('relu1'), [1, C1, 6, 6]);
    assert.deepEqual(shape('conv2'), [1, C2, 3, 3]);
    assert.deepEqual(shape('flatten'), [1, C2]);
    assert.equal(res.shapesError, undefined);
    const none = await layers(nchwModel, { shapes: false });
    assert.ok(none.nodes.every((n) => n.shape === undefined), 'no shapes');
  });

  test('a model ONNX Runtime cannot run is still listed, with shapesError', async () => {
    const bad = onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 13 }],
      graph: onnx.GraphProto.create({
        name: 'two-inputs',
        input: [vi('a', [1, 3, 4, 4]), vi('b', [1, 3, 4, 4])],
        output: [vi('y', [1, 3, 4, 4])],
        node: [node('add', 'Add', ['a', 'b'], ['s']), node('relu', 'Relu', ['s'], ['y'])],
      }),
    });
    const p = join(dir, 'two-inputs.onnx');
    await writeFile(p, onnx.ModelProto.encode(bad).finish());
    const res = await layers(p, { threads: 1 });
    assert.deepEqual(res.nodes.map((n) => n.name), ['add', 'relu']);
    assert.match(res.shapesError ?? '', /2 inputs/);
  });
});

describe('shared MobileNet', { skip: SKIP_SHARED }, () => {
  test('default layers: early, middle, late at decreasing resolutions; three PNGs', async () => {
    const image = join(SHARED!, 'data', 'imagenet', 'samples', 'n02123045_tabby.JPEG');
    const t0 = performance.now();
    const res = await featureMaps(MOBILENET, image);
    const files = await writeFeatureMapPngs(res, join(dir, 'mobilenet'));
    const seconds = (performance.now() - t0) / 1000;
    assert.deepEqual(res.layers.map((l) => l.role), ['early', 'middle', 'late']);
    const sizes = res.layers.map((l) => l.height);
    assert.deepEqual(sizes, [112, 28, 7], `spatial sizes ${sizes}`);
    assert.deepEqual(res.layers.map((l) => l.layer), ['/n/Clip_2', '/n/Clip_10', '/n/Clip_26']);
    for (const l of res.layers) {
      assert.equal(l.channels.length, 32);
      assert.ok(l.channelStats.every((s, i) => i === 0 || s.mean <= l.channelStats[i - 1]!.mean), `${l.layer}: strongest first`);
    }
    assert.equal(files.length, 3);
    for (const f of files) {
      const m = await sharp(f).metadata();
      assert.ok(m.format === 'png' && m.width! > 1000 && m.height! > 500, `${f}: ${m.width}x${m.height}`);
    }
    assert.ok(seconds < 20, `took ${seconds.toFixed(2)} s`);
  });
});

describe('graft featuremaps (CLI)', () => {
  function graft(...args: string[]) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'entry.ts'), ...args], {
      encoding: 'utf8',
      env: { ...process.env, GRAFT_HOME: join(dir, 'home') },
      timeout: 120_000,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  test('--json: layers, shapes, channels, stats, files', () => {
    const r = graft('featuremaps', nchwModel, gradient, '--out', join(dir, 'cli-maps'), '--channels', '3', '--threads', '1', '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.deepEqual(j.layers.map((l: { layer: string }) => l.layer), ['relu1', 'relu2']);
    assert.deepEqual(j.layers[1].shape, [1, C2, 3, 3]);
    assert.equal(j.layers[1].channels.length, 3);
    assert.equal(typeof j.layers[1].stats.zeroFraction, 'number');
    assert.deepEqual(j.files, [join(dir, 'cli-maps', '1-relu1.png'), join(dir, 'cli-maps', '2-relu2.png')]);
    for (const f of j.files) assert.ok(existsSync(f), `${f} written`);
  });

  test('one layer to a .png; plain output names the file', () => {
    const out = join(dir, 'one.png');
    const r = graft('featuremaps', nchwModel, gradient, '--layer', 'conv2', '--out', out, '--threads', '1');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /conv2 \(Conv\) \[1, 6, 3, 3\] NCHW: 6 of 6 channels -> .*one\.png/);
    assert.ok(existsSync(out), 'written');
  });

  test('bad layer: exit 1, one line with close matches; missing arguments: exit 2', () => {
    const bad = graft('featuremaps', nchwModel, gradient, '--layer', 'relu_2', '--out', join(dir, 'x.png'));
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.match(bad.stderr, /layer 'relu_2' not found.*closest first: relu2/);
    const flat = graft('featuremaps', nchwModel, gradient, '--layer', 'features', '--out', join(dir, 'x.png'));
    assert.equal(flat.code, 1);
    assert.match(flat.stderr, /2-D/);
    const img = graft('featuremaps', nchwModel, textFile, '--out', join(dir, 'x.png'));
    assert.equal(img.code, 1);
    assert.match(img.stderr, /notes\.jpg: not an image/);
    assert.equal(graft('featuremaps', nchwModel, gradient).code, 2, 'no --out');
    assert.equal(graft('featuremaps', nchwModel).code, 2, 'no image');
    assert.equal(graft('featuremaps', nchwModel, gradient, '--out', 'x.png', '--channels', '0').code, 2, 'bad --channels');
  });

  test('layers prints shapes', () => {
    const r = graft('layers', nchwModel);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Relu\s+\[1x4x6x6\]\s+relu1/);
  });
});
