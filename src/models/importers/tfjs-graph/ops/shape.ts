/** Ops whose meaning depends on the layout: reductions, squeeze, reshape, pad, concat (TF axes → NCHW axes). */
import { count, NCHW_OF_NHWC, onnxPads } from '../../layout.js';
import { dataInputs } from '../graph-order.js';
import type { T } from '../context.js';
import { register, type OpHandler } from '../registry.js';

const reduce: OpHandler = (n, c, out) => {
  const x = c.input(n, 0);
  const axes = c.normAxes([...c.constOf(n, 1, 'axes').data], x.shape.length, n);
  const keep = c.bool(n, 'keep_dims');
  const op = n.op === 'Mean' ? 'ReduceMean' : 'ReduceMax';
  const shape = keep ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
  const reduced = (xn: string, ax: number[], kd: boolean, o: string) => c.b.node(op, [xn], o, { axes: ax, keepdims: kd ? 1 : 0 });
  const name = x.shape.length === 4 ? c.dropAxes4d(x, axes, keep, out, reduced) : reduced(c.data(x, n.name), axes, keep, out);
  return { shape, name, pooled: x.shape.length === 4 && axes.join() === '1,2' };
};

const pad: OpHandler = (n, c, out) => {
  const x = c.input(n, 0);
  const p = c.constOf(n, 1, 'paddings');
  const r = x.shape.length;
  if (p.shape.join() !== `${r},2`) c.fail(n, `paddings of shape [${p.shape}] for a ${r}-D input`);
  const padIn = [c.data(x, n.name), c.b.ints(c.b.fresh(`${n.name}/pads`), onnxPads(p.data, r))];
  if (n.op === 'PadV2') padIn.push(c.b.floats(c.b.fresh(`${n.name}/value`), [], new Float32Array([c.constOf(n, 2, 'constant value').data[0] ?? 0])));
  const shape = x.shape.map((d, i) => (d === null ? null : d + p.data[2 * i]! + p.data[2 * i + 1]!));
  return { shape, name: c.b.node('Pad', padIn, out, { mode: 'constant' }) };
};

register({
  Mean: reduce,
  Max: reduce,
  Squeeze: (n, c, out) => {
    const x = c.input(n, 0);
    let axes = c.ints(n, 'squeeze_dims', []);
    if (!axes.length) axes = c.ints(n, 'axis', []);
    if (!axes.length) {
      if (x.shape.some((d) => d === null)) c.fail(n, 'squeezing every size-1 dimension of a tensor of unknown shape is not supported');
      axes = x.shape.flatMap((d, i) => (d === 1 ? [i] : []));
    }
    axes = c.normAxes(axes, x.shape.length, n);
    if (axes.some((a) => x.shape[a] !== 1 && x.shape[a] !== null)) c.fail(n, 'squeezes a dimension that is not 1');
    const shape = x.shape.filter((_, i) => !axes.includes(i));
    const squeeze = (xn: string, ax: number[], _kd: boolean, o: string) => c.b.node('Squeeze', [xn, c.b.ints(c.b.fresh('axes'), ax)], o);
    const name = x.konst ? undefined : x.shape.length === 4 ? c.dropAxes4d(x, axes, false, out, squeeze) : squeeze(x.name!, axes, false, out);
    return name ? { shape, name, pooled: x.pooled } : { shape, konst: { ...x.konst!, shape: shape as number[] } };
  },
  Reshape: (n, c, out) => {
    const x = c.input(n, 0);
    const target = [...c.constOf(n, 1, 'shape').data];
    if (target.some((d) => d === 0 || d < -1) || target.filter((d) => d === -1).length > 1) c.fail(n, `shape [${target}] not supported`);
    // A batch of 1 written into the graph stays the free batch dimension.
    if (target[0] === 1 && x.shape[0] === null && !target.includes(-1)) target[0] = -1;
    const known = x.shape.every((d) => d !== null) ? count(x.shape as number[]) : undefined;
    const rest = count(target.filter((d) => d !== -1));
    const shape = target.map((d) => (d !== -1 ? d : known !== undefined ? known / rest : null));
    if (x.konst) {
      const kshape = shape.map((d) => (d === null ? count(x.konst!.shape) / rest : d));
      if (count(kshape) !== count(x.konst.shape) || !kshape.every(Number.isInteger)) c.fail(n, `cannot reshape a constant of shape [${x.konst.shape}] to [${target}]`);
      return { shape: kshape, konst: { ...x.konst, shape: kshape } };
    }
    const reshaped = c.b.node('Reshape', [c.toNhwc(x, n.name), c.b.ints(c.uniq(`${n.name}/shape`), target)], shape.length === 4 ? c.b.fresh(n.name) : out);
    return { shape, name: shape.length === 4 ? c.toNchw(reshaped, 4, out) : reshaped, pooled: x.pooled && shape.length === 2 };
  },
  Pad: pad,
  PadV2: pad,
  ConcatV2: (n, c, out) => {
    const k = dataInputs(n).length - 1;
    const ins: T[] = [...Array(k).keys()].map((i) => c.input(n, i));
    const r = ins[0]!.shape.length;
    const [axis] = c.normAxes([c.constOf(n, k, 'axis').data[0]!], r, n);
    const shape = ins[0]!.shape.map((d, i) => (i === axis ? ins.reduce<number | null>((a, t) => (a === null || t.shape[i] === null ? null : a + t.shape[i]!), 0) : d));
    return { shape, name: c.b.node('Concat', ins.map((t, i) => c.data(t, `${n.name}/in${i}`)), out, { axis: r === 4 ? NCHW_OF_NHWC[axis!]! : axis! }) };
  },
});
