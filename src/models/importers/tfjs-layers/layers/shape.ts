/** Layers that move data: padding, flatten, reshape, concatenation, dropout (NHWC meaning, NCHW tensors). */
import { onnxPads, TO_NCHW, TO_NHWC } from '../../layout.js';
import { pair } from '../model-json.js';
import { register, type LayerHandler } from '../registry.js';

const passThrough: LayerHandler = ({ x }) => x;

register({
  ZeroPadding2D: ({ name, c, x }, ctx) => {
    const p = c.padding as unknown;
    const [[t, bo], [l, r]] = Array.isArray(p) && Array.isArray(p[0]) ? (p as [[number, number], [number, number]]) : [pair(p, 0), pair(p, 0)];
    return { ...x, name: ctx.b.node('Pad', [x.name, ctx.b.ints(ctx.b.fresh('pads'), onnxPads([0, 0, t, bo, l, r, 0, 0], 4))], ctx.b.fresh(name)) };
  },
  Flatten: ({ name, x }, ctx) => {
    // Keras flattens NHWC: go back to that order first so following Dense weights line up.
    const src = x.rank === 4 ? ctx.b.node('Transpose', [x.name], ctx.b.fresh(`${name}_nhwc`), { perm: TO_NHWC }) : x.name;
    return { name: ctx.b.node('Flatten', [src], ctx.b.fresh(name), { axis: 1 }), rank: 2 };
  },
  Reshape: ({ name, c, x }, ctx) => {
    const b = ctx.b;
    const target = (c.target_shape as number[]).map(Number);
    const src = x.rank === 4 ? b.node('Transpose', [x.name], b.fresh(`${name}_nhwc`), { perm: TO_NHWC }) : x.name;
    const reshaped = b.node('Reshape', [src, b.ints(b.fresh('shape'), [0, ...target])], b.fresh(name));
    if (target.length === 3) return { name: b.node('Transpose', [reshaped], b.fresh(`${name}_nchw`), { perm: TO_NCHW }), rank: 4, channels: target[2] };
    return { name: reshaped, rank: target.length + 1, channels: target.at(-1) };
  },
  Dropout: passThrough,
  SpatialDropout2D: passThrough,
  Concatenate: ({ name, c, inputs }, ctx) => {
    const x = inputs[0]!;
    const axis = Number(c.axis ?? -1);
    if (x.rank === 4 && axis !== -1 && axis !== 3) ctx.fail(name, `concatenation on axis ${axis} is not supported`);
    return { name: ctx.b.node('Concat', inputs.map((t) => t.name), ctx.b.fresh(name), { axis: x.rank === 4 ? 1 : axis < 0 ? x.rank + axis : axis }), rank: x.rank, channels: inputs.reduce((a, t) => a + (t.channels ?? 0), 0) };
  },
});
