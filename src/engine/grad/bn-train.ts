/**
 * Batch normalisation in training mode, written out in primitive operators so that its gradient (through the batch
 * mean and variance) follows from the ordinary rules: y = scale·(x − μ_B)/√(σ²_B + ε) + B with μ_B, σ²_B the batch
 * mean and biased variance over N, H, W (PyTorch's convention). The batch mean and the unbiased batch variance are
 * extra outputs, for the running-statistic update (running = m·running + (1 − m)·batch) done after the step.
 */
import { GraftError } from '../../errors.js';
import { attrFloat, type BnBatchStats, type ForwardGraph, type FwdNode } from './forward-graph.js';
import { encodeAttr, floatTensor, int64Tensor } from './onnx-writer.js';

export type { BnBatchStats } from './forward-graph.js';

let counter = 0;

/** Rewrite the BatchNormalization nodes whose running mean is in `means` into training-mode arithmetic. */
export function decomposeTrainingBn(fwd: ForwardGraph, means: Set<string>): BnBatchStats[] {
  const stats: BnBatchStats[] = [];
  const out: FwdNode[] = [];
  for (const n of fwd.nodes) {
    if (n.opType !== 'BatchNormalization' || !means.has(n.inputs[3] ?? '')) {
      out.push(n);
      continue;
    }
    const [x, scale, bias, mean, variance] = n.inputs as [string, string, string, string, string];
    const xd = fwd.dims.get(x)!;
    if (xd.length < 2) throw new GraftError(`node '${n.name}' (BatchNormalization): input of rank ${xd.length}`);
    const c = xd[1]!;
    const axes = [0, ...Array.from({ length: xd.length - 2 }, (_, i) => i + 2)];
    const count = axes.reduce((a, i) => a * xd[i]!, 1);
    const kept = xd.map((d, i) => (axes.includes(i) ? 1 : d));
    const eps = attrFloat(n, 'epsilon', 1e-5);
    const momentum = attrFloat(n, 'momentum', 0.9);
    const p = `${n.name}__bntrain${counter++}`;
    const t = (s: string, dims: number[]) => {
      const name = `${p}/${s}`;
      fwd.dims.set(name, dims);
      fwd.types.set(name, 1);
      return name;
    };
    const k = (s: string, dims: number[], v: number[], int = false) => {
      const name = `${p}/${s}`;
      fwd.initializers.push(int ? int64Tensor(name, dims, v) : floatTensor(name, dims, Float32Array.from(v)));
      fwd.values.set(name, v);
      fwd.dims.set(name, dims);
      fwd.types.set(name, int ? 7 : 1);
      return name;
    };
    const node = (op: string, inputs: string[], output: string, attrs: Record<string, number | number[]> = {}) =>
      out.push({ name: output, opType: op, inputs, outputs: [output], attrs: new Map(Object.entries(attrs).map(([a, v]) => [a, encodeAttr(a, v)])) });
    const mu = t('mean', kept);
    node('ReduceMean', [x], mu, { axes, keepdims: 1 });
    const xc = t('centred', xd);
    node('Sub', [x, mu], xc);
    const sq = t('sq', xd);
    node('Mul', [xc, xc], sq);
    const v = t('var', kept);
    node('ReduceMean', [sq], v, { axes, keepdims: 1 });
    const ve = t('var_eps', kept);
    node('Add', [v, k('eps', [], [eps])], ve);
    const sd = t('std', kept);
    node('Sqrt', [ve], sd);
    const xh = t('xhat', xd);
    node('Div', [xc, sd], xh);
    const shape = k('shape', [kept.length], kept.map((d, i) => (i === 1 ? c : 1)), true);
    const sr = t('scale', kept);
    node('Reshape', [scale, shape], sr);
    const br = t('bias', kept);
    node('Reshape', [bias, shape], br);
    const ys = t('scaled', xd);
    node('Mul', [xh, sr], ys);
    node('Add', [ys, br], n.outputs[0]!);
    // Statistics for the running update (not differentiated): mean [C], unbiased variance [C].
    const flat = k('flat', [1], [c], true);
    const bm = t('batch_mean', [c]);
    node('Reshape', [mu, flat], bm);
    const unbiased = t('var_unbiased', kept);
    node('Mul', [v, k('bessel', [], [count > 1 ? count / (count - 1) : 1])], unbiased);
    const bv = t('batch_var', [c]);
    node('Reshape', [unbiased, flat], bv);
    stats.push({ mean, variance, batchMean: bm, batchVar: bv, momentum });
  }
  fwd.nodes = out;
  return stats;
}
