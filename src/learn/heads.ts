/**
 * Classifier heads trained on pre-extracted feature vectors: softmax regression, a one-hidden-layer MLP, and a
 * few-shot kNN. Dense heads are trained with TF.js (CPU backend) using Adam with decoupled weight decay (AdamW) and
 * cross-entropy; everything random (init, shuffling, dropout) comes from seeded streams, so the same seed gives
 * bit-identical weights and history.
 *
 * A trained head holds plain Float32Arrays (no live tensors): nothing to dispose, and it serialises to plain JSON.
 */
import { endianness } from 'node:os';
import { z } from 'zod';
import { GraftError, UsageError } from '../errors.js';
import { deriveSeed, mulberry32, shuffleInPlace, type Rng } from '../util/random.js';
import { accuracyOf, logLoss } from './metrics.js';
import { ensureTf, tf } from './tf.js';

export type HeadKind = 'linear' | 'mlp' | 'knn';
export const HEAD_KINDS: readonly HeadKind[] = ['linear', 'mlp', 'knn'];

/** Pre-extracted features: `x` is n × d row-major, `y` the class index of each row. */
export interface FeatureSet {
  x: Float32Array;
  n: number;
  d: number;
  y: Int32Array;
}

export interface EpochLog {
  /** 1-based. */
  epoch: number;
  /** Mean training cross-entropy over the epoch's batches (with dropout, as trained). */
  trainLoss: number;
  /** Training accuracy over the epoch's batches (with dropout, as trained). */
  trainAcc: number;
  /** Cross-entropy of the head as it is at the end of the epoch on the validation set (no dropout). */
  valLoss?: number;
  valAcc?: number;
  lr: number;
}

export interface TrainOptions {
  kind: HeadKind;
  /** Maximum number of epochs (default 100). */
  epochs?: number;
  /** Default 32. */
  batchSize?: number;
  /** Adam learning rate (default 1e-3). */
  lr?: number;
  /** Decoupled (AdamW-style) weight decay on the weight matrices, not the biases (default 1e-4). */
  weightDecay?: number;
  /** MLP hidden units (default 256). */
  hidden?: number;
  /** MLP dropout rate after the hidden layer, in [0, 1) (default 0.2). */
  dropout?: number;
  /**
   * Early stopping: stop after this many epochs without a lower validation loss, then restore the best epoch's
   * weights (default 10). `Infinity` never stops early but still restores the best epoch. Ignored without a
   * validation set (then all epochs are trained and the last weights kept).
   */
  patience?: number;
  /** Default 0. */
  seed?: number;
  /** kNN neighbours (default 5; capped at the number of training examples). */
  k?: number;
  /** kNN vote: each neighbour counts (1 + cosine)/2 ('weighted', default) or 1 ('majority'). */
  vote?: 'weighted' | 'majority';
  onEpoch?: (e: EpochLog) => void;
}

export interface Head {
  readonly kind: HeadKind;
  readonly classes: string[];
  /** Feature dimension expected by predictProba. */
  readonly dim: number;
  /** Class probabilities for n raw (unstandardised) feature rows: n × C row-major. */
  predictProba(x: Float32Array, n: number): Float32Array;
  toJSON(): HeadJson;
}

