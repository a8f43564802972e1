/** Convolutions (plain, depthwise, with fused bias / batch norm / activation), batch norm and 2-D pooling. */
import type { Attr } from '../../onnx-builder.js';
import { convOutSize, count, KERNEL_PERM, samePads, transposeData } from '../../layout.js';
import type { TfjsConst } from '../../tfjs-weights.js';
import { dataInputs } from '../graph-order.js';
import type { GraphNode } from '../model-json.js';
import type { GraphCtx, T } from '../context.js';
import { register, type OpHandler } from '../registry.js';

type Pad = 'same' | [number, number];

/**
 * TF padding → ONNX attrs (SAME → auto_pad SAME_UPPER, VALID → zeros, EXPLICIT → pads). ONNX Runtime has no auto_pad
 * with dilation, so a dilated SAME conv gets TF's SAME pads written out (which needs the input size).
 */
export function padding(c: GraphCtx, n: GraphNode, attrs: Record<string, Attr>, xs: (number | null)[], k: number[], s: number[], d = [1, 1]): { h: Pad; w: Pad } {
  const p = c.str(n, 'padding');
  if (p === 'SAME') {
    if (d[0] === 1 && d[1] === 1) {
      attrs.auto_pad = 'SAME_UPPER';
      return { h: 'same', w: 'same' };
    }
    const same = (size: number | null, i: number): [number, number] => {
      if (size === null) c.fail(n, 'SAME padding with dilation needs a known input size');
      return samePads(size, k[i]!, s[i]!, d[i]!);
    };
    const [h, w] = [same(xs[1]!, 0), same(xs[2]!, 1)];
    attrs.pads = [h[0], w[0], h[1], w[1]];
    return { h, w };
  }
  if (p === 'VALID') {
    attrs.pads = [0, 0, 0, 0];
    return { h: [0, 0], w: [0, 0] };
  }
  if (p === 'EXPLICIT') {
    const e = c.ints(n, 'explicit_paddings');
    if (e.length !== 8 || e[0] || e[1] || e[6] || e[7]) c.fail(n, `explicit_paddings [${e}] not supported`);
    attrs.pads = [e[2]!, e[4]!, e[3]!, e[5]!];
    return { h: [e[2]!, e[3]!], w: [e[4]!, e[5]!] };
  }
  c.fail(n, `padding '${p}' not supported`);
}

/** Conv2D / depthwise, with an optional bias or batch norm and activation fused in; returns the NCHW output. */
function conv(n: GraphNode, c: GraphCtx, out: string, depthwise: boolean): T {
  const b = c.b;
  c.floatType(n);
  c.nhwcOnly(n);
  const x = c.input(n, 0);
  if (x.shape.length !== 4) c.fail(n, `input is ${x.shape.length}-D, expected 4-D`);
  const k = c.constOf(n, 1, 'filter');
  if (k.shape.length !== 4) c.fail(n, `filter is ${k.shape.length}-D, expected 4-D`);
  const [kh, kw, cin, cm] = k.shape as [number, number, number, number];
  const strides = c.ints(n, 'strides', [1, 1, 1, 1]);
  const dil = c.ints(n, 'dilations', [1, 1, 1, 1]);
  if (strides.length !== 4 || strides[0] !== 1 || strides[3] !== 1) c.fail(n, `strides [${strides}] not supported`);
  if (dil.length !== 4 || dil[0] !== 1 || dil[3] !== 1) c.fail(n, `dilations [${dil}] not supported`);
  const outC = depthwise ? cin * cm : cm;
  const W = transposeData(k.data, k.shape, depthwise ? KERNEL_PERM.hwcm : KERNEL_PERM.hwio);
  const wName = c.initializer(k, c.input(n, 1).cname ?? `${n.name}/filter`, depthwise ? 'dw' : 'conv', depthwise ? [outC, 1, kh, kw] : [outC, cin, kh, kw], () => W);
  const attrs: Record<string, Attr> = { kernel_shape: [kh, kw], strides: [strides[1]!, strides[2]!], dilations: [dil[1]!, dil[2]!], group: depthwise ? cin : 1 };
  const pad = padding(c, n, attrs, x.shape, [kh, kw], [strides[1]!, strides[2]!], [dil[1]!, dil[2]!]);
  const convIn = [x.name!, wName];

  // Fused ops: [BiasAdd | FusedBatchNorm]? [activation]?
  let fused = n.op === '_FusedConv2D' || n.op === 'FusedDepthwiseConv2dNative' ? c.strs(n, 'fused_ops') : [];
  const numArgs = c.int(n, 'num_args', dataInputs(n).length - 2);
  let arg = 2;
  let bn: { scale: TfjsConst; offset: TfjsConst; mean: TfjsConst; variance: TfjsConst; eps: number } | undefined;
  if (fused[0] === 'BiasAdd') {
    const bias = c.constOf(n, arg++, 'bias');
    if (count(bias.shape) !== outC) c.fail(n, `bias has ${count(bias.shape)} values for ${outC} channels`);
    convIn.push(c.initializer(bias, c.input(n, arg - 1).cname ?? `${n.name}/bias`, 'vec', [outC], () => bias.data));
    fused = fused.slice(1);
  } else if (fused[0] === 'FusedBatchNorm') {
    bn = { scale: c.constOf(n, arg++, 'scale'), offset: c.constOf(n, arg++, 'offset'), mean: c.constOf(n, arg++, 'mean'), variance: c.constOf(n, arg++, 'variance'), eps: c.flt(n, 'epsilon', 1e-3) };
    fused = fused.slice(1);
  }
  if (fused.length > 1) c.fail(n, `fused ops [${c.strs(n, 'fused_ops').join(', ')}] not supported`);
  if (arg - 2 > numArgs) c.fail(n, `num_args ${numArgs} is fewer than its fused ops need`);
  const shape = [x.shape[0]!, convOutSize(x.shape[1]!, kh, strides[1]!, dil[1]!, pad.h), convOutSize(x.shape[2]!, kw, strides[2]!, dil[2]!, pad.w), outC];
  let y = b.node('Conv', convIn, fused.length || bn ? b.fresh(n.name) : out, attrs);
  if (bn) {
    const { scale, offset, mean, variance, eps } = bn;
    const f = (v: TfjsConst, what: string) => (count(v.shape) === outC ? b.floats(b.fresh(`${n.name}/${what}`), [outC], v.data) : c.fail(n, `batch norm ${what} has ${count(v.shape)} values for ${outC} channels`));
    y = b.node('BatchNormalization', [y, f(scale, 'scale'), f(offset, 'offset'), f(mean, 'mean'), f(variance, 'variance')], fused.length ? b.fresh(n.name) : out, { epsilon: { f: eps } });
  }
  if (fused.length) {
    const preluAlpha = fused[0] === 'Prelu' ? c.input(n, arg++) : undefined;
    y = c.activation(n, fused[0]!, { name: y, shape }, out, preluAlpha).name!;
  }
  return { name: y, shape };
}

