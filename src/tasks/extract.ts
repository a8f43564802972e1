import type { TtaKind } from '../image/tta.js';
import { int8Model } from './int8.js';
import { join, resolve } from 'node:path';
import { datasetFromFiles, openDataset } from '../data/index.js';
import { Backbone, BackboneOptions } from '../engine/backbone.js';
import type { Skipped } from '../engine/extract.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/fs.js';
import { checkRunOut } from '../learn/run-folder.js';
import { runExtraction } from './features.js';
import type { Reporter } from './reporter.js';
import type { QueueOptions, QueueReport } from '../queue/coordinator.js';

export interface ExtractDirOptions {
  out?: string;
  batchSize?: number;
  cache?: string | false;
  tensor?: 'features' | 'logits';
  backbone?: BackboneOptions;
  reporter?: Reporter;
  /** Compute on a `graft worker` pool over Redis; the result is what a local run writes. */
  queue?: QueueOptions;
  /** Test-time augmentation: each image's row averaged over fixed views. */
  tta?: TtaKind;
  /** Extract with an int8 version of the model, calibrated on these images (made once, kept; tasks/int8.ts). */
  int8?: boolean;
}

export interface ExtractDirResult {
  n: number;
  dim: number;
  fromCache: number;
  computed: number;
  seconds: number;
  imagesPerSecond: number;
  skipped: Skipped[];
  out?: { features: string; index: string };
  /** With `queue`: shards, workers, what was reused or split. */
  queue?: QueueReport;
}

/** A float32 matrix as a NumPy .npy file (version 1.0), so features load with `np.load` too. */
export function npyBytes(data: Float32Array, shape: number[]): Uint8Array {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const buf = new Uint8Array(10 + header.length + data.byteLength);
  buf.set([0x93, ...Buffer.from('NUMPY'), 1, 0], 0);
  new DataView(buf.buffer).setUint16(8, header.length, true);
  buf.set(Buffer.from(header, 'latin1'), 10);
  buf.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  return buf;
}

/**
 * Features of every image below a folder (labelled by class folder when it is one), through the cache, optionally
 * written to `out` as features.npy + index.json (file order, labels, model, preprocessing, skipped files).
 */
export async function extractDir(model: string, dir: string, opts: ExtractDirOptions = {}): Promise<ExtractDirResult> {
  // --out is checked before the extraction it would come after (an existing file there failed only at the end).
  if (opts.out) await checkRunOut(opts.out, []);
  let paths: string[];
  let labels: number[] | undefined;
  let classes: string[] | undefined;
  const skipped: Skipped[] = [];
  try {
    const ds = await openDataset(dir);
    paths = ds.items.map((i) => i.path);
    labels = ds.items.map((i) => i.label);
    classes = ds.classes;
    skipped.push(...ds.skipped);
  } catch {
    // Not a labelled dataset: plain images.
    const files = await datasetFromFiles([dir]);
    paths = files.items.map((i) => i.path);
    skipped.push(...files.skipped);
  }
  const q = opts.int8 && paths.length ? await int8Model(model, paths, { resolve: opts.backbone, reporter: opts.reporter }) : undefined;
  const backbone = await Backbone.load(q ? q.path : model, opts.backbone);
  try {
    for (const w of backbone.ref.warnings) opts.reporter?.warn?.(w);
    const t0 = performance.now();
    const res = await runExtraction(backbone, paths, { ...opts, task: 'extract' });
    // With a queue, the time is the whole run (workers, then the local pass that reads their rows from the cache).
    const seconds = res.queue ? (performance.now() - t0) / 1000 : res.seconds;
    skipped.push(...res.skipped);
    const result: ExtractDirResult = {
      n: res.kept.length,
      dim: res.dim,
      fromCache: res.fromCache,
      computed: res.computed,
      seconds,
      imagesPerSecond: paths.length / seconds,
      skipped,
      ...(res.queue && { queue: res.queue }),
    };
    if (opts.out) {
      const features = join(opts.out, 'features.npy');
      const index = join(opts.out, 'index.json');
      await writeFileAtomic(features, npyBytes(res.features, [res.kept.length, res.dim]));
      await writeJsonAtomic(index, {
        format: 'graft-features',
        version: 1,
        model: { source: model, sha256: backbone.ref.onnx.info.sha256 },
        tensor: opts.tensor === 'logits' ? backbone.ref.logitsTensor : backbone.ref.featureTensor,
        preprocess: backbone.spec,
        ...(opts.tta && { tta: opts.tta }),
        ...(q && { int8: { path: q.path, calibrationImages: q.calibration.images } }),
        shape: [res.kept.length, res.dim],
        root: resolve(dir),
        files: res.kept.map((i) => paths[i]),
        classes,
        labels: labels ? res.kept.map((i) => labels![i]) : undefined,
        skipped,
      });
      result.out = { features, index };
    }
    return result;
  } finally {
    await backbone.dispose();
  }
}
