/** Backward rules of matrix products and batch normalisation. */
import { GraftError } from '../../../errors.js';
import { attrFloat, attrInt } from '../forward.js';
import { register, reshape, unbroadcast, type RuleCtx } from './registry.js';

/** Swap the last two axes. */
function swapLast(c: RuleCtx, t: string, rank: number): string {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 1] = rank - 2;
  perm[rank - 2] = rank - 1;
  return c.w.op('Transpose', [t], { perm });
}

register({
  // Y = alpha·op(A)·op(B) + beta·C
  Gemm: (n, [dy], c) => {
    if (!dy) return [];
    const alpha = attrFloat(n, 'alpha', 1);
    const beta = attrFloat(n, 'beta', 1);
    const ta = attrInt(n, 'transA', 0);
    const tb = attrInt(n, 'transB', 0);
    const [a, b, cc] = n.inputs as [string, string, string | undefined];
    const da = !c.needs(0) ? undefined : ta
      ? c.w.op('Gemm', [b, dy], { alpha: { f: alpha }, transA: tb, transB: 1 })
      : c.w.op('Gemm', [dy, b], { alpha: { f: alpha }, transB: tb ? 0 : 1 });
    const db = !c.needs(1) ? undefined : tb
      ? c.w.op('Gemm', [dy, a], { alpha: { f: alpha }, transA: 1, transB: ta })
      : c.w.op('Gemm', [a, dy], { alpha: { f: alpha }, transA: ta ? 0 : 1 });
    let dc: string | undefined;
    if (cc && c.needs(2)) {
      const scaled = beta === 1 ? dy : c.w.op('Mul', [dy, c.w.scalar(beta)]);
      dc = unbroadcast(c, scaled, c.dims(n.outputs[0]!), c.dims(cc));
    }
    return [da, db, dc];
  },
  MatMul: (n, [dy], c) => {
    if (!dy) return [];
    const [a, b] = n.inputs as [string, string];
    const ad = c.dims(a);
    const bd = c.dims(b);
    if (ad.length < 2 || bd.length < 2) throw new GraftError(`node '${n.name}' (MatMul): gradients need operands of rank 2 or more`);
    const yd = c.dims(n.outputs[0]!);
    const da = c.needs(0) ? unbroadcast(c, c.w.op('MatMul', [dy, swapLast(c, b, bd.length)]), [...yd.slice(0, -1), ad.at(-1)!], ad) : undefined;
    const db = c.needs(1) ? unbroadcast(c, c.w.op('MatMul', [swapLast(c, a, ad.length), dy]), [...yd.slice(0, -2), ad.at(-1)!, yd.at(-1)!], bd) : undefined;
    return [da, db];
  },
  // Inference mode: y = scale·(x − mean)/√(var + ε) + B. The running statistics are not trained by gradient.
  BatchNormalization: (n, [dy], c) => {
    if (!dy) return [];
    if (attrInt(n, 'training_mode', 0) === 1 || n.outputs.filter(Boolean).length > 1) {
      throw new GraftError(`node '${n.name}' (BatchNormalization): training mode has no gradient rule yet`);
    }
    const [x, scale, , mean, variance] = n.inputs as [string, string, string, string, string];
    const xd = c.dims(x);
    const ch = xd[1]!;
    const bshape = [ch, ...new Array<number>(xd.length - 2).fill(1)];
    const eps = attrFloat(n, 'epsilon', 1e-5);
    const inv = c.w.op('Reciprocal', [c.w.op('Sqrt', [c.w.op('Add', [variance, c.w.scalar(eps)])])]);
    const axes = [0, ...Array.from({ length: xd.length - 2 }, (_, i) => i + 2)];
    const dx = c.needs(0) ? c.w.op('Mul', [dy, reshape(c, c.w.op('Mul', [scale, inv]), bshape)]) : undefined;
    let dscale: string | undefined;
    if (c.needs(1)) {
      const xhat = c.w.op('Mul', [c.w.op('Sub', [x, reshape(c, mean, bshape)]), reshape(c, inv, bshape)]);
      dscale = c.w.op('ReduceSum', [c.w.op('Mul', [dy, xhat]), c.w.ints(axes)], { keepdims: 0 });
    }
    const dbias = c.needs(2) ? c.w.op('ReduceSum', [dy, c.w.ints(axes)], { keepdims: 0 }) : undefined;
    return [dx, dscale, dbias];
  },
});