const batchNorm: OpHandler = (n, c, out) => {
  c.nhwcOnly(n);
  if (c.bool(n, 'is_training')) c.fail(n, 'batch norm in training mode is not supported');
  const x = c.input(n, 0);
  if (x.shape.length !== 4) c.fail(n, `input is ${x.shape.length}-D, expected 4-D`);
  const ps = [1, 2, 3, 4].map((i) => c.constOf(n, i, ['scale', 'offset', 'mean', 'variance'][i - 1]!));
  const ch = count(ps[0]!.shape);
  const bnIn = [c.data(x, n.name), ...ps.map((p, i) => c.b.floats(c.b.fresh(`${n.name}/p${i}`), [ch], p.data))];
  return { name: c.b.node('BatchNormalization', bnIn, out, { epsilon: { f: c.flt(n, 'epsilon', 1e-4) } }), shape: x.shape };
};

const pool: OpHandler = (n, c, out) => {
  c.nhwcOnly(n);
  const x = c.input(n, 0);
  if (x.shape.length !== 4) c.fail(n, `input is ${x.shape.length}-D, expected 4-D`);
  const k = c.ints(n, 'ksize');
  const s = c.ints(n, 'strides');
  if (k.length !== 4 || k[0] !== 1 || k[3] !== 1 || s.length !== 4 || s[0] !== 1 || s[3] !== 1) c.fail(n, `ksize [${k}] / strides [${s}] not supported`);
  const attrs: Record<string, Attr> = { kernel_shape: [k[1]!, k[2]!], strides: [s[1]!, s[2]!] };
  const pad = padding(c, n, attrs, x.shape, [k[1]!, k[2]!], [s[1]!, s[2]!]);
  const shape = [x.shape[0]!, convOutSize(x.shape[1]!, k[1]!, s[1]!, 1, pad.h), convOutSize(x.shape[2]!, k[2]!, s[2]!, 1, pad.w), x.shape[3]!];
  const y: T = { shape, name: c.b.node(n.op === 'AvgPool' ? 'AveragePool' : 'MaxPool', [c.data(x, n.name)], out, attrs) };
  // A window covering the whole map is a global pooling: its output is the feature vector.
  if (pad.h !== 'same' && x.shape[1] === k[1] && x.shape[2] === k[2]) y.pooled = true;
  return y;
};

register({
  Conv2D: (n, c, out) => conv(n, c, out, false),
  _FusedConv2D: (n, c, out) => conv(n, c, out, false),
  DepthwiseConv2dNative: (n, c, out) => conv(n, c, out, true),
  FusedDepthwiseConv2dNative: (n, c, out) => conv(n, c, out, true),
  FusedBatchNorm: batchNorm,
  FusedBatchNormV2: batchNorm,
  FusedBatchNormV3: batchNorm,
  AvgPool: pool,
  MaxPool: pool,
});
