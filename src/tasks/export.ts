import { basename, resolve } from 'node:path';
import { OrtModel } from '../engine/ort.js';
import { GraftError } from '../errors.js';
import type { PreprocessSpec } from '../image/spec.js';
import { buildExportGraph, EXPORT_OUTPUTS, knnRefusal } from '../learn/export.js';
import { loadRun } from '../learn/run.js';
import { checkRunModel } from '../learn/run-backbone.js';
import { LABELS_METADATA_KEY } from '../models/labels.js';
import { loadOnnx, parseOnnx, type LoadedOnnx } from '../models/onnx-file.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/fs.js';
import { mulberry32 } from '../util/random.js';

export interface ExportOptions {
  /**
   * Before writing, run the exported graph and the run's own pipeline (backbone on ONNX Runtime + head in JS) on a
   * seeded random batch and refuse to write if their probabilities differ by more than `tolerance` (default true).
   */
  verify?: boolean;
  /** Default 1e-4. */
  tolerance?: number;
}

export interface ExportResult {
  run: string;
  out: string;
  sidecar: string;
  bytes: number;
  sha256: string;
  head: 'linear' | 'mlp';
  classes: string[];
  input: { name: string; shape: (number | string)[] };
  outputs: { name: string; shape: (number | string)[] }[];
  backbone: { path: string; sha256: string; featureTensor: string; finetuned: boolean };
  nodes: { kept: number; dropped: number; head: number };
  preprocess: PreprocessSpec;
  /** Largest |Δ probability| between the exported graph and the run on the verification batch. */
  verified?: { images: number; maxAbsDiff: number };
}

/** A sentence per preprocessing step, for people wiring the model up outside graft. */
export function describePreprocess(spec: PreprocessSpec): string[] {
  const [h, w] = spec.size;
  const resize =
    spec.cropPct === null
      ? `resize the whole image to ${w}x${h} (width x height) ignoring aspect ratio, ${spec.interpolation} interpolation`
      : `resize (keeping aspect ratio) so the image covers ${Math.round(w / spec.cropPct)}x${Math.round(h / spec.cropPct)}, ${spec.interpolation} interpolation, then centre-crop ${w}x${h} (crop fraction ${spec.cropPct})`;
  return [
    'decode to 8-bit sRGB, apply the EXIF orientation, flatten any alpha onto white',
    resize,
    `scale pixels to [0, 1] (v / 255), then per channel (v - mean) / std with mean ${JSON.stringify(spec.mean)} and std ${JSON.stringify(spec.std)} (in tensor channel order)`,
    `channel order ${spec.channelOrder}, layout ${spec.layout} float32: ${spec.layout === 'NCHW' ? `[batch, 3, ${h}, ${w}]` : `[batch, ${h}, ${w}, 3]`}`,
  ];
}

/** Seeded pseudo-images in the model's input range, so the check does not depend on any image file. */
function verificationBatch(spec: PreprocessSpec, n: number): Float32Array {
  const rng = mulberry32(12345);
  const per = spec.size[0] * spec.size[1];
  const x = new Float32Array(n * 3 * per);
  for (let i = 0; i < x.length; i++) {
    const channel = spec.layout === 'NCHW' ? Math.floor(i / per) % 3 : i % 3;
    x[i] = (rng() - spec.mean[channel]!) / spec.std[channel]!;
  }
  return x;
}

async function maxProbaDiff(
  exported: LoadedOnnx,
  backbone: LoadedOnnx,
  featureTensor: string,
  spec: PreprocessSpec,
  predictProba: (x: Float32Array, n: number) => Promise<Float32Array>,
): Promise<{ images: number; maxAbsDiff: number }> {
  // A model with a fixed batch size only takes batches of that size.
  const fixed = exported.info.inputs[0]?.shape[0];
  const n = typeof fixed === 'number' && fixed > 0 ? fixed : 2;
  const [h, w] = spec.size;
  const x = verificationBatch(spec, n);
  const dims = spec.layout === 'NCHW' ? [n, 3, h, w] : [n, h, w, 3];
  const runner = await OrtModel.create(exported, [EXPORT_OUTPUTS.probabilities], { threads: 1 });
  const base = await OrtModel.create(backbone, [featureTensor], { threads: 1 });
  try {
    const got = (await runner.run(x, dims))[EXPORT_OUTPUTS.probabilities]!.data;
    const feats = (await base.run(x, dims))[featureTensor]!.data;
    const want = await predictProba(feats, n);
    if (got.length !== want.length) throw new GraftError(`export check: the graph gives ${got.length} probabilities for ${n} images, the run ${want.length}`);
    let max = 0;
    for (let i = 0; i < got.length; i++) max = Math.max(max, Math.abs(got[i]! - want[i]!));
    return { images: n, maxAbsDiff: max };
  } finally {
    await runner.dispose();
    await base.dispose();
  }
}

