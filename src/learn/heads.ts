/**
 * Classifier heads trained on pre-extracted feature vectors: softmax regression and a one-hidden-layer MLP
 * (dense-head.ts: the ONNX head of head-graph.ts, trained through the one loop, fit.ts, on ONNX Runtime), and a
 * few-shot kNN (knn-head.ts). Everything random (init, shuffling, dropout) comes from seeded streams, so the same
 * seed gives the same weights and history.
 */
import { GraftError, UsageError } from '../errors.js';
import { DenseHead, trainDense } from './dense-head.js';
import { denseParams } from './head-graph.js';
import { decodeFloat32, describeZodError, HEAD_KINDS, HeadJsonSchema, type FeatureSet, type Head, type HeadKind, type HeadSettings, type TrainOptions, type TrainResult } from './head-json.js';
import { KnnHead, trainKnn } from './knn-head.js';

export * from './head-json.js';

/**
 * Rebuild a head from its JSON form (already parsed). `source` names the file in error messages. Anything malformed
 * (wrong format marker or version, missing fields, wrong shapes, bad base64, non-finite weights) is a GraftError
 * saying what is wrong.
 */
export function headFromJSON(json: unknown, source = 'head'): Head {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new GraftError(`${source}: not a graft head (expected a JSON object)`);
  }
  const obj = json as Record<string, unknown>;
  if (obj.format !== 'graft-head') {
    throw new GraftError(`${source}: not a graft head (format is ${JSON.stringify(obj.format)}, expected "graft-head")`);
  }
  if (obj.version !== 1) {
    throw new GraftError(`${source}: unsupported graft head version ${JSON.stringify(obj.version)} (this graft reads version 1)`);
  }
  const parsed = HeadJsonSchema.safeParse(json);
  if (!parsed.success) throw new GraftError(`${source}: invalid graft head: ${describeZodError(parsed.error)}`);
  const h = parsed.data;
  const C = h.classes.length;
  const d = h.dim;
  if (new Set(h.classes).size !== C) throw new GraftError(`${source}: duplicate class names`);
  const mean = decodeFloat32(h.mean, [d], 'mean', source);
  const std = decodeFloat32(h.std, [d], 'std', source);
  for (let j = 0; j < d; j++) if (!(std[j] > 0)) throw new GraftError(`${source}: std[${j}] is not positive`);
  switch (h.kind) {
    case 'linear': {
      const W = decodeFloat32(h.params.W, [C, d], 'params.W', source);
      const b = decodeFloat32(h.params.b, [C], 'params.b', source);
      return new DenseHead(h.classes, { kind: 'linear', d, C, H: 0, mean, std, params: [W, b] }, h.training);
    }
    case 'mlp': {
      const H = h.params.W1.shape[0];
      if (!(Number.isInteger(H) && H > 0)) throw new GraftError(`${source}: params.W1 must have shape [hidden × dim]`);
      const params = denseParams('mlp', d, H, C).map((q) => decodeFloat32(h.params[q.name as 'W1' | 'b1' | 'W2' | 'b2'], q.dims, `params.${q.name}`, source));
      return new DenseHead(h.classes, { kind: 'mlp', d, C, H, mean, std, params }, h.training);
    }
    case 'knn': {
      const n = h.params.labels.length;
      if (n === 0) throw new GraftError(`${source}: kNN head has no stored examples`);
      const bad = h.params.labels.findIndex((l) => l >= C);
      if (bad >= 0) throw new GraftError(`${source}: params.labels[${bad}] = ${h.params.labels[bad]} is not a class index (0..${C - 1})`);
      const feats = decodeFloat32(h.params.features, [n, d], 'params.features', source);
      return new KnnHead(h.classes, d, mean, feats, Int32Array.from(h.params.labels), h.params.k, h.params.vote, h.training);
    }
  }
}


