/**
 * The trainable state of one fine-tuning job — the suffix's weights, the head, AdamW moments — and one optimiser
 * step, on ONNX Runtime: the step is a gradient program (engine/grad) of the suffix + head with cross-entropy, the
 * validation and feature passes an inference session of the same graph with the weights as inputs. Shared by
 * `finetune` (the epoch loop) and `lrFind` (the learning-rate sweep).
 */
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { GradientProgram } from '../engine/grad/program.js';
import { createSession } from '../engine/ort.js';
import { GraftError } from '../errors.js';
import type { LoadedOnnx } from '../models/onnx-file.js';
import { deriveSeed, mulberry32 } from '../util/random.js';
import { suffixModel } from '../onnx/cut.js';
import { tensorValues } from '../onnx/proto.js';
import { bnAffineNames, bnStatNames, convWeightNames } from './blocks.js';
import { encodeFloat32, headFromJSON, trainHead, type Head } from './heads.js';
import { classWeights } from './metrics.js';
import { HEAD, initializersAsInputs, withLinearHead } from './train-graph.js';
import type { CutSet, FinetuneSettings } from './finetune.js';

/** A parameter with its AdamW moments; `lrMul` scales the learning rate, `decay` applies weight decay. */
export interface AdamParam { value: Float32Array; m: Float32Array; s: Float32Array; lrMul: number; decay: boolean }
interface Param extends AdamParam { key: string; name: string }

/**
 * One AdamW update (beta2 0.999, eps 1e-8, decoupled weight decay) of `params` with gradients `grads` (same order),
 * scaled by `scale` (gradient clipping); `t` is the 0-based step.
 */
export function adamwUpdate(params: AdamParam[], grads: Float32Array[], o: { lr: number; beta1: number; t: number; scale: number; weightDecay: number }): void {
  const { lr, beta1, t, scale } = o;
  const b2 = 0.999;
  const c1 = 1 - beta1 ** (t + 1);
  const c2 = 1 - b2 ** (t + 1);
  for (let k = 0; k < params.length; k++) {
    const p = params[k]!;
    const g = grads[k]!;
    const step = lr * p.lrMul;
    const wd = p.decay ? o.weightDecay : 0;
    const { value, m, s } = p;
    for (let i = 0; i < value.length; i++) {
      const gi = g[i]! * scale;
      m[i] = m[i]! * beta1 + gi * (1 - beta1);
      s[i] = s[i]! * b2 + gi * gi * (1 - b2);
      value[i] = value[i]! - step * (m[i]! / c1 / (Math.sqrt(s[i]! / c2) + 1e-8) + wd * value[i]!);
    }
  }
}

const stepRng = (seed: number, epoch: number, step: number) => mulberry32(deriveSeed(deriveSeed(seed, 5000 + epoch), step));

const dec = (b: { base64: string }) => new Float32Array(new Uint8Array(Buffer.from(b.base64, 'base64')).buffer);

export class FinetuneSession {
  readonly params: Param[] = [];
  /** Running statistics of batch norm in training mode, by initializer name. */
  readonly statistics: Record<string, Float32Array> = {};
  private programs = new Map<number, Promise<GradientProgram>>();

  private constructor(
    private readonly trainBytes: Uint8Array,
    private readonly evalSession: ort.InferenceSession,
    readonly featureTensor: string,
    readonly cutShape: number[],
    readonly C: number,
    readonly d: number,
    readonly trainable: string[],
    private readonly bnMeans: string[],
    readonly probeJson: Record<string, unknown>,
    private readonly o: FinetuneSettings,
    private readonly rowWeights: Float32Array | undefined,
    private readonly shapes: Map<string, number[]>,
  ) {}

