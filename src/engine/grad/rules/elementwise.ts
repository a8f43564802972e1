/** Backward rules of activations and broadcasting arithmetic. */
import { attrFloat } from '../forward.js';
import { register, unbroadcast, type RuleCtx } from './registry.js';

/** dy where `cond` holds, else 0: Mul by the cast mask (Where measured 537 ms against 12 + 100 for Cast + Mul in a
 * --finetune all step at batch 16: ORT's Where is not vectorised). A float-only mask, Sign((y − lo)·(hi − y)), was
 * slower still: 93-108 ms of mask ops a step against 40-46 for Greater/Less/And/Cast (3 paired ORT profiles); so was
 * Clip(2¹²⁶·min(y, hi − y), 0, 1) (Sub + Min 175 ms against 143 for the comparison ops, 2026-12-07). On this VM every
 * elementwise op over a [16, 48, 112, 112] tensor costs ~11-14 ms (memory-bound: Relu, Mul, Clip, Neg alike), so
 * the mask that moves the fewest bytes wins: the comparisons write one byte an element, float masks four. */
function where(c: RuleCtx, cond: string, dy: string): string {
  return c.w.op('Mul', [dy, c.w.op('Cast', [cond], { to: 1 })]);
}

/** Clamp bounds of a Clip node (absent inputs: unbounded). */
function clipBounds(c: RuleCtx, inputs: string[]): [number, number] {
  const bound = (i: number, dflt: number): number => {
    const name = inputs[i];
    if (!name) return dflt;
    const v = c.value(name);
    if (!v || v.length !== 1) throw new Error(`Clip: bound '${name}' must be a constant scalar to take a gradient`);
    return v[0]!;
  };
  return [bound(1, -Infinity), bound(2, Infinity)];
}

