/** Convolutions, dense layers, batch norm and pooling. */
import type { Attr } from '../../onnx-builder.js';
import { KERNEL_PERM, setSameOrValid, transposeData } from '../../layout.js';
import { pair } from '../model-json.js';
import type { T } from '../context.js';
import { register, type LayerHandler } from '../registry.js';

const conv: LayerHandler = ({ cls, name, c, x }, ctx) => {
  const b = ctx.b;
  const [sh, sw] = pair(c.strides, 1);
  const [dh, dw] = pair(c.dilation_rate, 1);
  const depthwise = cls === 'DepthwiseConv2D';
  const k = ctx.w(name, depthwise ? 'depthwise_kernel' : 'kernel');
  const [kh, kw, cin, cout] = k.shape as [number, number, number, number];
  // Keras [kh, kw, in, out|mult] → ONNX [out, in/group, kh, kw]; depthwise: out channel = in * mult + m.
  const W = transposeData(k.data, k.shape, depthwise ? KERNEL_PERM.hwcm : KERNEL_PERM.hwio);
  const outC = depthwise ? cin * cout : cout;
  const wName = b.floats(`${name}/kernel`, depthwise ? [outC, 1, kh, kw] : [cout, cin, kh, kw], W);
  const convIn = [x.name, wName];
  if (c.use_bias !== false) {
    const bias = ctx.w(name, 'bias', false);
    if (bias) convIn.push(b.floats(`${name}/bias`, [outC], bias.data));
  }
  const attrs: Record<string, Attr> = { kernel_shape: [kh, kw], strides: [sh, sw], dilations: [dh, dw], group: depthwise ? cin : 1 };
  setSameOrValid(attrs, c.padding === 'same');
  const y: T = { name: b.node('Conv', convIn, b.fresh(name), attrs, name), rank: 4, channels: outC };
  return ctx.act(y, String(c.activation ?? 'linear'), `${name}_act`);
};

const pool: LayerHandler = ({ cls, name, c, x }, ctx) => {
  const k = pair(c.pool_size, 2);
  const s = pair(c.strides ?? c.pool_size, 2);
  const attrs: Record<string, Attr> = { kernel_shape: k, strides: s };
  if (c.padding === 'same') attrs.auto_pad = 'SAME_UPPER';
  return { ...x, name: ctx.b.node(cls === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', [x.name], ctx.b.fresh(name), attrs) };
};

/** A global pooling: its output, flattened, is the feature vector. */
const globalPool: LayerHandler = ({ cls, name, c, x }, ctx) => {
  const b = ctx.b;
  const pooled = b.node(cls === 'GlobalAveragePooling2D' ? 'GlobalAveragePool' : 'GlobalMaxPool', [x.name], b.fresh(name));
  const y: T = c.keepdims ? { name: pooled, rank: 4, channels: x.channels } : { name: b.node('Flatten', [pooled], b.fresh(`${name}_flat`), { axis: 1 }), rank: 2, channels: x.channels };
  ctx.features = { name: y.rank === 4 ? b.node('Flatten', [pooled], b.fresh(`${name}_feat`), { axis: 1 }) : y.name, rank: 2, channels: x.channels };
  return y;
};

register({
  Conv2D: conv,
  DepthwiseConv2D: conv,
  Dense: ({ name, c, x }, ctx) => {
    const b = ctx.b;
    const k = ctx.w(name, 'kernel');
    const [din, dout] = k.shape as [number, number];
    const bias = c.use_bias !== false ? ctx.w(name, 'bias', false) : undefined;
    const ins = [x.name, b.floats(`${name}/kernel`, [din, dout], k.data), b.floats(`${name}/bias`, [dout], bias?.data ?? new Float32Array(dout))];
    if (x.rank !== 2) ctx.fail(name, `Dense on a ${x.rank}-D input is not supported`);
    const y: T = { name: b.node('Gemm', ins, b.fresh(name), {}, name), rank: 2, channels: dout };
    return ctx.act(y, String(c.activation ?? 'linear'), `${name}_act`);
  },
  BatchNormalization: ({ name, c, x }, ctx) => {
    const b = ctx.b;
    const ch = x.channels ?? ctx.fail(name, 'unknown channel count');
    const gamma = c.scale !== false ? ctx.w(name, 'gamma').data : new Float32Array(ch).fill(1);
    const beta = c.center !== false ? ctx.w(name, 'beta').data : new Float32Array(ch);
    const bn = [x.name, b.floats(`${name}/gamma`, [ch], gamma), b.floats(`${name}/beta`, [ch], beta), b.floats(`${name}/moving_mean`, [ch], ctx.w(name, 'moving_mean').data), b.floats(`${name}/moving_variance`, [ch], ctx.w(name, 'moving_variance').data)];
    return { ...x, name: b.node('BatchNormalization', bn, b.fresh(name), { epsilon: { f: Number(c.epsilon ?? 1e-3) } }, name) };
  },
  MaxPooling2D: pool,
  AveragePooling2D: pool,
  GlobalAveragePooling2D: globalPool,
  GlobalMaxPooling2D: globalPool,
});