  static async create(
    model: LoadedOnnx,
    featureTensor: string,
    cut: string,
    cutShape: number[],
    train: CutSet,
    val: CutSet | undefined,
    classes: string[],
    o: FinetuneSettings,
    onInfo?: (message: string) => void,
  ): Promise<FinetuneSession> {
    const C = classes.length;
    const per = cutShape.reduce((a, b) => a * b, 1);
    if (train.x.length !== train.n * per) throw new GraftError(`training cut tensors: ${train.x.length} floats for ${train.n} × ${per}`);
    for (const v of train.views ?? []) if (v.length !== train.n * per) throw new GraftError(`augmented cut tensors: ${v.length} floats for ${train.n} × ${per}`);
    const suffix = suffixModel(model, cut, cutShape, [featureTensor]);
    const convs = convWeightNames(suffix);
    const trainable = o.trainBn ? [...convs, ...bnAffineNames(suffix).filter((n) => !convs.includes(n))] : convs;
    const statistics = o.trainBn ? bnStatNames(suffix) : [];
    const g = suffix.proto.graph!;
    const bnNodes = g.node!.filter((n) => n.opType === 'BatchNormalization' && statistics.includes(n.input?.[3] ?? ''));
    if (o.trainBn) {
      onInfo?.(
        bnNodes.length > 0
          ? `--train-bn: ${bnNodes.length} batch-norm layer${bnNodes.length === 1 ? '' : 's'} in the fine-tuned blocks train in training mode (batch statistics; running mean/var updated)`
          : '--train-bn: batch norm in the fine-tuned blocks is folded into constants (no running statistics): only its scale and shift train',
      );
    }
    const inits = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
    const initValue = (name: string): Float32Array => Float32Array.from(tensorValues(inits.get(name)!));
    const dims = (name: string) => (inits.get(name)!.dims ?? []).map(Number);
    const shapes = new Map([...trainable, ...statistics].map((n) => [n, dims(n)]));

    // Pooled features of the frozen suffix, for the linear probe that starts the head: the evaluation graph with a
    // placeholder head (its logits are not read).
    const dProbe = await featureDim(suffix.bytes, featureTensor, cutShape, model.info.path);
    const placeholder = { W: new Float32Array(C * dProbe), b: new Float32Array(C), mean: new Float32Array(dProbe), std: new Float32Array(dProbe).fill(1) };
    const evalBytes = initializersAsInputs(withLinearHead(suffix.bytes, featureTensor, dProbe, C, false, placeholder), [...trainable, ...statistics, HEAD.W, HEAD.b, HEAD.mean, HEAD.std]);
    const evalSession = await createSession(evalBytes, { where: `${model.info.path} (evaluation graph)` });
    let ok = false;
    try {
      const weights: Record<string, Float32Array> = {};
      for (const n of [...trainable, ...statistics]) weights[n] = initValue(n);
      const feats = async (set: CutSet) => (await runEval(evalSession, set, cutShape, { ...weights, [HEAD.W]: placeholder.W, [HEAD.b]: placeholder.b, [HEAD.mean]: placeholder.mean, [HEAD.std]: placeholder.std }, shapes, featureTensor, C, dProbe)).features;
      const f0 = await feats(train);
      const fv = val && val.n > 0 ? await feats(val) : undefined;
      const d = dProbe;
      // The head starts where `graft train`'s linear head would end: same trainer, same early stopping.
      const probe = await trainHead({ x: f0, n: train.n, d, y: train.y }, fv ? { x: fv, n: val!.n, d, y: val!.y } : undefined, classes, {
        kind: 'linear',
        epochs: Math.max(1, o.probeEpochs),
        balance: o.balance,
        seed: o.seed, // the same seed as `graft train`: fine-tuning starts from the very head it would train
      });
      const pj = probe.head.toJSON();
      if (pj.kind !== 'linear') throw new Error('unreachable');
      let W0 = dec(pj.params.W);
      let b0 = dec(pj.params.b);
      if (o.probeEpochs === 0) {
        const rng = mulberry32(deriveSeed(o.seed, 12));
        const l = Math.sqrt(6 / (d + C));
        W0 = Float32Array.from({ length: C * d }, () => (rng() * 2 - 1) * l);
        b0 = new Float32Array(C);
      }
      const head = { W: W0, b: b0, mean: dec(pj.mean), std: dec(pj.std) };
      const trainBytes = withLinearHead(suffix.bytes, featureTensor, d, C, o.dropout > 0, head);
      const rowWeights = o.balance ? classWeights(train.y, C) : undefined;
      const s = new FinetuneSession(trainBytes, evalSession, featureTensor, cutShape, C, d, trainable, bnNodes.map((n) => n.input![3]!), pj as unknown as Record<string, unknown>, o, rowWeights, shapes);
      const add = (key: string, name: string, value: Float32Array, lrMul: number, decay: boolean) =>
        s.params.push({ key, name, value, m: new Float32Array(value.length), s: new Float32Array(value.length), lrMul, decay });
      for (const name of trainable) add(`w:${name}`, name, weights[name]!, o.backboneLrFactor, convs.includes(name) && dims(name).length > 1);
      add('head:W', HEAD.W, W0.slice(), 1, true);
      add('head:b', HEAD.b, b0.slice(), 1, false);
      for (const n of statistics) s.statistics[n] = weights[n]!;
      s.headStats = { mean: head.mean, std: head.std };
      ok = true;
      return s;
    } finally {
      if (!ok) await evalSession.release();
    }
  }

