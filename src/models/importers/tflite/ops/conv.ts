/** Convolutions (plain, grouped, depthwise), 2-D pooling and fully connected layers. */
import type { Attr } from '../../onnx-builder.js';
import { KERNEL_PERM, setSameOrValid } from '../../layout.js';
import { BuiltinOptions, Conv2DOptions, DepthwiseConv2DOptions, FullyConnectedOptions, Padding, Pool2DOptions } from '../../tflite-schema/index.js';
import { register, type OpHandler } from '../registry.js';

const conv: OpHandler = (op, c, out) => {
  const depthwise = op.name === 'DEPTHWISE_CONV_2D';
  const o = depthwise ? c.options(op, BuiltinOptions.DepthwiseConv2DOptions, DepthwiseConv2DOptions) : c.options(op, BuiltinOptions.Conv2DOptions, Conv2DOptions);
  const x = c.get(op.inputs[0]!, op);
  if (x.shape.length !== 4) c.fail(op, `input must be 4-D, got [${x.shape}]`);
  const [wi, bi] = [op.inputs[1]!, op.inputs[2] ?? -1];
  if (!c.isConst(wi)) c.fail(op, 'non-constant weights are not supported');
  const wt = c.T[wi]!;
  const [o0, kh, kw, i3] = wt.shape as [number, number, number, number];
  const cin = x.shape[3]!;
  let outC: number;
  let group: number;
  let wShape: number[];
  let perm: readonly number[];
  if (depthwise) {
    // [1, kh, kw, C·M] → [C·M, 1, kh, kw]; output channel c·M + m reads input channel c.
    perm = KERNEL_PERM.tfliteDepthwise;
    outC = i3;
    group = cin;
    wShape = [outC, 1, kh, kw];
    if (o0 !== 1 || outC % cin !== 0) c.fail(op, `depthwise weights [${wt.shape}] do not fit ${cin} input channels`);
  } else {
    // [O, kh, kw, I] → [O, I, kh, kw]; I < C means a grouped convolution.
    perm = KERNEL_PERM.ohwi;
    outC = o0;
    group = cin / i3;
    wShape = [o0, i3, kh, kw];
    if (!Number.isInteger(group) || outC % group !== 0) c.fail(op, `weights [${wt.shape}] do not fit ${cin} input channels`);
  }
  const ins = [x.name, c.constInput(wi, perm, wShape)];
  if (bi >= 0) ins.push(c.constInput(bi, [0], [outC], c.biasScale(op, wt)));
  const attrs: Record<string, Attr> = {
    kernel_shape: [kh, kw],
    strides: [o?.strideH || 1, o?.strideW || 1],
    dilations: [o?.dilationHFactor || 1, o?.dilationWFactor || 1],
    group,
  };
  setSameOrValid(attrs, (o?.padding ?? Padding.SAME) === Padding.SAME);
  return { y: { name: c.b.node('Conv', ins, out.name, attrs), shape: out.shape }, fused: o?.fusedActivationFunction ?? 0 };
};

const pool: OpHandler = (op, c, out) => {
  const o = c.options(op, BuiltinOptions.Pool2DOptions, Pool2DOptions) ?? c.fail(op, 'no pool options');
  const x = c.get(op.inputs[0]!, op);
  if (x.shape.length !== 4) c.fail(op, `input must be 4-D, got [${x.shape}]`);
  const attrs: Record<string, Attr> = { kernel_shape: [o.filterHeight, o.filterWidth], strides: [o.strideH || 1, o.strideW || 1] };
  if (o.padding === Padding.SAME) attrs.auto_pad = 'SAME_UPPER';
  const avg = op.name === 'AVERAGE_POOL_2D';
  const global = avg && out.shape[1] === 1 && out.shape[2] === 1 && o.filterHeight === x.shape[1] && o.filterWidth === x.shape[2];
  const y = { name: c.b.node(global ? 'GlobalAveragePool' : avg ? 'AveragePool' : 'MaxPool', [x.name], out.name, global ? {} : attrs), shape: out.shape };
  return { y, fused: o.fusedActivationFunction, features: global };
};

register({
  CONV_2D: conv,
  DEPTHWISE_CONV_2D: conv,
  AVERAGE_POOL_2D: pool,
  MAX_POOL_2D: pool,
  FULLY_CONNECTED: (op, c, out) => {
    const b = c.b;
    const o = c.options(op, BuiltinOptions.FullyConnectedOptions, FullyConnectedOptions);
    if (o?.weightsFormat) c.fail(op, 'shuffled weights are not supported');
    const x = c.get(op.inputs[0]!, op);
    const [wi, bi] = [op.inputs[1]!, op.inputs[2] ?? -1];
    if (!c.isConst(wi)) c.fail(op, 'non-constant weights are not supported');
    const wt = c.T[wi]!;
    const [units, depth] = wt.shape as [number, number];
    // TFLite flattens the input (in NHWC order) to [-1, depth].
    const flat = x.shape.length === 2 ? x.name : b.node('Reshape', [c.toNhwc(x), b.ints(b.fresh('shape'), [-1, depth])], b.fresh(`${out.name}_flat`));
    const bias = bi >= 0 ? c.constInput(bi, [0], [units], c.biasScale(op, wt)) : b.floats(b.fresh('bias'), [units], new Float32Array(units));
    const ins = [flat, c.constInput(wi, [0, 1], [units, depth]), bias];
    const y = { name: b.node('Gemm', ins, out.name, { transB: 1 }), shape: [out.shape[0] ?? 1, units] };
    if (o?.keepNumDims && out.shape.length !== 2) c.fail(op, `keep_num_dims with a ${out.shape.length}-D output is not supported`);
    return { y, fused: o?.fusedActivationFunction ?? 0 };
  },
});
