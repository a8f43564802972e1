/** Operators whose meaning depends on the layout: reshape, squeeze, pad, concatenation, mean (NHWC axes → NCHW). */
import { NCHW_OF_NHWC, onnxPads, TO_NCHW } from '../../layout.js';
import { BuiltinOptions, ConcatenationOptions, ReducerOptions, ReshapeOptions, SqueezeOptions } from '../../tflite-schema/index.js';
import type { V } from '../context.js';
import { register } from '../registry.js';

register({
  RESHAPE: (op, c, out) => {
    const b = c.b;
    const x = c.get(op.inputs[0]!, op);
    const target = op.inputs[1] !== undefined && op.inputs[1] >= 0 ? c.intData(op.inputs[1], op) : c.options(op, BuiltinOptions.ReshapeOptions, ReshapeOptions)?.newShape ?? out.shape;
    const shape = target.map((d, k) => (k === 0 && d === x.shape[0] && d === 1 ? 0 : d)); // keep the batch free
    const reshaped = b.node('Reshape', [c.toNhwc(x), b.ints(b.fresh('shape'), shape)], out.shape.length === 4 ? b.fresh(`${out.name}_nhwc`) : out.name);
    return { y: { name: out.shape.length === 4 ? b.node('Transpose', [reshaped], out.name, { perm: TO_NCHW }) : reshaped, shape: out.shape }, requantise: false };
  },
  SQUEEZE: (op, c, out) => {
    const b = c.b;
    const x = c.get(op.inputs[0]!, op);
    const r = x.shape.length;
    let dims = (c.options(op, BuiltinOptions.SqueezeOptions, SqueezeOptions)?.squeezeDims ?? []).map((a) => (a < 0 ? a + r : a));
    // Without dims TFLite drops every 1; the batch is left alone so it stays free.
    if (!dims.length) dims = x.shape.map((d, k) => (d === 1 && k > 0 ? k : -1)).filter((k) => k >= 0);
    let y: V;
    if (r === 4 && dims.length === 2 && dims.includes(1) && dims.includes(2)) {
      y = { name: b.node('Squeeze', [x.name, b.ints(b.fresh('axes'), [2, 3])], out.name), shape: out.shape };
    } else {
      y = { name: b.node('Squeeze', [c.toNhwc(x), b.ints(b.fresh('axes'), dims)], out.name), shape: out.shape };
      if (out.shape.length === 4) y = { name: b.node('Transpose', [y.name], b.fresh(`${out.name}_nchw`), { perm: TO_NCHW }), shape: out.shape };
    }
    return { y, requantise: false };
  },
  PAD: (op, c, out) => {
    const x = c.get(op.inputs[0]!, op);
    const p = c.intData(op.inputs[1]!, op);
    const r = x.shape.length;
    if (p.length !== 2 * r) c.fail(op, `paddings of ${p.length} values for a ${r}-D input`);
    return { y: { name: c.b.node('Pad', [x.name, c.b.ints(c.b.fresh('pads'), onnxPads(p, r))], out.name), shape: out.shape } };
  },
  CONCATENATION: (op, c, out) => {
    const o = c.options(op, BuiltinOptions.ConcatenationOptions, ConcatenationOptions);
    const rank = out.shape.length;
    let axis = o?.axis ?? 0;
    if (axis < 0) axis += rank;
    const ins = op.inputs.map((i) => c.get(i, op, rank).name);
    return { y: { name: c.b.node('Concat', ins, out.name, { axis: rank === 4 ? NCHW_OF_NHWC[axis]! : axis }), shape: out.shape }, fused: o?.fusedActivationFunction ?? 0 };
  },
  MEAN: (op, c, out) => {
    const b = c.b;
    const o = c.options(op, BuiltinOptions.ReducerOptions, ReducerOptions);
    const x = c.get(op.inputs[0]!, op);
    const r = x.shape.length;
    const axes = [...new Set(c.intData(op.inputs[1]!, op).map((a) => (a < 0 ? a + r : a)))].sort();
    const keep = o?.keepDims ?? false;
    const spatial = r === 4 && axes.length === 2 && axes[0] === 1 && axes[1] === 2;
    let y: V;
    if (r === 4 && (keep || spatial)) {
      // NCHW reduce; over H and W without keep_dims, [N, C] is in the same order either way.
      y = { name: b.node('ReduceMean', [x.name], out.name, { axes: axes.map((a) => NCHW_OF_NHWC[a]!), keepdims: keep ? 1 : 0 }), shape: out.shape };
    } else {
      y = { name: b.node('ReduceMean', [c.toNhwc(x)], out.name, { axes, keepdims: keep ? 1 : 0 }), shape: out.shape };
      if (out.shape.length === 4) y = { name: b.node('Transpose', [y.name], b.fresh(`${out.name}_nchw`), { perm: TO_NCHW }), shape: out.shape };
    }
    return { y, features: spatial };
  },
});