  private headStats!: { mean: Float32Array; std: Float32Array };

  private program(n: number): Promise<GradientProgram> {
    let p = this.programs.get(n);
    if (!p) {
      p = GradientProgram.create(
        this.trainBytes,
        {
          batch: n,
          params: this.params.map((q) => q.name),
          wrt: this.params.map((q) => q.name),
          loss: [{ kind: 'cross-entropy', logits: HEAD.logits, targets: 'targets' }],
          outputs: [HEAD.logits],
          bnTraining: this.bnMeans,
        },
        { threads: availableParallelism(), where: 'fine-tuning graph' },
      );
      this.programs.set(n, p);
    }
    return p;
  }

  private weightFeeds(): Record<string, Float32Array> {
    const f: Record<string, Float32Array> = { ...this.statistics, [HEAD.mean]: this.headStats.mean, [HEAD.std]: this.headStats.std };
    for (const p of this.params) f[p.name] = p.value;
    return f;
  }

  /** Class probabilities of every row of a set (no augmentation, batch norm in inference mode), n × C. */
  async proba(set: CutSet): Promise<Float32Array> {
    const { logits } = await runEval(this.evalSession, set, this.cutShape, this.weightFeeds(), this.shapes, this.featureTensor, this.C, this.d);
    return softmaxRowsInPlace(logits, this.C);
  }

