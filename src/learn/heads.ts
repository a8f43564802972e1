/**
 * Classifier heads trained on pre-extracted feature vectors: softmax regression, a one-hidden-layer MLP, and a
 * few-shot kNN. Dense heads minimise cross-entropy with Adam and decoupled weight decay (AdamW); everything random
 * (init, shuffling, dropout) comes from seeded streams, so the same seed gives bit-identical weights and history.
 *
 * The maths runs on plain Float32Arrays (./kernels.ts), not TF.js tensors: tfjs-core on its own registers no
 * gradients, and for heads this small its per-op overhead dominated (a 100-epoch linear head on 2000 × 768 took
 * ~11 s with TF.js ops vs ~1–2 s with fused loops). So a head holds no tensors: nothing to dispose, nothing to leak,
 * and it serialises to plain JSON.
 */
import { endianness } from 'node:os';
import { z } from 'zod';
import { GraftError, UsageError } from '../errors.js';
import { deriveSeed, mulberry32, shuffleInPlace, type Rng } from '../util/random.js';
import { addRowBias, gemmABt, softmaxRows, sumRows, transpose } from './kernels.js';
import { accuracyOf, logLoss, classWeights } from './metrics.js';

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
  /** Default 'linear'. */
  kind?: HeadKind;
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
  /** Weight each example's loss by n / (C · n_class), so rare classes count as much as common ones (default false). */
  balance?: boolean;
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
  /** nn.Linear layout: W: C × dim (row c = class c's weights), b: C. */
  params: z.object({ W: BlobSchema, b: BlobSchema }),
});
const MlpSchema = z.object({
  ...CommonSchema,
  kind: z.literal('mlp'),
  /** nn.Linear layout: W1: hidden × dim, b1: hidden, W2: C × hidden, b2: C. */
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

export function decodeFloat32(blob: Float32Blob, expectShape: number[], what: string, source: string): Float32Array {
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
      const W = decodeFloat32(h.params.W, [C, d], 'params.W', source);
      const b = decodeFloat32(h.params.b, [C], 'params.b', source);
      return new DenseHead('linear', h.classes, d, norm, [W, b], denseShapes('linear', d, 0, C), h.training);
    }
    case 'mlp': {
      const H = h.params.W1.shape[0];
      if (!(Number.isInteger(H) && H > 0)) throw new GraftError(`${source}: params.W1 must have shape [hidden × dim]`);
      const W1 = decodeFloat32(h.params.W1, [H, d], 'params.W1', source);
      const b1 = decodeFloat32(h.params.b1, [H], 'params.b1', source);
      const W2 = decodeFloat32(h.params.W2, [C, H], 'params.W2', source);
      const b2 = decodeFloat32(h.params.b2, [C], 'params.b2', source);
      return new DenseHead('mlp', h.classes, d, norm, [W1, b1, W2, b2], denseShapes('mlp', d, H, C), h.training);
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
//
// Parameters are kept in nn.Linear layout (out × in): linear [W: C × d, b: C]; mlp [W1: H × d, b1: H, W2: C × H, b2: C].

type DenseKind = 'linear' | 'mlp';

function denseShapes(kind: DenseKind, d: number, H: number, C: number): number[][] {
  return kind === 'linear' ? [[C, d], [C]] : [[H, d], [H], [C, H], [C]];
}

const PREDICT_CHUNK = 256;

/**
 * Softmax probabilities for already-standardised rows (no dropout). Used by trained heads and for the per-epoch
 * validation loss alike, and each row's result is independent of the chunking, so the two agree bit for bit.
 */
function denseProba(kind: DenseKind, params: Float32Array[], xs: Float32Array, n: number, d: number, C: number): Float32Array {
  const out = new Float32Array(n * C);
  const H = kind === 'mlp' ? params[1].length : 0;
  const hidden = kind === 'mlp' ? new Float32Array(PREDICT_CHUNK * H) : undefined;
  for (let start = 0; start < n; start += PREDICT_CHUNK) {
    const m = Math.min(PREDICT_CHUNK, n - start);
    const x = xs.subarray(start * d, (start + m) * d);
    const logits = out.subarray(start * C, (start + m) * C);
    if (kind === 'linear') {
      gemmABt(x, params[0], logits, m, C, d);
      addRowBias(logits, params[1], m, C);
    } else {
      const h = hidden!.subarray(0, m * H);
      gemmABt(x, params[0], h, m, H, d);
      addRowBias(h, params[1], m, H);
      for (let i = 0; i < h.length; i++) if (!(h[i] > 0)) h[i] = 0;
      gemmABt(h, params[2], logits, m, C, H);
      addRowBias(logits, params[3], m, C);
    }
    softmaxRows(logits, m, C, logits);
  }
  return out;
}

interface StepResult {
  /** Mean cross-entropy over the batch. */
  loss: number;
  /** Rows whose largest logit is the label's. */
  correct: number;
  /** Gradients of the mean loss, same order and shapes as the params (buffers reused between calls). */
  grads: Float32Array[];
}

/**
 * Forward and backward pass for one batch under softmax cross-entropy, with workspaces allocated once:
 *   dlogits = (softmax − onehot) / m,   dW = dlogitsᵀ·input,   db = Σ_rows dlogits,
 *   through the hidden layer:  dz1 = (dlogits·W2) ⊙ gate,  gate = [z1 > 0] ⊙ dropout mask (inverted scaling).
 */
function makeDenseStep(kind: DenseKind, d: number, H: number, C: number, maxBatch: number) {
  const shapes = denseShapes(kind, d, H, C);
  const grads = shapes.map((s) => new Float32Array(s.reduce((a, b) => a * b, 1)));
  const logits = new Float32Array(maxBatch * C);
  const dl = new Float32Array(maxBatch * C);
  const dlT = new Float32Array(maxBatch * C);
  const xbT = new Float32Array(maxBatch * d);
  const mlp = kind === 'mlp';
  const h = new Float32Array(mlp ? maxBatch * H : 0);
  const gate = new Float32Array(mlp ? maxBatch * H : 0);
  const hT = new Float32Array(mlp ? maxBatch * H : 0);
  const dz = new Float32Array(mlp ? maxBatch * H : 0);
  const dzT = new Float32Array(mlp ? maxBatch * H : 0);
  const w2T = new Float32Array(mlp ? H * C : 0);

  // cw: per-class loss weights (class balancing); the loss is the mean of w[y] · cross-entropy over the batch.
  return (params: Float32Array[], xb: Float32Array, yb: Int32Array, m: number, mask?: Float32Array, cw?: Float32Array): StepResult => {
    const lg = logits.subarray(0, m * C);
    if (!mlp) {
      gemmABt(xb, params[0], lg, m, C, d);
      addRowBias(lg, params[1], m, C);
    } else {
      const z = h.subarray(0, m * H);
      gemmABt(xb, params[0], z, m, H, d);
      addRowBias(z, params[1], m, H);
      for (let i = 0; i < m * H; i++) {
        const g = z[i] > 0 ? (mask ? mask[i] : 1) : 0;
        gate[i] = g;
        z[i] = z[i] * g;
      }
      gemmABt(z, params[2], lg, m, C, H);
      addRowBias(lg, params[3], m, C);
    }

    let loss = 0;
    let correct = 0;
    for (let i = 0; i < m; i++) {
      const o = i * C;
      let max = -Infinity;
      let arg = 0;
      for (let c = 0; c < C; c++) {
        if (lg[o + c] > max) {
          max = lg[o + c];
          arg = c;
        }
      }
      if (arg === yb[i]) correct++;
      let sum = 0;
      for (let c = 0; c < C; c++) sum += Math.exp(lg[o + c] - max);
      const lse = Math.log(sum);
      const w = cw ? cw[yb[i]] : 1;
      loss -= w * (lg[o + yb[i]] - max - lse);
      for (let c = 0; c < C; c++) dl[o + c] = (w * (Math.exp(lg[o + c] - max - lse) - (c === yb[i] ? 1 : 0))) / m;
    }

    transpose(dl, m, C, dlT);
    transpose(xb, m, d, xbT);
    if (!mlp) {
      gemmABt(dlT, xbT, grads[0], C, d, m);
      sumRows(dl, m, C, grads[1]);
    } else {
      transpose(h, m, H, hT);
      gemmABt(dlT, hT, grads[2], C, H, m);
      sumRows(dl, m, C, grads[3]);
      transpose(params[2], C, H, w2T);
      gemmABt(dl, w2T, dz, m, H, C);
      for (let i = 0; i < m * H; i++) dz[i] *= gate[i];
      transpose(dz, m, H, dzT);
      gemmABt(dzT, xbT, grads[0], H, d, m);
      sumRows(dz, m, H, grads[1]);
    }
    return { loss: loss / m, correct, grads };
  };
}

/**
 * Mean loss and gradients of a dense head's params on one batch of standardised rows (exposed for gradient checks
 * in tests). params/shapes in nn.Linear layout; `mask` (mlp) multiplies the hidden activations.
 */
export function denseLossAndGrads(
  kind: DenseKind,
  params: Float32Array[],
  x: Float32Array,
  y: Int32Array,
  d: number,
  numClasses: number,
  mask?: Float32Array,
): { loss: number; grads: Float32Array[] } {
  const H = kind === 'mlp' ? params[1].length : 0;
  const step = makeDenseStep(kind, d, H, numClasses, y.length);
  const r = step(params, x, y, y.length, mask);
  return { loss: r.loss, grads: r.grads.map((g) => g.slice()) };
}

class DenseHead implements Head {
  constructor(
    readonly kind: DenseKind,
    readonly classes: string[],
    readonly dim: number,
    private readonly norm: Standardiser,
    private readonly params: Float32Array[],
    private readonly shapes: number[][],
    private readonly training?: Record<string, unknown>,
  ) {}

  predictProba(x: Float32Array, n: number): Float32Array {
    checkInput(x, n, this.dim);
    if (n === 0) return new Float32Array(0);
    return denseProba(this.kind, this.params, standardise(x, n, this.dim, this.norm), n, this.dim, this.classes.length);
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

/** Glorot (Xavier) uniform init of an out × in matrix: U(-l, l), l = sqrt(6 / (in + out)). */
function glorotUniform(fanOut: number, fanIn: number, rng: Rng): Float32Array {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  const w = new Float32Array(fanIn * fanOut);
  for (let i = 0; i < w.length; i++) w[i] = (rng() * 2 - 1) * limit;
  return w;
}

const BETA1 = 0.9;
const BETA2 = 0.999;
const ADAM_EPS = 1e-8;

/**
 * One AdamW step in place: Adam on the gradient, plus decoupled decay w ← w − lr·wd·w (weight matrices only).
 */
function adamwStep(
  w: Float32Array,
  g: Float32Array,
  m1: Float32Array,
  m2: Float32Array,
  step: number,
  lr: number,
  decay: number,
): void {
  const bc1 = 1 - Math.pow(BETA1, step);
  const bc2 = 1 - Math.pow(BETA2, step);
  const lrDecay = lr * decay;
  for (let i = 0; i < w.length; i++) {
    const gi = g[i];
    const a = BETA1 * m1[i] + (1 - BETA1) * gi;
    const b = BETA2 * m2[i] + (1 - BETA2) * gi * gi;
    m1[i] = a;
    m2[i] = b;
    const wi = w[i];
    w[i] = wi - (lr * (a / bc1)) / (Math.sqrt(b / bc2) + ADAM_EPS) - lrDecay * wi;
  }
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
  balance: boolean;
  seed: number;
  k: number;
  vote: 'weighted' | 'majority';
}

function resolveOptions(o: TrainOptions): Resolved {
  const r: Resolved = {
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

/** Yield to the event loop every this many ms, so a long training run does not starve timers and signals. */
const YIELD_EVERY_MS = 100;

async function trainDense(
  train: FeatureSet,
  val: FeatureSet | undefined,
  classes: string[],
  o: Resolved,
  onEpoch: ((e: EpochLog) => void) | undefined,
): Promise<TrainResult> {
  const kind = o.kind as DenseKind;
  const { n, d } = train;
  const C = classes.length;
  const H = kind === 'mlp' ? o.hidden : 0;
  const norm = fitStandardiser(train.x, n, d);
  const xs = standardise(train.x, n, d, norm);
  const vxs = val ? standardise(val.x, val.n, d, norm) : undefined;

  // Independent streams: changing one consumer (e.g. the dropout rate) does not shift the others.
  const initRng = mulberry32(deriveSeed(o.seed, 1));
  const shuffleRng = mulberry32(deriveSeed(o.seed, 2));
  const dropRng = mulberry32(deriveSeed(o.seed, 3));

  const shapes = denseShapes(kind, d, H, C);
  const params: Float32Array[] =
    kind === 'linear'
      ? [glorotUniform(C, d, initRng), new Float32Array(C)]
      : [glorotUniform(H, d, initRng), new Float32Array(H), glorotUniform(C, H, initRng), new Float32Array(C)];
  const decays = shapes.map((s) => (s.length === 2 ? o.weightDecay : 0)); // matrices decay, biases do not
  const m1 = params.map((p) => new Float32Array(p.length));
  const m2 = params.map((p) => new Float32Array(p.length));

  const cw = o.balance ? classWeights(train.y, C) : undefined;
  const bsMax = Math.min(o.batchSize, n);
  const stepFn = makeDenseStep(kind, d, H, C, bsMax);
  const xb = new Float32Array(bsMax * d);
  const yb = new Int32Array(bsMax);
  const useDropout = kind === 'mlp' && o.dropout > 0;
  const mask = useDropout ? new Float32Array(bsMax * H) : undefined;
  const keepScale = 1 / (1 - o.dropout);
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;

  const history: EpochLog[] = [];
  let best: Float32Array[] = params.map((p) => p.slice());
  let bestEpoch = 0;
  let bestLoss = Infinity;
  let stoppedEarly = false;
  let step = 0;
  let lastYield = performance.now();

  for (let epoch = 1; epoch <= o.epochs; epoch++) {
    shuffleInPlace(order, shuffleRng);
    let lossSum = 0;
    let correct = 0;
    for (let start = 0; start < n; start += o.batchSize) {
      const m = Math.min(o.batchSize, n - start);
      for (let r = 0; r < m; r++) {
        const src = order[start + r];
        xb.set(xs.subarray(src * d, (src + 1) * d), r * d);
        yb[r] = train.y[src];
      }
      if (mask) for (let i = 0; i < m * H; i++) mask[i] = dropRng() >= o.dropout ? keepScale : 0;
      const res = stepFn(params, xb.subarray(0, m * d), yb, m, mask, cw);
      step++;
      for (let i = 0; i < params.length; i++) adamwStep(params[i], res.grads[i], m1[i], m2[i], step, o.lr, decays[i]);
      lossSum += res.loss * m;
      correct += res.correct;
    }
    const log: EpochLog = { epoch, trainLoss: lossSum / n, trainAcc: correct / n, lr: o.lr };
    if (!Number.isFinite(log.trainLoss)) {
      throw new GraftError(`training diverged (loss is ${log.trainLoss} at epoch ${epoch}); try a lower learning rate`);
    }
    let improved: boolean;
    if (val && vxs) {
      const p = denseProba(kind, params, vxs, val.n, d, C);
      log.valLoss = logLoss(p, val.y, C);
      log.valAcc = accuracyOf(p, val.y, C);
      improved = log.valLoss < bestLoss;
      if (improved) bestLoss = log.valLoss;
    } else {
      improved = true; // no validation set: the last epoch is the one kept
    }
    if (improved) {
      bestEpoch = epoch;
      best = params.map((p) => p.slice());
    }
    history.push(log);
    onEpoch?.(log);
    if (val && epoch - bestEpoch >= o.patience && epoch < o.epochs) {
      stoppedEarly = true;
      break;
    }
    if (performance.now() - lastYield > YIELD_EVERY_MS) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      lastYield = performance.now();
    }
  }

  const training: Record<string, unknown> = {
    epochs: o.epochs,
    batchSize: o.batchSize,
    lr: o.lr,
    weightDecay: o.weightDecay,
    ...(kind === 'mlp' ? { hidden: o.hidden, dropout: o.dropout } : {}),
    patience: o.patience === Infinity ? null : o.patience,
    ...(o.balance ? { balance: true } : {}),
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
    const topSim = new Float64Array(k);
    const topIdx = new Int32Array(k);
    const votes = new Float64Array(C);
    const chunk = 64;
    const simBuf = new Float32Array(Math.min(chunk, n) * m);
    for (let start = 0; start < n; start += chunk) {
      const rows = Math.min(chunk, n - start);
      const sims = simBuf.subarray(0, rows * m);
      gemmABt(q.subarray(start * d, (start + rows) * d), this.features, sims, rows, m, d);
      for (let r = 0; r < rows; r++) {
        // top-k by insertion (k is small); on equal similarity the earlier stored example ranks first
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
        else out[base + this.labels[topIdx[0]]] = 1; // every neighbour exactly opposite: the nearest one decides
      }
    }
    return out;
  }

  toJSON(): HeadJson {
    return {
      format: 'graft-head',
      version: 1,
      kind: 'knn',
      classes: [...this.classes],
      dim: this.dim,
      mean: encodeFloat32(this.mean, [this.dim]),
      std: encodeFloat32(new Float32Array(this.dim).fill(1), [this.dim]),
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
