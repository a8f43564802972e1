/**
 * The few-shot kNN head: no training, it keeps the (centred, L2-normalised) training features and votes among the
 * nearest ones by cosine similarity. Non-parametric, so it has no ONNX graph, no gradient and no export.
 */
import { gemmABt } from './kernels.js';
import { checkInput, encodeFloat32, fitStandardiser, type FeatureSet, type Head, type HeadJson, type TrainResult } from './head-json.js';


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

export class KnnHead implements Head {
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

  async predictProba(x: Float32Array, n: number): Promise<Float32Array> {
    return this.predictNow(x, n);
  }

  async dispose(): Promise<void> {}

  private predictNow(x: Float32Array, n: number): Float32Array {
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

export function trainKnn(train: FeatureSet, classes: string[], o: { k: number; vote: 'weighted' | 'majority' }): TrainResult {
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