function resolveOptions(o: TrainOptions): HeadSettings {
  const r: HeadSettings = {
    kind: o.kind ?? 'linear',
    epochs: o.epochs ?? 100,
    batchSize: o.batchSize ?? 32,
    lr: o.lr ?? 1e-3,
    weightDecay: o.weightDecay ?? 1e-4,
    hidden: o.hidden ?? 256,
    dropout: o.dropout ?? 0.2,
    patience: o.patience ?? 10,
    balance: o.balance ?? false,
    seed: o.seed ?? 0,
    k: o.k ?? 5,
    vote: o.vote ?? 'weighted',
  };
  const posInt = (v: number, name: string) => {
    if (!Number.isInteger(v) || v < 1) throw new UsageError(`${name} must be a positive integer, got ${v}`);
  };
  if (!HEAD_KINDS.includes(r.kind)) throw new UsageError(`unknown head kind "${r.kind}" (expected ${HEAD_KINDS.join(', ')})`);
  posInt(r.epochs, 'epochs');
  posInt(r.batchSize, 'batch size');
  posInt(r.hidden, 'hidden');
  posInt(r.k, 'k');
  if (!(r.lr > 0 && Number.isFinite(r.lr))) throw new UsageError(`learning rate must be > 0, got ${r.lr}`);
  if (!(r.weightDecay >= 0 && Number.isFinite(r.weightDecay))) throw new UsageError(`weight decay must be ≥ 0, got ${r.weightDecay}`);
  if (!(r.dropout >= 0 && r.dropout < 1)) throw new UsageError(`dropout must be in [0, 1), got ${r.dropout}`);
  if (!(r.patience >= 1)) throw new UsageError(`patience must be ≥ 1 (or Infinity), got ${r.patience}`);
  if (!Number.isInteger(r.seed)) throw new UsageError(`seed must be an integer, got ${r.seed}`);
  if (r.vote !== 'weighted' && r.vote !== 'majority') throw new UsageError(`vote must be "weighted" or "majority"`);
  return r;
}

function checkFeatureSet(f: FeatureSet, C: number, what: string, d?: number): void {
  if (!Number.isInteger(f.n) || f.n < 1) throw new GraftError(`${what}: no examples`);
  if (!Number.isInteger(f.d) || f.d < 1) throw new GraftError(`${what}: feature dimension must be positive, got ${f.d}`);
  if (d !== undefined && f.d !== d) throw new GraftError(`${what}: feature dimension ${f.d} differs from training's ${d}`);
  if (f.x.length !== f.n * f.d) throw new GraftError(`${what}: expected ${f.n} × ${f.d} = ${f.n * f.d} features, got ${f.x.length}`);
  if (f.y.length !== f.n) throw new GraftError(`${what}: ${f.y.length} labels for ${f.n} rows`);
  for (let i = 0; i < f.n; i++) {
    if (!(f.y[i] >= 0 && f.y[i] < C)) throw new GraftError(`${what}: label ${f.y[i]} at row ${i} is not a class index (0..${C - 1})`);
  }
  for (let i = 0; i < f.x.length; i++) {
    if (!Number.isFinite(f.x[i])) {
      throw new GraftError(`${what}: non-finite feature at row ${Math.floor(i / f.d)}, dimension ${i % f.d}`);
    }
  }
}

/**
 * Train a head on feature vectors. With a validation set, dense heads early-stop on validation loss and come back
 * with the best epoch's weights; without one, they train all epochs.
 */
export async function trainHead(
  train: FeatureSet,
  val: FeatureSet | undefined,
  classes: string[],
  opts: TrainOptions,
): Promise<TrainResult> {
  const o = resolveOptions(opts);
  const C = classes.length;
  if (C < 2) throw new GraftError(`need at least 2 classes, got ${C}`);
  if (new Set(classes).size !== C) throw new GraftError('class names must be unique');
  checkFeatureSet(train, C, 'training set');
  if (val) checkFeatureSet(val, C, 'validation set', train.d);
  if (o.kind === 'knn') return trainKnn(train, classes, o);
  return trainDense(train, val, classes, o, opts.onEpoch);
}
