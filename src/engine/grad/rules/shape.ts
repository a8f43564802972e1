/** Backward rules of layout operators and reductions: the gradient moves back to where each element came from. */
import { GraftError } from '../../../errors.js';
import { attrInt, attrInts, attrString } from '../forward.js';
import { constValue, register, reshape, size, zeros, type Rule } from './registry.js';

/** The gradient has the input's elements in the output's shape: reshape it back. */
const backToInputShape: Rule = (n, [dy], c) => [dy && reshape(c, dy, c.dims(n.inputs[0]!))];

/** Axes of a reduction (attribute or input), normalised; undefined means all axes. */
function reduceAxes(n: Parameters<Rule>[0], c: Parameters<Rule>[2], rank: number): number[] {
  let axes = attrInts(n, 'axes');
  if (!axes && n.inputs[1]) axes = constValue(c, n, 1, 'axes');
  if (!axes || axes.length === 0) {
    return attrInt(n, 'noop_with_empty_axes', 0) ? [] : Array.from({ length: rank }, (_, i) => i);
  }
  return axes.map((a) => (a + rank) % rank);
}

function reduceRule(mean: boolean): Rule {
  return (n, [dy], c) => {
    if (!dy) return [];
    const xd = c.dims(n.inputs[0]!);
    const axes = reduceAxes(n, c, xd.length);
    const kept = xd.map((d, i) => (axes.includes(i) ? 1 : d));
    let g = reshape(c, dy, kept);
    if (mean) g = c.w.op('Mul', [g, c.w.scalar(1 / Math.max(1, size(axes.map((a) => xd[a]!))))]);
    return [c.w.op('Expand', [g, c.w.ints(xd)])];
  };
}

register({
  Reshape: backToInputShape,
  Flatten: backToInputShape,
  Squeeze: backToInputShape,
  Unsqueeze: backToInputShape,
  Transpose: (n, [dy], c) => {
    if (!dy) return [];
    const rank = c.dims(n.inputs[0]!).length;
    const perm = attrInts(n, 'perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
    const inv = new Array<number>(rank);
    perm.forEach((p, i) => (inv[p] = i));
    return [c.w.op('Transpose', [dy], { perm: inv })];
  },
  Concat: (n, [dy], c) => {
    if (!dy) return [];
    const rank = c.dims(n.outputs[0]!).length;
    const axis = (attrInt(n, 'axis', 0) + rank) % rank;
    const sizes = n.inputs.map((x) => c.dims(x)[axis]!);
    const parts = c.w.opN('Split', [dy, c.w.ints(sizes)], sizes.length, { axis });
    return parts.map((p, i) => (c.needs(i) ? p : undefined));
  },
  Split: (n, dys, c) => {
    const xd = c.dims(n.inputs[0]!);
    const axis = (attrInt(n, 'axis', 0) + xd.length) % xd.length;
    if (dys.every((d) => !d)) return [];
    const parts = n.outputs.map((o, i) => dys[i] ?? zeros(c, c.dims(o)));
    return [c.w.op('Concat', parts, { axis })];
  },
  Slice: (n, [dy], c) => {
    if (!dy) return [];
    const xd = c.dims(n.inputs[0]!);
    const starts = constValue(c, n, 1, 'starts');
    const ends = constValue(c, n, 2, 'ends');
    const axes = n.inputs[3] ? constValue(c, n, 3, 'axes') : starts.map((_, i) => i);
    const steps = n.inputs[4] ? constValue(c, n, 4, 'steps') : starts.map(() => 1);
    if (steps.some((s) => s !== 1)) throw new GraftError(`node '${n.name}' (Slice): gradients are implemented for step 1 only`);
    const pads = new Array<number>(2 * xd.length).fill(0);
    axes.forEach((a0, i) => {
      const a = (a0 + xd.length) % xd.length;
      const d = xd[a]!;
      const norm = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
      const s = norm(starts[i]!);
      const e = Math.max(s, norm(ends[i]!));
      pads[a] = s;
      pads[a + xd.length] = d - e;
    });
    return [c.w.op('Pad', [dy, c.w.ints(pads)])];
  },
  Pad: (n, [dy], c) => {
    if (!dy) return [];
    const mode = attrString(n, 'mode', 'constant');
    if (mode !== 'constant') throw new GraftError(`node '${n.name}' (Pad): mode '${mode}' has no gradient rule (constant only)`);
    const xd = c.dims(n.inputs[0]!);
    const r = xd.length;
    let pads = constValue(c, n, 1, 'pads');
    if (n.inputs[3]) {
      // opset 18 axes input: pads listed for those axes only
      const axes = constValue(c, n, 3, 'axes').map((a) => (a + r) % r);
      const full = new Array<number>(2 * r).fill(0);
      axes.forEach((a, i) => { full[a] = pads[i]!; full[a + r] = pads[i + axes.length]!; });
      pads = full;
    }
    // Positive pads are cut off again; negative pads (crops) are padded back with zeros.
    const starts = xd.map((_, i) => Math.max(0, pads[i]!));
    const yd = c.dims(n.outputs[0]!);
    const ends = xd.map((_, i) => yd[i]! - Math.max(0, pads[i + r]!));
    let g = dy;
    if (starts.some((s) => s > 0) || ends.some((e, i) => e < yd[i]!)) g = c.w.op('Slice', [g, c.w.ints(starts), c.w.ints(ends)]);
    const back = xd.flatMap((_, i) => [Math.max(0, -pads[i]!)]).concat(xd.map((_, i) => Math.max(0, -pads[i + r]!)));
    if (back.some((v) => v > 0)) g = c.w.op('Pad', [g, c.w.ints(back)]);
    return [g];
  },
  ReduceMean: reduceRule(true),
  ReduceSum: reduceRule(false),
  Expand: (n, [dy], c) => {
    if (!dy) return [];
    const xd = c.dims(n.inputs[0]!);
    const yd = c.dims(n.outputs[0]!);
    const lead = yd.length - xd.length;
    const axes = yd.map((_, i) => i).filter((i) => i < lead || (xd[i - lead] === 1 && yd[i] !== 1));
    const g = axes.length ? c.w.op('ReduceSum', [dy, c.w.ints(axes)], { keepdims: 1 }) : dy;
    return [reshape(c, g, xd)];
  },
});
