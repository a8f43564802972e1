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
import { denseParams, type DenseHeadValues } from './head-graph.js';
import { DenseHead } from './dense-head.js';
import { trainHead, type Head } from './heads.js';
import { classWeights } from './metrics.js';
import { adamwUpdate, globalNormSq, glorotUniform, type AdamParam } from './optim.js';
import { HEAD_PREFIX, initializersAsInputs, withHead } from './train-graph.js';
import type { CutSet, FinetuneData, FinetuneSettings } from './finetune-settings.js';

interface Param extends AdamParam { key: string; name: string }

const stepRng = (seed: number, epoch: number, step: number) => mulberry32(deriveSeed(deriveSeed(seed, 5000 + epoch), step));


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
    private readonly start: DenseHeadValues,
    private readonly classes: string[],
    private readonly head: { names: string[]; mask?: string; logits: string; mean: string; std: string; maskWidth: number },
    private readonly o: FinetuneSettings,
    private readonly rowWeights: Float32Array | undefined,
    private readonly shapes: Map<string, number[]>,
  ) {}

  static async create(data: FinetuneData, o: FinetuneSettings, onInfo?: (message: string) => void): Promise<FinetuneSession> {
    const { model, featureTensor, cut, cutShape, train, val, classes } = data;
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

    // Pooled features of the frozen suffix (its weights as they are), for the probe that starts the head.
    const weights: Record<string, Float32Array> = {};
    for (const n of [...trainable, ...statistics]) weights[n] = initValue(n);
    const { d, features: f0, more } = await suffixFeatures(suffix.bytes, featureTensor, cutShape, model.info.path, [train, ...(val && val.n > 0 ? [val] : [])]);
    const fv = more[0];
    // The head starts where `graft train`'s head of the same kind would end: same trainer, same early stopping.
    const probe = await trainHead({ x: f0, n: train.n, d, y: train.y }, fv ? { x: fv, n: val!.n, d, y: val!.y } : undefined, classes, {
      kind: o.head,
      hidden: o.hidden,
      epochs: Math.max(1, o.probeEpochs),
      balance: o.balance,
      seed: o.seed, // the same seed as `graft train`: fine-tuning starts from the very head it would train
    });
    if (!(probe.head instanceof DenseHead)) throw new Error('unreachable: a fine-tuned head is dense');
    const probeValues = probe.head.values;
    const kind = probeValues.kind;
    const H = probeValues.H;
    const specs = denseParams(kind, d, H, C);
    let values: Float32Array[] = probeValues.params.map((p) => p.slice());
    if (o.probeEpochs === 0) {
      // Glorot-like small random matrices, zero biases.
      const rng = mulberry32(deriveSeed(o.seed, 12));
      values = specs.map((q) => (q.matrix ? glorotUniform(q.dims[0]!, q.dims[1]!, rng) : new Float32Array(q.dims[0]!)));
    }
    const start: DenseHeadValues = { kind, d, C, H, mean: probeValues.mean, std: probeValues.std, params: values };
    const train1 = withHead(suffix.bytes, featureTensor, start, o.dropout > 0);
    const eval1 = withHead(suffix.bytes, featureTensor, start, false);
    const hg = train1.head;
    const headNames = specs.map((q) => hg.weight(q.name));
    for (const [i, q] of specs.entries()) shapes.set(headNames[i]!, q.dims);
    shapes.set(hg.weight('mean'), [1, d]);
    shapes.set(hg.weight('std'), [1, d]);
    const evalBytes = initializersAsInputs(eval1.bytes, [...trainable, ...statistics, ...headNames, hg.weight('mean'), hg.weight('std')]);
    const evalSession = await createSession(evalBytes, { where: `${model.info.path} (evaluation graph)` });
    const trainBytes = train1.bytes;
    let ok = false;
    try {
      const rowWeights = o.balance ? classWeights(train.y, C) : undefined;
      const head = { names: headNames, mask: hg.mask, logits: hg.logits, mean: hg.weight('mean'), std: hg.weight('std'), maskWidth: kind === 'linear' ? d : H };
      const s = new FinetuneSession(trainBytes, evalSession, featureTensor, cutShape, C, d, trainable, bnNodes.map((n) => n.input![3]!), start, classes, head, o, rowWeights, shapes);
      const add = (key: string, name: string, value: Float32Array, lrMul: number, decay: boolean) =>
        s.params.push({ key, name, value, m: new Float32Array(value.length), s: new Float32Array(value.length), lrMul, decay });
      for (const name of trainable) add(`w:${name}`, name, weights[name]!, o.backboneLrFactor, convs.includes(name) && dims(name).length > 1);
      specs.forEach((q, i) => add(`head:${q.name}`, headNames[i]!, values[i]!.slice(), 1, q.matrix));
      for (const n of statistics) s.statistics[n] = weights[n]!;
      s.headStats = { mean: start.mean, std: start.std };
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
          loss: [{ kind: 'cross-entropy', logits: this.head.logits, targets: 'targets' }],
          outputs: [this.head.logits],
          bnTraining: this.bnMeans,
        },
        { threads: availableParallelism(), where: 'fine-tuning graph' },
      );
      this.programs.set(n, p);
    }
    return p;
  }

  private weightFeeds(): Record<string, Float32Array> {
    const f: Record<string, Float32Array> = { ...this.statistics, [this.head.mean]: this.headStats.mean, [this.head.std]: this.headStats.std };
    for (const p of this.params) f[p.name] = p.value;
    return f;
  }

  /** Class probabilities of every row of a set (no augmentation, batch norm in inference mode), n × C. */
  async proba(set: CutSet): Promise<Float32Array> {
    // Evaluated in batches of the training batch size: ONNX Runtime's arena keeps the largest batch's activations
    // beside the training program's for the rest of the run (--finetune all on 256 photos, training batch 32:
    // peak RSS 2.79 GB with evaluation batches of 64, 2.41 GB with 32; see docs/benchmarks.md).
    const { logits } = await runEval(this.evalSession, set, this.cutShape, this.weightFeeds(), this.shapes, this.featureTensor, this.head.logits, this.C, this.d, this.o.batchSize);
    return softmaxRowsInPlace(logits, this.C);
  }

  /**
   * One AdamW step on the rows `idx` (views `viewOf`); returns the loss (before the update) and the number of correct
   * argmax predictions. Does not update when the loss or gradients are not finite (the caller stops).
   */
  async step(set: CutSet, idx: ArrayLike<number>, viewOf: ArrayLike<number> | undefined, mask: Float32Array | undefined, lr: number, beta1: number, t: number): Promise<{ loss: number; correct: number; finite: boolean }> {
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
    if (mask) feeds[this.head.mask!] = mask;
    const r = await prog.run(feeds);
    const loss = r.loss;
    const logits = r.outputs[this.head.logits]!.data;
    let correct = 0;
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let k = 1; k < C; k++) if (logits[i * C + k]! > logits[i * C + best]!) best = k;
      if (best === set.y[idx[i]!]) correct++;
    }
    const grads = this.params.map((p) => r.grads[p.name]!);
    const normSq = globalNormSq(grads);
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
  ): Promise<{ loss: number; correct: number; finite: boolean; rows: number }> {
    const bs = this.o.batchSize;
    const idx = plan.order.subarray(s * bs, Math.min(train.n, (s + 1) * bs));
    const mask = this.dropoutMask(idx.length, stepRng(this.o.seed, epoch, s));
    const r = await this.step(train, idx, plan.viewOf?.subarray(s * bs, s * bs + idx.length), mask, lr, beta1, t);
    return { ...r, rows: idx.length };
  }

  dropoutMask(rows: number, rng: () => number): Float32Array | undefined {
    if (this.o.dropout <= 0) return undefined;
    const m = new Float32Array(rows * this.head.maskWidth);
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
    const params = this.params.filter((p) => p.key.startsWith('head:')).map((p) => p.value.slice());
    const head = new DenseHead([...this.classes], { ...this.start, params }, { kind: this.start.kind, finetune: true, ...extra });
    return { weights, head };
  }

  async dispose(): Promise<void> {
    for (const p of this.programs.values()) await (await p.catch(() => undefined))?.release();
    this.programs.clear();
    await this.evalSession.release();
  }
}

