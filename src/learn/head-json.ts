/**
 * What every classifier head shares: the types, the JSON form a run's head.json holds (zod-checked when read back,
 * weights as base64 float32), and the standardisation fitted on the training features.
 */
import { endianness } from 'node:os';
import { z } from 'zod';
import { GraftError } from '../errors.js';

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
  predictProba(x: Float32Array, n: number): Promise<Float32Array>;
  toJSON(): HeadJson;
  /** Release what prediction holds (an ONNX Runtime session for dense heads). */
  dispose(): Promise<void>;
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

export function describeZodError(err: z.ZodError): string {
  const issues = err.issues.slice(0, 3).map((iss) => {
    const where = iss.path.length > 0 ? iss.path.join('.') : '(top level)';
    return `${where}: ${iss.message}`;
  });
  const more = err.issues.length > 3 ? ` (and ${err.issues.length - 3} more problems)` : '';
  return issues.join('; ') + more;
}

// ---------------------------------------------------------------------------------------------------------------
// Standardisation

export interface Standardiser {
  mean: Float32Array;
  std: Float32Array;
}

export function fitStandardiser(x: Float32Array, n: number, d: number): Standardiser {
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

export function checkInput(x: Float32Array, n: number, dim: number): void {
  if (!Number.isInteger(n) || n < 0) throw new GraftError(`predictProba: n must be a non-negative integer, got ${n}`);
  if (x.length !== n * dim) {
    throw new GraftError(`predictProba: expected ${n} × ${dim} = ${n * dim} features, got ${x.length}`);
  }
}

/** TrainOptions with every default filled in (heads.ts checks them). */
export interface HeadSettings {
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