register({
  Identity: (_n, [dy]) => [dy],
  // Masks from the output, so the input need not be kept.
  Relu: (n, [dy], c) => {
    if (!dy) return [];
    const y = n.outputs[0]!;
    const d = c.dims(y);
    if (c.conv.reluMask === 'conv' && d.length === 4) {
      // y ≥ 0: clip(2¹²⁶·y, 0, 1) is 0 where y = 0 and 1 for every normal y > 0 (2¹²⁶·y ≥ 1 from 2⁻¹²⁶ up; an
      // overflow to ∞ still gives 1). One depthwise 1x1 Conv with the Clip fused into it; the earlier
      // 1 − relu(1 − 2¹²⁶·y) took two: ResNet-50 mask convolutions 4.7-5.1 → 2.9-3.1 ms a step, same gradients.
      const C = d[1]!;
      const scaled = c.w.op('Conv', [y, c.w.floats([C, 1, 1, 1], new Float32Array(C).fill(2 ** 126))], { group: C });
      const mask = c.w.op('Clip', [scaled, c.w.scalar(0), c.w.scalar(1)]);
      return [c.w.op('Mul', [dy, mask])];
    }
    return [where(c, c.w.op('Greater', [y, c.w.scalar(0)]), dy)];
  },
  // y strictly inside (lo, hi) ⇔ x inside.
  Clip: (n, [dy], c) => {
    if (!dy) return [];
    const [lo, hi] = clipBounds(c, n.inputs);
    const y = n.outputs[0]!;
    const parts: string[] = [];
    if (lo > -3.4e38) parts.push(c.w.op('Greater', [y, c.w.scalar(lo)]));
    if (hi < 3.4e38) parts.push(c.w.op('Less', [y, c.w.scalar(hi)]));
    if (parts.length === 0) return [dy];
    const cond = parts.length === 2 ? c.w.op('And', parts) : parts[0]!;
    return [where(c, cond, dy)];
  },
  LeakyRelu: (n, [dy], c) => {
    if (!dy) return [];
    const alpha = attrFloat(n, 'alpha', 0.01);
    const slope = c.w.op('Where', [c.w.op('Greater', [n.outputs[0]!, c.w.scalar(0)]), c.w.scalar(1), c.w.scalar(alpha)]);
    return [c.w.op('Mul', [dy, slope])];
  },
  Sigmoid: (n, [dy], c) => {
    if (!dy) return [];
    const y = n.outputs[0]!;
    return [c.w.op('Mul', [dy, c.w.op('Mul', [y, c.w.op('Sub', [c.w.scalar(1), y])])])];
  },
  Tanh: (n, [dy], c) => {
    if (!dy) return [];
    const y = n.outputs[0]!;
    return [c.w.op('Mul', [dy, c.w.op('Sub', [c.w.scalar(1), c.w.op('Mul', [y, y])])])];
  },
  HardSigmoid: (n, [dy], c) => {
    if (!dy) return [];
    const alpha = attrFloat(n, 'alpha', 0.2);
    const y = n.outputs[0]!;
    const inside = c.w.op('And', [c.w.op('Greater', [y, c.w.scalar(0)]), c.w.op('Less', [y, c.w.scalar(1)])]);
    return [c.w.op('Mul', [where(c, inside, dy), c.w.scalar(alpha)])];
  },
  // y = x·relu6(x+3)/6: dy/dx = 0 below -3, 1 above 3, (2x+3)/6 between.
  HardSwish: (n, [dy], c) => {
    if (!dy) return [];
    const x = n.inputs[0]!;
    const mid = c.w.op('Add', [c.w.op('Mul', [x, c.w.scalar(1 / 3)]), c.w.scalar(0.5)]);
    const upper = c.w.op('Where', [c.w.op('Greater', [x, c.w.scalar(3)]), c.w.scalar(1), mid]);
    const slope = c.w.op('Where', [c.w.op('Less', [x, c.w.scalar(-3)]), c.w.scalar(0), upper]);
    return [c.w.op('Mul', [dy, slope])];
  },
  // y = √x: dx = dy / (2y)
  Sqrt: (n, [dy], c) => [dy && c.w.op('Div', [dy, c.w.op('Mul', [n.outputs[0]!, c.w.scalar(2)])])],
  Neg: (_n, [dy], c) => [dy && c.w.op('Neg', [dy])],
  Add: (n, [dy], c) => {
    if (!dy) return [];
    const yd = c.dims(n.outputs[0]!);
    return [0, 1].map((i) => (c.needs(i) ? unbroadcast(c, dy, yd, c.dims(n.inputs[i]!)) : undefined));
  },
  Sub: (n, [dy], c) => {
    if (!dy) return [];
    const yd = c.dims(n.outputs[0]!);
    return [
      c.needs(0) ? unbroadcast(c, dy, yd, c.dims(n.inputs[0]!)) : undefined,
      c.needs(1) ? unbroadcast(c, c.w.op('Neg', [dy]), yd, c.dims(n.inputs[1]!)) : undefined,
    ];
  },
  Mul: (n, [dy], c) => {
    if (!dy) return [];
    const yd = c.dims(n.outputs[0]!);
    const [a, b] = n.inputs as [string, string];
    return [
      c.needs(0) ? unbroadcast(c, c.w.op('Mul', [dy, b]), yd, c.dims(a)) : undefined,
      c.needs(1) ? unbroadcast(c, c.w.op('Mul', [dy, a]), yd, c.dims(b)) : undefined,
    ];
  },
  // y = a / b: da = dy / b, db = -dy·y / b.
  Div: (n, [dy], c) => {
    if (!dy) return [];
    const yd = c.dims(n.outputs[0]!);
    const [a, b] = n.inputs as [string, string];
    const da = c.w.op('Div', [dy, b]);
    return [
      c.needs(0) ? unbroadcast(c, da, yd, c.dims(a)) : undefined,
      c.needs(1) ? unbroadcast(c, c.w.op('Neg', [c.w.op('Mul', [da, n.outputs[0]!])]), yd, c.dims(b)) : undefined,
    ];
  },
  Sum: (n, [dy], c) => {
    if (!dy) return [];
    const yd = c.dims(n.outputs[0]!);
    return n.inputs.map((x, i) => (c.needs(i) ? unbroadcast(c, dy, yd, c.dims(x)) : undefined));
  },
});