export interface TrainResult {
  head: Head;
  history: EpochLog[];
  /** Epoch whose weights the head has (1-based); the last epoch without validation; 0 for kNN. */
  bestEpoch: number;
  stoppedEarly: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// Serialised form

/** A float32 tensor as base64 of its little-endian bytes. */
const BlobSchema = z.object({
  shape: z.array(z.number().int().nonnegative()),
  base64: z.string(),
});
export type Float32Blob = z.infer<typeof BlobSchema>;

const CommonSchema = {
  format: z.literal('graft-head'),
  version: z.literal(1),
  classes: z.array(z.string()).min(2),
  dim: z.number().int().positive(),
  /** Standardisation applied before the classifier: (x - mean) / std per dimension. */
  mean: BlobSchema,
  std: BlobSchema,
  /** Free-form description of how the head was trained (options, best epoch); not needed for prediction. */
  training: z.record(z.string(), z.unknown()).optional(),
};

const LinearSchema = z.object({
  ...CommonSchema,
  kind: z.literal('linear'),
  /** W: dim × C, b: C. */
  params: z.object({ W: BlobSchema, b: BlobSchema }),
});
const MlpSchema = z.object({
  ...CommonSchema,
  kind: z.literal('mlp'),
  /** W1: dim × hidden, b1: hidden, W2: hidden × C, b2: C. */
  params: z.object({ W1: BlobSchema, b1: BlobSchema, W2: BlobSchema, b2: BlobSchema }),
});
const KnnSchema = z.object({
  ...CommonSchema,
  kind: z.literal('knn'),
  /** features: n × dim, already centred and L2-normalised; labels: n class indices. */
  params: z.object({
    k: z.number().int().positive(),
    vote: z.enum(['weighted', 'majority']),
    features: BlobSchema,
    labels: z.array(z.number().int().nonnegative()),
  }),
});

export const HeadJsonSchema = z.discriminatedUnion('kind', [LinearSchema, MlpSchema, KnnSchema]);
export type HeadJson = z.infer<typeof HeadJsonSchema>;

const LITTLE_ENDIAN = endianness() === 'LE';

export function encodeFloat32(data: Float32Array, shape: number[]): Float32Blob {
  let buf: Buffer;
  if (LITTLE_ENDIAN) {
    buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  } else {
    buf = Buffer.alloc(data.length * 4);
    for (let i = 0; i < data.length; i++) buf.writeFloatLE(data[i], i * 4);
  }
  return { shape, base64: buf.toString('base64') };
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function decodeFloat32(blob: Float32Blob, expectShape: number[], what: string, source: string): Float32Array {
  const shapeStr = (s: number[]) => s.join(' × ');
  if (blob.shape.length !== expectShape.length || blob.shape.some((v, i) => v !== expectShape[i])) {
    throw new GraftError(`${source}: ${what} has shape [${shapeStr(blob.shape)}], expected [${shapeStr(expectShape)}]`);
  }
  if (blob.base64.length % 4 !== 0 || !BASE64_RE.test(blob.base64)) {
    throw new GraftError(`${source}: ${what} is not valid base64`);
  }
  const count = expectShape.reduce((a, b) => a * b, 1);
  const buf = Buffer.from(blob.base64, 'base64');
  if (buf.length !== count * 4) {
    throw new GraftError(
      `${source}: ${what} holds ${buf.length} bytes, expected ${count * 4} (${shapeStr(expectShape)} float32 values)`,
    );
  }
  const out = new Float32Array(count);
  if (LITTLE_ENDIAN) new Uint8Array(out.buffer).set(buf);
  else for (let i = 0; i < count; i++) out[i] = buf.readFloatLE(i * 4);
  for (let i = 0; i < count; i++) {
    if (!Number.isFinite(out[i])) throw new GraftError(`${source}: ${what} contains a non-finite value at index ${i}`);
  }
  return out;
}

function describeZodError(err: z.ZodError): string {
  const issues = err.issues.slice(0, 3).map((iss) => {
    const where = iss.path.length > 0 ? iss.path.join('.') : '(top level)';
    return `${where}: ${iss.message}`;
  });
  const more = err.issues.length > 3 ? ` (and ${err.issues.length - 3} more problems)` : '';
  return issues.join('; ') + more;
}

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
  const norm: Standardiser = { mean, std };
  switch (h.kind) {
    case 'linear': {
      const W = decodeFloat32(h.params.W, [d, C], 'params.W', source);
      const b = decodeFloat32(h.params.b, [C], 'params.b', source);
      return new DenseHead('linear', h.classes, d, norm, [W, b], [[d, C], [C]], h.training);
    }
    case 'mlp': {
      const H = h.params.W1.shape[1];
      if (!(Number.isInteger(H) && H > 0)) throw new GraftError(`${source}: params.W1 must have shape [dim × hidden]`);
      const W1 = decodeFloat32(h.params.W1, [d, H], 'params.W1', source);
      const b1 = decodeFloat32(h.params.b1, [H], 'params.b1', source);
      const W2 = decodeFloat32(h.params.W2, [H, C], 'params.W2', source);
      const b2 = decodeFloat32(h.params.b2, [C], 'params.b2', source);
      return new DenseHead('mlp', h.classes, d, norm, [W1, b1, W2, b2], [[d, H], [H], [H, C], [C]], h.training);
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

// ---------------------------------------------------------------------------------------------------------------
// Standardisation

interface Standardiser {
  mean: Float32Array;
  std: Float32Array;
}

function fitStandardiser(x: Float32Array, n: number, d: number): Standardiser {
  const mean64 = new Float64Array(d);
  const sq64 = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    const o = i * d;
    for (let j = 0; j < d; j++) mean64[j] += x[o + j];
  }
  for (let j = 0; j < d; j++) mean64[j] /= n;
  for (let i = 0; i < n; i++) {
    const o = i * d;
    for (let j = 0; j < d; j++) {
      const t = x[o + j] - mean64[j];
      sq64[j] += t * t;
    }
  }
  const mean = new Float32Array(d);
  const std = new Float32Array(d);
  for (let j = 0; j < d; j++) {
    mean[j] = mean64[j];
    const s = Math.sqrt(sq64[j] / n);
    // Constant (or nearly constant) dimensions: centre only, do not blow up noise.
    std[j] = s > 1e-6 ? s : 1;
  }
  return { mean, std };
}

function standardise(x: Float32Array, n: number, d: number, s: Standardiser): Float32Array {
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const o = i * d;
    for (let j = 0; j < d; j++) out[o + j] = (x[o + j] - s.mean[j]) / s.std[j];
  }
  return out;
}

function checkInput(x: Float32Array, n: number, dim: number): void {
  if (!Number.isInteger(n) || n < 0) throw new GraftError(`predictProba: n must be a non-negative integer, got ${n}`);
  if (x.length !== n * dim) {
    throw new GraftError(`predictProba: expected ${n} × ${dim} = ${n * dim} features, got ${x.length}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Dense heads (linear, mlp)

type Tensor = ReturnType<typeof tf.tensor>;
type Tensor2D = ReturnType<typeof tf.tensor2d>;

/** Logits for a batch. params: [W, b] or [W1, b1, W2, b2]; mask (mlp training only): inverted-dropout multipliers. */
function denseLogits(kind: 'linear' | 'mlp', params: Tensor[], x: Tensor2D, mask?: Tensor): Tensor2D {
  if (kind === 'linear') {
    return tf.add(tf.matMul(x, params[0] as Tensor2D), params[1]) as Tensor2D;
  }
  let h: Tensor2D = tf.relu(tf.add(tf.matMul(x, params[0] as Tensor2D), params[1])) as Tensor2D;
  if (mask) h = tf.mul(h, mask) as Tensor2D;
  return tf.add(tf.matMul(h, params[2] as Tensor2D), params[3]) as Tensor2D;
}

/**
 * Mean cross-entropy, number of correct argmax predictions, and the analytic gradients of the loss with respect to
 * each param (same order as params). tfjs-core on its own registers no gradient kernels (they live in the full
 * @tensorflow/tfjs bundle), so tf.grad/variableGrads cannot be used here; for one or two dense layers under
 * softmax cross-entropy the backward pass is short enough to write out:
 *   dlogits = (softmax − onehot) / m,  dW = inputᵀ·dlogits,  db = Σ_rows dlogits,
 *   and through the hidden layer  dz1 = (dlogits·W2ᵀ) ⊙ mask ⊙ [z1 > 0].
 * Call inside tf.tidy.
 */
function denseLossAndGrads(
  kind: 'linear' | 'mlp',
  params: Tensor[],
  x: Tensor2D,
  yIdx: Tensor,
  yOneHot: Tensor,
  mask?: Tensor,
): { loss: Tensor; correct: Tensor; grads: Tensor[] } {
  const m = x.shape[0];
  const backward = (input: Tensor2D, logits: Tensor2D) => {
    const logp = tf.logSoftmax(logits);
    const loss = tf.div(tf.neg(tf.sum(tf.mul(yOneHot, logp))), m);
    const correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), yIdx), 'float32'));
    const dLogits = tf.div(tf.sub(tf.exp(logp), yOneHot), m) as Tensor2D;
    const gW = tf.matMul(input, dLogits, true, false);
    const gb = tf.sum(dLogits, 0);
    return { loss, correct, dLogits, gW, gb };
  };
  if (kind === 'linear') {
    const logits = tf.add(tf.matMul(x, params[0] as Tensor2D), params[1]) as Tensor2D;
    const { loss, correct, gW, gb } = backward(x, logits);
    return { loss, correct, grads: [gW, gb] };
  }
  const z1 = tf.add(tf.matMul(x, params[0] as Tensor2D), params[1]) as Tensor2D;
  // Gate: ReLU derivative times the (inverted) dropout mask; the hidden output is z1 ⊙ gate (ReLU folded in).
  const gate = mask ? tf.mul(tf.step(z1), mask) : tf.step(z1);
  const h = tf.mul(z1, gate) as Tensor2D;
  const logits = tf.add(tf.matMul(h, params[2] as Tensor2D), params[3]) as Tensor2D;
  const { loss, correct, dLogits, gW: gW2, gb: gb2 } = backward(h, logits);
  const dz1 = tf.mul(tf.matMul(dLogits, params[2] as Tensor2D, false, true), gate) as Tensor2D;
  const gW1 = tf.matMul(x, dz1, true, false);
  const gb1 = tf.sum(dz1, 0);
  return { loss, correct, grads: [gW1, gb1, gW2, gb2] };
}

/** Loss and gradients for given params on one batch, as plain arrays (for gradient checks in tests). */
export async function denseLossAndGradsForTest(
  kind: 'linear' | 'mlp',
  params: Float32Array[],
  shapes: number[][],
  x: Float32Array,
  y: Int32Array,
  d: number,
  numClasses: number,
  mask?: Float32Array,
): Promise<{ loss: number; grads: Float32Array[] }> {
  await ensureTf();
  const m = y.length;
  const out = tf.tidy(() => {
    const ps = params.map((p, i) => tf.tensor(p, shapes[i], 'float32'));
    const yIdx = tf.tensor1d(y, 'int32');
    const maskT = mask ? tf.tensor2d(mask, [m, mask.length / m]) : undefined;
    const r = denseLossAndGrads(kind, ps, tf.tensor2d(x, [m, d]), yIdx, tf.oneHot(yIdx, numClasses), maskT);
    return [r.loss, ...r.grads];
  });
  const arrays = out.map((t) => (t.dataSync() as Float32Array).slice());
  for (const t of out) t.dispose();
  return { loss: arrays[0][0], grads: arrays.slice(1) };
}

const PREDICT_CHUNK = 1024;

/**
 * Softmax probabilities for already-standardised rows, in fixed-size chunks. Used both by trained heads and for
 * the per-epoch validation loss, so the two agree bit for bit.
 */
function denseProba(kind: 'linear' | 'mlp', params: Tensor[], xs: Float32Array, n: number, d: number, C: number): Float32Array {
  const out = new Float32Array(n * C);
  for (let start = 0; start < n; start += PREDICT_CHUNK) {
    const m = Math.min(PREDICT_CHUNK, n - start);
    const p = tf.tidy(() => {
      const xb = tf.tensor2d(xs.subarray(start * d, (start + m) * d), [m, d]);
      return tf.softmax(denseLogits(kind, params, xb));
    });
    out.set(p.dataSync() as Float32Array, start * C);
    p.dispose();
  }
  return out;
}

class DenseHead implements Head {
  constructor(
    readonly kind: 'linear' | 'mlp',
    readonly classes: string[],
    readonly dim: number,
    private readonly norm: Standardiser,
    private readonly params: Float32Array[],
    private readonly shapes: number[][],
    private readonly training?: Record<string, unknown>,
  ) {}

  predictProba(x: Float32Array, n: number): Float32Array {
    checkInput(x, n, this.dim);
    const C = this.classes.length;
    if (n === 0) return new Float32Array(0);
    const xs = standardise(x, n, this.dim, this.norm);
    const tensors = this.params.map((p, i) => tf.tensor(p, this.shapes[i], 'float32'));
    try {
      return denseProba(this.kind, tensors, xs, n, this.dim, C);
    } finally {
      for (const t of tensors) t.dispose();
    }
  }

  toJSON(): HeadJson {
    const base = {
      format: 'graft-head' as const,
      version: 1 as const,
      classes: [...this.classes],
      dim: this.dim,
      mean: encodeFloat32(this.norm.mean, [this.dim]),
      std: encodeFloat32(this.norm.std, [this.dim]),
      ...(this.training ? { training: this.training } : {}),
    };
    const blobs = this.params.map((p, i) => encodeFloat32(p, this.shapes[i]));
    if (this.kind === 'linear') return { ...base, kind: 'linear', params: { W: blobs[0], b: blobs[1] } };
    return { ...base, kind: 'mlp', params: { W1: blobs[0], b1: blobs[1], W2: blobs[2], b2: blobs[3] } };
  }
}

/** Glorot (Xavier) uniform init: U(-l, l), l = sqrt(6 / (fanIn + fanOut)). */
function glorotUniform(fanIn: number, fanOut: number, rng: Rng): Float32Array {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  const w = new Float32Array(fanIn * fanOut);
  for (let i = 0; i < w.length; i++) w[i] = (rng() * 2 - 1) * limit;
  return w;
}

interface Resolved {
  kind: HeadKind;
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  hidden: number;
  dropout: number;
  patience: number;
  seed: number;
  k: number;
  vote: 'weighted' | 'majority';
}

function resolveOptions(o: TrainOptions): Resolved {
  const r: Resolved = {
    kind: o.kind,
    epochs: o.epochs ?? 100,
    batchSize: o.batchSize ?? 32,
    lr: o.lr ?? 1e-3,
    weightDecay: o.weightDecay ?? 1e-4,
    hidden: o.hidden ?? 256,
    dropout: o.dropout ?? 0.2,
    patience: o.patience ?? 10,
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
  await ensureTf();
  if (o.kind === 'knn') return trainKnn(train, classes, o);
  return trainDense(train, val, classes, o, opts.onEpoch);
}

async function trainDense(
  train: FeatureSet,
  val: FeatureSet | undefined,
  classes: string[],
  o: Resolved,
  onEpoch: ((e: EpochLog) => void) | undefined,
): Promise<TrainResult> {
  const kind = o.kind as 'linear' | 'mlp';
  const { n, d } = train;
  const C = classes.length;
  const norm = fitStandardiser(train.x, n, d);
  const xs = standardise(train.x, n, d, norm);
  const vxs = val ? standardise(val.x, val.n, d, norm) : undefined;

  const initRng = mulberry32(deriveSeed(o.seed, 1));
  const shuffleRng = mulberry32(deriveSeed(o.seed, 2));
  const dropRng = mulberry32(deriveSeed(o.seed, 3));

  const H = o.hidden;
  const shapes: number[][] = kind === 'linear' ? [[d, C], [C]] : [[d, H], [H], [H, C], [C]];
  const init: Float32Array[] =
    kind === 'linear'
      ? [glorotUniform(d, C, initRng), new Float32Array(C)]
      : [glorotUniform(d, H, initRng), new Float32Array(H), glorotUniform(H, C, initRng), new Float32Array(C)];
  /** Which params get weight decay: the matrices, not the biases. */
  const decays = shapes.map((s) => s.length === 2);
  const useDropout = kind === 'mlp' && o.dropout > 0;

  const vars = init.map((p, i) => tf.variable(tf.tensor(p, shapes[i], 'float32'), true));
  const ms = shapes.map((s) => tf.variable(tf.zeros(s), false));
  const vs = shapes.map((s) => tf.variable(tf.zeros(s), false));
  const beta1 = 0.9;
  const beta2 = 0.999;
  const eps = 1e-7;

  const history: EpochLog[] = [];
  let best: Float32Array[] = init;
  let bestEpoch = 0;
  let bestLoss = Infinity;
  let stoppedEarly = false;
  let step = 0;
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const bsMax = Math.min(o.batchSize, n);
  const xbBuf = new Float32Array(bsMax * d);
  const ybBuf = new Int32Array(bsMax);
  const maskBuf = useDropout ? new Float32Array(bsMax * H) : undefined;
  const keepScale = 1 / (1 - o.dropout);

  try {
    for (let epoch = 1; epoch <= o.epochs; epoch++) {
      shuffleInPlace(order, shuffleRng);
      let lossSum = 0;
      let correct = 0;
      for (let start = 0; start < n; start += o.batchSize) {
        const m = Math.min(o.batchSize, n - start);
        for (let r = 0; r < m; r++) {
          const src = order[start + r];
          xbBuf.set(xs.subarray(src * d, (src + 1) * d), r * d);
          ybBuf[r] = train.y[src];
        }
        if (maskBuf) for (let i = 0; i < m * H; i++) maskBuf[i] = dropRng() >= o.dropout ? keepScale : 0;
        step++;
        // Adam with the bias corrections folded into the step size; decay decoupled from the gradient (AdamW).
        const lrT = (o.lr * Math.sqrt(1 - Math.pow(beta2, step))) / (1 - Math.pow(beta1, step));
        const [lossT, correctT] = tf.tidy(() => {
          const xb = tf.tensor2d(xbBuf.subarray(0, m * d), [m, d]);
          const yIdx = tf.tensor1d(ybBuf.subarray(0, m), 'int32');
          const yb = tf.oneHot(yIdx, C);
          const mask = maskBuf ? tf.tensor2d(maskBuf.subarray(0, m * H), [m, H]) : undefined;
          const { loss, correct: nCorrect, grads } = denseLossAndGrads(kind, vars, xb, yIdx, yb, mask);
          for (let i = 0; i < vars.length; i++) {
            const w = vars[i];
            const g = grads[i];
            const mNew = tf.add(tf.mul(ms[i], beta1), tf.mul(g, 1 - beta1));
            const vNew = tf.add(tf.mul(vs[i], beta2), tf.mul(tf.square(g), 1 - beta2));
            ms[i].assign(mNew);
            vs[i].assign(vNew);
            let upd = tf.mul(tf.div(mNew, tf.add(tf.sqrt(vNew), eps)), lrT);
            if (decays[i] && o.weightDecay > 0) upd = tf.add(upd, tf.mul(w, o.lr * o.weightDecay));
            w.assign(tf.sub(w, upd));
          }
          return [loss, nCorrect];
        });
        const batchLoss = (lossT.dataSync() as Float32Array)[0];
        correct += (correctT.dataSync() as Float32Array)[0];
        lossT.dispose();
        correctT.dispose();
        lossSum += batchLoss * m;
      }
      const log: EpochLog = { epoch, trainLoss: lossSum / n, trainAcc: correct / n, lr: o.lr };
      if (!Number.isFinite(log.trainLoss)) {
        throw new GraftError(`training diverged (loss is ${log.trainLoss} at epoch ${epoch}); try a lower learning rate`);
      }
      let improved = false;
      if (val && vxs) {
        const p = denseProba(kind, vars, vxs, val.n, d, C);
        log.valLoss = logLoss(p, val.y, C);
        log.valAcc = accuracyOf(p, val.y, C);
        if (log.valLoss < bestLoss) {
          bestLoss = log.valLoss;
          improved = true;
        }
      } else {
        improved = true; // no validation: the last epoch is the one kept
      }
      if (improved) {
        bestEpoch = epoch;
        best = vars.map((v) => (v.dataSync() as Float32Array).slice());
      }
      history.push(log);
      onEpoch?.(log);
      if (val && epoch - bestEpoch >= o.patience && epoch < o.epochs) {
        stoppedEarly = true;
        break;
      }
    }
  } finally {
    for (const t of [...vars, ...ms, ...vs]) t.dispose();
  }

  const training: Record<string, unknown> = {
    epochs: o.epochs,
    batchSize: o.batchSize,
    lr: o.lr,
    weightDecay: o.weightDecay,
    ...(kind === 'mlp' ? { hidden: o.hidden, dropout: o.dropout } : {}),
    patience: o.patience === Infinity ? null : o.patience,
    seed: o.seed,
    trainExamples: n,
    bestEpoch,
    epochsRun: history.length,
  };
  const head = new DenseHead(kind, [...classes], d, norm, best, shapes, training);
  return { head, history, bestEpoch, stoppedEarly };
}

// ---------------------------------------------------------------------------------------------------------------
// kNN (few-shot)

/**
 * Centre by the training mean, then L2-normalise ("CL2N", as in SimpleShot): cosine similarity on centred features
 * is a strong few-shot baseline, and unlike full standardisation it does not amplify noisy dimensions whose std is
 * estimated from a handful of examples. (The head's JSON carries std = 1.)
 */
function centreNormalise(x: Float32Array, n: number, d: number, mean: Float32Array): Float32Array {
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const o = i * d;
    let ss = 0;
    for (let j = 0; j < d; j++) {
      const v = x[o + j] - mean[j];
      out[o + j] = v;
      ss += v * v;
    }
    const inv = ss > 0 ? 1 / Math.sqrt(ss) : 0;
    for (let j = 0; j < d; j++) out[o + j] *= inv;
  }
  return out;
}

class KnnHead implements Head {
  readonly kind = 'knn' as const;
  constructor(
    readonly classes: string[],
    readonly dim: number,
    private readonly mean: Float32Array,
    /** n × dim, centred and L2-normalised. */
    private readonly features: Float32Array,
    private readonly labels: Int32Array,
    readonly k: number,
    readonly vote: 'weighted' | 'majority',
    private readonly training?: Record<string, unknown>,
  ) {}

  predictProba(x: Float32Array, n: number): Float32Array {
    checkInput(x, n, this.dim);
    const C = this.classes.length;
    const out = new Float32Array(n * C);
    if (n === 0) return out;
    const d = this.dim;
    const m = this.labels.length;
    const k = Math.min(this.k, m);
    const q = centreNormalise(x, n, d, this.mean);
    const stored = tf.tensor2d(this.features, [m, d]);
    const topSim = new Float64Array(k);
    const topIdx = new Int32Array(k);
    const votes = new Float64Array(C);
    try {
      const chunk = 256;
      for (let start = 0; start < n; start += chunk) {
        const rows = Math.min(chunk, n - start);
        const simT = tf.tidy(() => tf.matMul(tf.tensor2d(q.subarray(start * d, (start + rows) * d), [rows, d]), stored, false, true));
        const sims = simT.dataSync() as Float32Array;
        simT.dispose();
        for (let r = 0; r < rows; r++) {
          // top-k by insertion (k is small); ties keep the earlier stored example
          let filled = 0;
          const o = r * m;
          for (let j = 0; j < m; j++) {
            const s = sims[o + j];
            if (filled === k && s <= topSim[k - 1]) continue;
            let pos = filled < k ? filled++ : k - 1;
            while (pos > 0 && topSim[pos - 1] < s) {
              topSim[pos] = topSim[pos - 1];
              topIdx[pos] = topIdx[pos - 1];
              pos--;
            }
            topSim[pos] = s;
            topIdx[pos] = j;
          }
          votes.fill(0);
          let total = 0;
          for (let t = 0; t < k; t++) {
            const w = this.vote === 'weighted' ? (1 + Math.max(-1, Math.min(1, topSim[t]))) / 2 : 1;
            votes[this.labels[topIdx[t]]] += w;
            total += w;
          }
          const base = (start + r) * C;
          if (total > 0) for (let c = 0; c < C; c++) out[base + c] = votes[c] / total;
          else out[base + this.labels[topIdx[0]]] = 1; // all neighbours exactly opposite: nearest one wins
        }
      }
    } finally {
      stored.dispose();
    }
    return out;
  }

  toJSON(): HeadJson {
    const ones = new Float32Array(this.dim).fill(1);
    return {
      format: 'graft-head',
      version: 1,
      kind: 'knn',
      classes: [...this.classes],
      dim: this.dim,
      mean: encodeFloat32(this.mean, [this.dim]),
      std: encodeFloat32(ones, [this.dim]),
      ...(this.training ? { training: this.training } : {}),
      params: {
        k: this.k,
        vote: this.vote,
        features: encodeFloat32(this.features, [this.labels.length, this.dim]),
        labels: Array.from(this.labels),
      },
    };
  }
}

function trainKnn(train: FeatureSet, classes: string[], o: Resolved): TrainResult {
  const { n, d } = train;
  const { mean } = fitStandardiser(train.x, n, d);
  const feats = centreNormalise(train.x, n, d, mean);
  const head = new KnnHead([...classes], d, mean, feats, Int32Array.from(train.y), o.k, o.vote, {
    k: o.k,
    vote: o.vote,
    trainExamples: n,
  });
  return { head, history: [], bestEpoch: 0, stoppedEarly: false };
}
