/** Activations, merges (Add, Multiply) and input scaling / normalisation layers. */
import { register, type LayerHandler } from '../registry.js';

const merge: LayerHandler = ({ cls, name, inputs }, ctx) => {
  let acc = inputs[0]!;
  for (const other of inputs.slice(1)) acc = { ...acc, name: ctx.b.node(cls === 'Add' ? 'Add' : 'Mul', [acc.name, other.name], ctx.b.fresh(name)) };
  return acc;
};

register({
  Activation: ({ name, c, x }, ctx) => ctx.act(x, String(c.activation), name),
  ReLU: ({ name, c, x }, ctx) => {
    const b = ctx.b;
    const max = c.max_value == null ? undefined : Number(c.max_value);
    const slope = Number(c.negative_slope ?? 0);
    if (slope !== 0) return { ...x, name: b.node('LeakyRelu', [x.name], b.fresh(name), { alpha: { f: slope } }) };
    if (max !== undefined) return { ...x, name: b.node('Clip', [x.name, ctx.scalar('zero', 0), ctx.scalar('max', max)], b.fresh(name)) };
    return { ...x, name: b.node('Relu', [x.name], b.fresh(name)) };
  },
  Add: merge,
  Multiply: merge,
  Rescaling: ({ name, c, x }, ctx) => {
    const b = ctx.b;
    const mul = b.node('Mul', [x.name, ctx.scalar('scale', Number(c.scale ?? 1))], b.fresh(`${name}_mul`));
    return { ...x, name: b.node('Add', [mul, ctx.scalar('offset', Number(c.offset ?? 0))], b.fresh(name)) };
  },
  Normalization: ({ name, x }, ctx) => {
    const b = ctx.b;
    const ch = x.channels ?? 1;
    const mean = ctx.w(name, 'mean').data;
    const variance = ctx.w(name, 'variance').data;
    const dims = x.rank === 4 ? [1, ch, 1, 1] : [1, ch];
    const sub = b.node('Sub', [x.name, b.floats(`${name}/mean`, dims, mean)], b.fresh(`${name}_sub`));
    const std = Float32Array.from(variance, (v) => Math.sqrt(Math.max(v, 1e-7)));
    return { ...x, name: b.node('Div', [sub, b.floats(`${name}/std`, dims, std)], b.fresh(name)) };
  },
});