  /**
   * One AdamW step on the rows `idx` (views `viewOf`); returns the loss (before the update) and the number of correct
   * argmax predictions. Does not update when the loss or gradients are not finite (the caller stops).
   */
  async step(set: CutSet, idx: ArrayLike<number>, viewOf: ArrayLike<number> | undefined, mask: Float32Array | undefined, lr: number, beta1: number, t: number, lossHook?: (loss: number) => number): Promise<{ loss: number; correct: number; finite: boolean }> {
    const { C, o } = this;
    const n = idx.length;
    const per = this.cutShape.reduce((a, b) => a * b, 1);
    const x = new Float32Array(n * per);
    for (let i = 0; i < n; i++) {
      const src = viewOf && set.views ? set.views[viewOf[i]!]! : set.x;
      x.set(src.subarray(idx[i]! * per, (idx[i]! + 1) * per), i * per);
    }
    // Label smoothing, class weights and the batch mean all live in the targets: loss = Σ targets · (−log p).
    const targets = new Float32Array(n * C);
    const smooth = o.labelSmoothing;
    for (let i = 0; i < n; i++) {
      const y = set.y[idx[i]!]!;
      const w = (this.rowWeights ? this.rowWeights[y]! : 1) / n;
      for (let k = 0; k < C; k++) targets[i * C + k] = ((k === y ? 1 - smooth : 0) + smooth / C) * w;
    }
    const prog = await this.program(n);
    const feeds: Record<string, Float32Array> = { [prog.graph.inputs[0]!.name]: x, targets, ...this.weightFeeds() };
    if (mask) feeds[HEAD.mask] = mask;
    const r = await prog.run(feeds);
    let loss = r.loss;
    const logits = r.outputs[HEAD.logits]!.data;
    let correct = 0;
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let k = 1; k < C; k++) if (logits[i * C + k]! > logits[i * C + best]!) best = k;
      if (best === set.y[idx[i]!]) correct++;
    }
    if (lossHook) loss = lossHook(loss);
    const grads = this.params.map((p) => r.grads[p.name]!);
    let normSq = 0;
    for (const g of grads) for (let i = 0; i < g.length; i++) normSq += g[i]! * g[i]!;
    if (!Number.isFinite(loss) || !Number.isFinite(normSq)) return { loss, correct, finite: false };
    const scale = o.clipNorm > 0 ? Math.min(1, o.clipNorm / (Math.sqrt(normSq) + 1e-12)) : 1;
    adamwUpdate(this.params, grads, { lr, beta1, t, scale, weightDecay: o.weightDecay });
    // Batch-norm running statistics (training mode): updated after the optimiser step.
    for (const b of prog.fwd.bnStats) {
      const bm = r.outputs[b.batchMean]!.data;
      const bv = r.outputs[b.batchVar]!.data;
      const rm = this.statistics[b.mean]!;
      const rv = this.statistics[b.variance]!;
      for (let i = 0; i < rm.length; i++) {
        rm[i] = b.momentum * rm[i]! + (1 - b.momentum) * bm[i]!;
        rv[i] = b.momentum * rv[i]! + (1 - b.momentum) * bv[i]!;
      }
    }
    return { loss, correct, finite: true };
  }

  /** Step `s` of an epoch: its rows (and views) from the plan, its dropout mask from (seed, epoch, step). */
  async trainStep(
    train: CutSet,
    plan: { order: Int32Array; viewOf?: Int32Array },
    epoch: number,
    s: number,
    lr: number,
    beta1: number,
    t: number,
    lossHook?: (loss: number) => number,
  ): Promise<{ loss: number; correct: number; finite: boolean; rows: number }> {
    const bs = this.o.batchSize;
    const idx = plan.order.subarray(s * bs, Math.min(train.n, (s + 1) * bs));
    const mask = this.dropoutMask(idx.length, stepRng(this.o.seed, epoch, s));
    const r = await this.step(train, idx, plan.viewOf?.subarray(s * bs, s * bs + idx.length), mask, lr, beta1, t, lossHook);
    return { ...r, rows: idx.length };
  }

  dropoutMask(rows: number, rng: () => number): Float32Array | undefined {
    if (this.o.dropout <= 0) return undefined;
    const m = new Float32Array(rows * this.d);
    const keep = 1 - this.o.dropout;
    for (let i = 0; i < m.length; i++) m[i] = rng() < keep ? 1 / keep : 0;
    return m;
  }

  snapshot(withState: boolean): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    // Batch-norm running statistics are weights of the model (exported, restored with the best epoch).
    for (const [name, v] of Object.entries(this.statistics)) out[`bn:${name}`] = v.slice();
    for (const p of this.params) {
      out[p.key] = p.value.slice();
      if (withState) {
        out[`m:${p.key}`] = p.m.slice();
        out[`s:${p.key}`] = p.s.slice();
      }
    }
    return out;
  }

  restore(t: Record<string, Float32Array>, withState: boolean): void {
    const assign = (into: Float32Array, k: string) => {
      const a = t[k];
      if (!a || a.length !== into.length) throw new GraftError(`checkpoint does not match this model: '${k}'`);
      into.set(a);
    };
    for (const [name, v] of Object.entries(this.statistics)) assign(v, `bn:${name}`);
    for (const p of this.params) {
      assign(p.value, p.key);
      if (withState) {
        assign(p.m, `m:${p.key}`);
        assign(p.s, `s:${p.key}`);
      }
    }
  }

  /** The fine-tuned initializers (by original name) and the head as a graft linear head. */
  result(extra: Record<string, unknown>): { weights: Record<string, Float32Array>; head: Head } {
    const weights: Record<string, Float32Array> = {};
    for (const p of this.params) if (p.key.startsWith('w:')) weights[p.name] = p.value.slice();
    for (const [name, v] of Object.entries(this.statistics)) weights[name] = v.slice();
    const W = this.params.find((p) => p.key === 'head:W')!.value.slice();
    const b = this.params.find((p) => p.key === 'head:b')!.value.slice();
    const head = headFromJSON({
      ...this.probeJson,
      params: { W: encodeFloat32(W, [this.C, this.d]), b: encodeFloat32(b, [this.C]) },
      training: { kind: 'linear', finetune: true, ...extra },
    });
    return { weights, head };
  }

  async dispose(): Promise<void> {
    for (const p of this.programs.values()) await (await p.catch(() => undefined))?.release();
    this.programs.clear();
    await this.evalSession.release();
  }
}