/**
 * Write a run (backbone, fine-tuned or not, + linear/mlp head) as one ONNX file with outputs `probabilities`,
 * `logits` and `features`, and beside it `<out>.json`: the sidecar that `graft predict <out>` reads for the
 * preprocessing and class names.
 */
export async function exportRun(runDir: string, outPath: string, opts: ExportOptions = {}): Promise<ExportResult> {
  const run = await loadRun(runDir);
  const cfg = run.config;
  if (run.head.kind === 'knn') throw knnRefusal(runDir);
  const out = resolve(outPath);
  if (out === resolve(cfg.model.path)) throw new GraftError(`${outPath}: that is the run's backbone file; export to another path`);
  let backbone: LoadedOnnx;
  try {
    backbone = await loadOnnx(cfg.model.path);
  } catch (err) {
    throw new GraftError(`${runDir}: cannot read the run's backbone (${(err as Error).message})`);
  }
  checkRunModel({ dir: runDir, config: cfg }, backbone.info);
  const headJson = run.head.toJSON();
  const finetuned = typeof cfg.head.finetune === 'object' && cfg.head.finetune !== null;
  const graph = buildExportGraph(backbone, {
    featureTensor: cfg.model.featureTensor,
    head: headJson,
    metadata: {
      [LABELS_METADATA_KEY]: JSON.stringify(cfg.classes),
      'graft.preprocess': JSON.stringify(cfg.preprocess),
      'graft.head': run.head.kind,
      'graft.run': basename(resolve(runDir)),
    },
    docString: `graft export of run ${basename(resolve(runDir))}: ${finetuned ? 'fine-tuned ' : ''}${basename(cfg.model.source)} + ${run.head.kind} head over ${cfg.classes.length} classes`,
  });
  const exported = parseOnnx(graph.bytes, out);
  let verified: ExportResult['verified'];
  if (opts.verify ?? true) {
    verified = await maxProbaDiff(exported, backbone, cfg.model.featureTensor, cfg.preprocess, (x, n) => run.head.predictProba(x, n)).finally(() => run.head.dispose());
    const tol = opts.tolerance ?? 1e-4;
    if (!(verified.maxAbsDiff <= tol)) {
      throw new GraftError(`export check failed: the exported graph's probabilities differ from the run's by ${verified.maxAbsDiff} (> ${tol}); nothing written`);
    }
  }
  const input = exported.info.inputs[0]!;
  const sidecar = `${out}.json`;
  // Sidecar before model: a model file never appears without the config that says how to feed it.
  await writeJsonAtomic(sidecar, {
    format: 'graft-export',
    version: 1,
    // The fields src/models/resolve.ts reads:
    preprocess: cfg.preprocess,
    labels: cfg.classes,
    logitsOutput: EXPORT_OUTPUTS.probabilities,
    featureOutput: EXPORT_OUTPUTS.features,
    // For people (and other tools):
    input: { name: input.name, shape: input.shape },
    outputs: {
      [EXPORT_OUTPUTS.probabilities]: 'softmax of logits, [batch, classes], in the order of labels',
      [EXPORT_OUTPUTS.logits]: 'class scores before softmax, [batch, classes]',
      [EXPORT_OUTPUTS.features]: `backbone features the head reads, [batch, ${headJson.dim}]`,
    },
    preprocessing: describePreprocess(cfg.preprocess),
    run: {
      dir: resolve(runDir),
      createdAt: cfg.createdAt,
      head: run.head.kind,
      backbone: { source: cfg.model.source, sha256: cfg.model.sha256, featureTensor: cfg.model.featureTensor, finetuned },
    },
  });
  await writeFileAtomic(out, graph.bytes);
  return {
    run: resolve(runDir),
    out,
    sidecar,
    bytes: graph.bytes.length,
    sha256: exported.info.sha256,
    head: run.head.kind,
    classes: cfg.classes,
    input: { name: input.name, shape: input.shape },
    outputs: graph.outputs,
    backbone: { path: cfg.model.path, sha256: cfg.model.sha256, featureTensor: cfg.model.featureTensor, finetuned },
    nodes: graph.nodes,
    preprocess: cfg.preprocess,
    verified,
  };
}
