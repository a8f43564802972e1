/**
 * The one TF.js weight decoder (./src/models/importers/tfjs-weights.ts), shared by the layers and the graph importer:
 * dtypes and quantisation decoded, and its path check (no `..`, no absolute path, no link out of the model folder,
 * also for a link swapped in after the folder was checked) the same for both importers.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GraftError } from '../src/errors.js';
import { importTfjsGraph } from '../src/models/importers/tfjs-graph.js';
import { importTfjsLayers } from '../src/models/importers/tfjs-layers.js';
import { checkedTfjsFolder, readTfjsWeights } from '../src/models/importers/tfjs-weights.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'graft-tfjs-weights-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

const WEIGHTS = [
  { name: 'f', shape: [2], dtype: 'float32' },
  { name: 'i', shape: [2], dtype: 'int32' },
  { name: 'q8', shape: [3], dtype: 'float32', quantization: { dtype: 'uint8', scale: 0.5, min: -1 } },
  { name: 'h', shape: [2], dtype: 'float32', quantization: { dtype: 'float16' } },
  { name: 'q16', shape: [1], dtype: 'float32', quantization: { dtype: 'uint16', scale: 0.25, min: 1 } },
  { name: 'qi', shape: [2], dtype: 'int32', quantization: { dtype: 'uint8', scale: 0.3, min: 0 } },
];

/** The shard bytes of WEIGHTS: float32 [1.5, -2], int32 [7, -3], uint8 [0, 2, 255], float16 [1, -2], uint16 [8], uint8 [3, 4]. */
function shard(): Buffer {
  const b = Buffer.alloc(27);
  b.writeFloatLE(1.5, 0);
  b.writeFloatLE(-2, 4);
  b.writeInt32LE(7, 8);
  b.writeInt32LE(-3, 12);
  b.set([0, 2, 255], 16);
  b.writeUInt16LE(0x3c00, 19);
  b.writeUInt16LE(0xc000, 21);
  b.writeUInt16LE(8, 23);
  b.set([3, 4], 25);
  return b;
}

/** A model folder whose one shard is at `path`; `kind` picks the model.json of a layers or a graph model. */
async function folder(name: string, path: string, kind: 'layers' | 'graph' = 'layers'): Promise<string> {
  const d = join(dir, name, 'model');
  await mkdir(d, { recursive: true });
  const topology = kind === 'graph' ? { format: 'graph-model', modelTopology: { node: [] } } : { modelTopology: { class_name: 'Sequential', config: { layers: [] } } };
  await writeFile(join(d, 'model.json'), JSON.stringify({ ...topology, weightsManifest: [{ paths: [path], weights: WEIGHTS }] }));
  // A file of the right size just outside the folder, where an escaping path would lead.
  await writeFile(join(d, '..', 'outside.bin'), shard());
  return join(d, 'model.json');
}

describe('TF.js weight decoder', () => {
  test('float32, int32, uint8 / uint16 with scale and min, float16; quantised integers rounded', async () => {
    const file = await folder('ok', 'w.bin');
    await writeFile(join(file, '..', 'w.bin'), shard());
    const w = await readTfjsWeights(await checkedTfjsFolder(file));
    const got = Object.fromEntries([...w].map(([k, v]) => [k, [...v.data]]));
    assert.deepEqual(got, { f: [1.5, -2], i: [7, -3], q8: [-1, 0, 126.5], h: [1, -2], q16: [3], qi: [1, 1] });
    assert.equal(w.get('i')!.dtype, 'int32');
  });

  /** Refused with `pattern` by the decoder and by the layers importer. */
  const refusedBoth = async (file: string, pattern: RegExp) => {
    await assert.rejects(checkedTfjsFolder(file).then(readTfjsWeights), (err: unknown) => err instanceof GraftError && pattern.test(err.message), 'decoder');
    await assert.rejects(importTfjsLayers(file), pattern, 'layers importer');
  };

  test('a shard path with .. is refused, by the decoder and both importers, though the file outside exists', async () => {
    const file = await folder('dotdot', '../outside.bin');
    await refusedBoth(file, /model\.json: weightsManifest\[0\]\.paths\[0\]: refused file path '\.\.\/outside\.bin': it leaves the model's folder/);
    const g = await folder('dotdot-graph', '../outside.bin', 'graph');
    await assert.rejects(importTfjsGraph(g), /refused file path '\.\.\/outside\.bin': it leaves the model's folder/, 'graph importer');
  });

  test('an absolute shard path is refused, by the decoder and both importers', async () => {
    const outside = join(dir, 'abs', 'outside.bin');
    const file = await folder('abs', outside);
    await refusedBoth(file, /refused file path '.*outside\.bin': it leaves the model's folder/);
    const g = await folder('abs-graph', outside, 'graph');
    await assert.rejects(importTfjsGraph(g), /refused file path '.*outside\.bin': it leaves the model's folder/, 'graph importer');
  });

  test('a shard that is a link leading out of the folder is refused, by the decoder and both importers', async () => {
    const file = await folder('link', 'w.bin');
    await symlink(join(file, '..', '..', 'outside.bin'), join(file, '..', 'w.bin'));
    await refusedBoth(file, /refused weight shard 'w\.bin': it is a link leading out of the model's folder/);
    const g = await folder('link-graph', 'w.bin', 'graph');
    await symlink(join(g, '..', '..', 'outside.bin'), join(g, '..', 'w.bin'));
    await assert.rejects(importTfjsGraph(g), /refused weight shard 'w\.bin': it is a link leading out of the model's folder/, 'graph importer');
  });

  test('a shard swapped for a link out of the folder after the folder was checked is refused when read', async () => {
    const file = await folder('swap', 'w.bin');
    const shardPath = join(file, '..', 'w.bin');
    await writeFile(shardPath, shard());
    const checked = await checkedTfjsFolder(file);
    await rm(shardPath);
    await symlink(join(file, '..', '..', 'outside.bin'), shardPath);
    await assert.rejects(readTfjsWeights(checked), /refused weight shard 'w\.bin': it is a link leading out of the model's folder/);
  });
});