/** The pooled feature size of a suffix (one forward pass of a zero batch of 1). */
async function featureDim(suffix: Uint8Array, featureTensor: string, cutShape: number[], where: string): Promise<number> {
  const s = await createSession(suffix, { where: `${where} (fine-tuned layers)`, threads: 1 });
  try {
    const input = s.inputNames[0]!;
    const out = await s.run({ [input]: new ort.Tensor('float32', new Float32Array(cutShape.reduce((a, b) => a * b, 1)), [1, ...cutShape]) });
    return out[featureTensor]!.data.length;
  } finally {
    await s.release();
  }
}

/** Features and logits of every row of a set through the evaluation graph, 64 rows at a time. */
async function runEval(session: ort.InferenceSession, set: CutSet, cutShape: number[], weights: Record<string, Float32Array>, shapes: Map<string, number[]>, featureTensor: string, C: number, d: number): Promise<{ features: Float32Array; logits: Float32Array }> {
  const per = cutShape.reduce((a, b) => a * b, 1);
  const features = new Float32Array(set.n * d);
  const logits = new Float32Array(set.n * C);
  const wt: Record<string, ort.Tensor> = {};
  for (const [name, v] of Object.entries(weights)) {
    const dims = name === HEAD.W ? [C, d] : name === HEAD.b ? [C] : name === HEAD.mean || name === HEAD.std ? [1, d] : shapes.get(name);
    if (!dims) throw new Error(`internal: no shape for weight '${name}'`);
    wt[name] = new ort.Tensor('float32', v, dims);
  }
  const input = session.inputNames[0]!;
  for (let s = 0; s < set.n; s += 64) {
    const n = Math.min(64, set.n - s);
    const x = set.x.subarray(s * per, (s + n) * per);
    const out = await session.run({ ...wt, [input]: new ort.Tensor('float32', x, [n, ...cutShape]) });
    features.set(out[featureTensor]!.data as Float32Array, s * d);
    logits.set(out[HEAD.logits]!.data as Float32Array, s * C);
  }
  return { features, logits };
}

function softmaxRowsInPlace(z: Float32Array, C: number): Float32Array {
  for (let r = 0; r < z.length; r += C) {
    let m = -Infinity;
    for (let k = 0; k < C; k++) m = Math.max(m, z[r + k]!);
    let s = 0;
    for (let k = 0; k < C; k++) s += (z[r + k] = Math.exp(z[r + k]! - m));
    for (let k = 0; k < C; k++) z[r + k]! /= s;
  }
  return z;
}