/** Pooled features of the frozen suffix for each set (64 rows a run), and their size. */
async function suffixFeatures(suffix: Uint8Array, featureTensor: string, cutShape: number[], where: string, sets: CutSet[]): Promise<{ d: number; features: Float32Array; more: Float32Array[] }> {
  const s = await createSession(suffix, { where: `${where} (fine-tuned layers)` });
  try {
    const input = s.inputNames[0]!;
    const per = cutShape.reduce((a, b) => a * b, 1);
    const out: Float32Array[] = [];
    let d = 0;
    for (const set of sets) {
      const parts: Float32Array[] = [];
      for (let i = 0; i < set.n; i += 64) {
        const n = Math.min(64, set.n - i);
        const r = await s.run({ [input]: new ort.Tensor('float32', set.x.subarray(i * per, (i + n) * per), [n, ...cutShape]) });
        const f = r[featureTensor]!.data as Float32Array;
        d = f.length / n;
        parts.push(f);
      }
      const all = new Float32Array(set.n * d);
      let at = 0;
      for (const p of parts) all.set(p, (at += p.length) - p.length);
      out.push(all);
    }
    return { d, features: out[0]!, more: out.slice(1) };
  } finally {
    await s.release();
  }
}

/** Features and logits of every row of a set through the evaluation graph, `batch` rows at a time. */
async function runEval(session: ort.InferenceSession, set: CutSet, cutShape: number[], weights: Record<string, Float32Array>, shapes: Map<string, number[]>, featureTensor: string, logitsTensor: string, C: number, d: number, batch: number): Promise<{ features: Float32Array; logits: Float32Array }> {
  const per = cutShape.reduce((a, b) => a * b, 1);
  const features = new Float32Array(set.n * d);
  const logits = new Float32Array(set.n * C);
  const wt: Record<string, ort.Tensor> = {};
  for (const [name, v] of Object.entries(weights)) {
    const dims = shapes.get(name);
    if (!dims) throw new Error(`internal: no shape for weight '${name}'`);
    wt[name] = new ort.Tensor('float32', v, dims);
  }
  const input = session.inputNames[0]!;
  for (let s = 0; s < set.n; s += batch) {
    const n = Math.min(batch, set.n - s);
    const x = set.x.subarray(s * per, (s + n) * per);
    const out = await session.run({ ...wt, [input]: new ort.Tensor('float32', x, [n, ...cutShape]) });
    features.set(out[featureTensor]!.data as Float32Array, s * d);
    logits.set(out[logitsTensor]!.data as Float32Array, s * C);
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
