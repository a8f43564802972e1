/**
 * A tiny fine-tunable CNN (two conv blocks) and small coloured image folders, for fine-tuning tests that spawn the
 * CLI or run the tasks end to end in a few seconds. The model is the one test/finetune.test.ts builds inline.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { buildOnnx, type GraphSpec } from './onnx-builder.js';
import { parseOnnx } from '../../src/models/onnx-file.js';
import type { CutSet } from '../../src/learn/finetune.js';
import { mulberry32 } from '../../src/util/random.js';
import { colourImage, type Rgb } from './images.js';

export const TINY_SIZE = 8;

/** input [N,3,S,S] → conv 3x3 (3→4) → Relu → depthwise 3x3 (group 4) → Relu → 1x1 (4→6) → Clip → GAP → features. */
export function tinyCnn(): GraphSpec {
  const S = TINY_SIZE;
  const rng = mulberry32(7);
  const r = (n: number, s: number) => Array.from({ length: n }, () => (rng() * 2 - 1) * s);
  return {
    inputs: [{ name: 'input', shape: ['batch', 3, S, S] }],
    outputs: ['features', 'logits'],
    initializers: [
      { name: 'c0_w', dims: [4, 3, 3, 3], values: r(4 * 27, 0.5) },
      { name: 'c0_b', dims: [4], values: r(4, 0.1) },
      { name: 'dw_w', dims: [4, 1, 3, 3], values: r(36, 0.5) },
      { name: 'dw_b', dims: [4], values: r(4, 0.1) },
      { name: 'pw_w', dims: [6, 4, 1, 1], values: r(24, 0.7) },
      { name: 'bn_s', dims: [1, 6, 1, 1], values: r(6, 0.3).map((v) => 1 + v) },
      { name: 'bn_b', dims: [1, 6, 1, 1], values: r(6, 0.1) },
      { name: 'fc_w', dims: [6, 3], values: r(18, 0.5) },
      { name: 'fc_b', dims: [3], values: [0, 0, 0] },
      { name: 'lo', dims: [], values: [0] },
      { name: 'hi', dims: [], values: [6] },
    ],
    nodes: [
      { op: 'Conv', name: 'conv0', inputs: ['input', 'c0_w', 'c0_b'], outputs: ['c0'], attrs: { pads: { ints: [1, 1, 1, 1] } } },
      { op: 'Relu', name: 'relu0', inputs: ['c0'], outputs: ['r0'] },
      { op: 'Conv', name: 'dw', inputs: ['r0', 'dw_w', 'dw_b'], outputs: ['d1'], attrs: { pads: { ints: [1, 1, 1, 1] }, group: { i: 4 } } },
      { op: 'Relu', name: 'relu1', inputs: ['d1'], outputs: ['r1'] },
      { op: 'Conv', name: 'pw', inputs: ['r1', 'pw_w'], outputs: ['p1'] },
      { op: 'Mul', name: 'bn_mul', inputs: ['p1', 'bn_s'], outputs: ['m1'] },
      { op: 'Add', name: 'bn_add', inputs: ['m1', 'bn_b'], outputs: ['a1'] },
      { op: 'Clip', name: 'clip1', inputs: ['a1', 'lo', 'hi'], outputs: ['r2'] },
      { op: 'GlobalAveragePool', name: 'gap', inputs: ['r2'], outputs: ['g'] },
      { op: 'Flatten', name: 'flatten', inputs: ['g'], outputs: ['features'] },
      { op: 'Gemm', name: 'fc', inputs: ['features', 'fc_w', 'fc_b'], outputs: ['logits'] },
    ],
  };
}

/** Write the tiny CNN to `path` with Windows-ML metadata (pixels in [0, 1], RGB), so no preprocessing flags are needed. */
export async function writeTinyCnn(path: string): Promise<string> {
  const m = parseOnnx(buildOnnx(tinyCnn()), path);
  m.proto.metadataProps = [
    { key: 'Image.NominalPixelRange', value: 'Normalized_0_1' },
    { key: 'Image.BitmapPixelFormat', value: 'Rgb8' },
  ] as never;
  await writeFile(path, onnxProto.onnx.ModelProto.encode(m.proto).finish());
  return path;
}

export const RED_BLUE: Record<string, Rgb> = { red: [220, 30, 30], blue: [30, 40, 220] };

/**
 * A class-per-folder tree under `root`: `perClass[name]` noisy JPEGs of each colour (slightly varied shades and
 * sizes); `seedOffset` makes a different set (e.g. for validation).
 */
export async function writeColourFolders(root: string, perClass: Record<string, number>, colours: Record<string, Rgb> = RED_BLUE, seedOffset = 0): Promise<string> {
  for (const [name, count] of Object.entries(perClass)) {
    const rgb = colours[name]!;
    const d = join(root, name);
    await mkdir(d, { recursive: true });
    for (let i = 0; i < count; i++) {
      const shade: Rgb = [rgb[0] + (i % 3) * 5, rgb[1] + (i % 4) * 5, rgb[2] - (i % 5) * 5];
      await colourImage(shade, 20 + (i % 9), 16 + (i % 5), i + seedOffset).jpeg().toFile(join(d, `${name}-${i}.jpg`));
    }
  }
  return root;
}

/** Random cut tensors [n, 4, S, S] at the tiny CNN's 'r0' (input of its last block), labelled by which of channels 0 and 1 is brighter. */
export function tinyCutSet(n: number, seed: number): CutSet {
  const S = TINY_SIZE;
  const rng = mulberry32(seed);
  const per = 4 * S * S;
  const x = new Float32Array(n * per);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % 2;
    y[i] = c;
    for (let j = 0; j < per; j++) x[i * per + j] = Math.max(0, rng() + (Math.floor(j / (S * S)) === c ? 0.3 : 0));
  }
  return { x, n, y };
}
