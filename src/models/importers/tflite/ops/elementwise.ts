/** Elementwise operators: binary arithmetic with NHWC broadcasting, activations, softmax, (de)quantisation. */
import { count, TO_NCHW } from '../../layout.js';
import { ActivationOptions, BuiltinOptions, SoftmaxOptions } from '../../tflite-schema/index.js';
import { register, type OpHandler } from '../registry.js';

const binary = (onnxOp: string, options: number): OpHandler => (op, c, out) => {
  const b = c.b;
  const o = c.options(op, options, ActivationOptions);
  const rank = out.shape.length;
  const operand = (i: number): string => {
    const v = c.get(i, op, rank);
    if (rank !== 4 || v.shape.length === 4 || count(v.shape) === 1) return v.name;
    // A lower-rank activation against a 4-D one: NHWC broadcasting → unsqueeze on the left, then NCHW.
    const lead = Array.from({ length: 4 - v.shape.length }, (_, k) => k);
    const u = b.node('Unsqueeze', [v.name, b.ints(b.fresh('axes'), lead)], b.fresh('bcast'));
    return b.node('Transpose', [u], b.fresh('bcast_nchw'), { perm: TO_NCHW });
  };
  const [x, y] = [operand(op.inputs[0]!), operand(op.inputs[1]!)];
  return { y: { name: b.node(onnxOp, [x, y], out.name), shape: out.shape }, fused: o?.fusedActivationFunction ?? 0 };
};

/** A unary ONNX op on the first input. */
const unary = (onnxOp: string): OpHandler => (op, c, out) => ({ y: { name: c.b.node(onnxOp, [c.get(op.inputs[0]!, op).name], out.name), shape: out.shape } });

const clipped = (lo: number, hi: number): OpHandler => (op, c, out) => ({ y: { name: c.clip(c.get(op.inputs[0]!, op).name, lo, hi, out.name), shape: out.shape } });

/** The graph runs in float: (de)quantising is the identity on the real value. */
const identity = (requantise: boolean): OpHandler => (op, c, out) => ({ y: { ...c.get(op.inputs[0]!, op), shape: out.shape }, requantise });

register({
  ADD: binary('Add', BuiltinOptions.AddOptions),
  SUB: binary('Sub', BuiltinOptions.SubOptions),
  MUL: binary('Mul', BuiltinOptions.MulOptions),
  DIV: binary('Div', BuiltinOptions.DivOptions),
  HARD_SWISH: (op, c, out) => {
    const x = c.get(op.inputs[0]!, op);
    const hs = c.b.node('HardSigmoid', [x.name], c.b.fresh(`${out.name}_hsig`), { alpha: { f: 1 / 6 }, beta: { f: 0.5 } });
    return { y: { name: c.b.node('Mul', [x.name, hs], out.name), shape: out.shape } };
  },
  LOGISTIC: unary('Sigmoid'),
  TANH: unary('Tanh'),
  RELU: unary('Relu'),
  RELU6: clipped(0, 6),
  RELU_N1_TO_1: clipped(-1, 1),
  SOFTMAX: (op, c, out) => {
    const b = c.b;
    const o = c.options(op, BuiltinOptions.SoftmaxOptions, SoftmaxOptions);
    const x = c.get(op.inputs[0]!, op);
    const beta = o?.beta ?? 1;
    const r = x.shape.length;
    const flat = r === 4 && x.shape[1] === 1 && x.shape[2] === 1 ? b.node('Flatten', [x.name], b.fresh(`${out.name}_flat`), { axis: 1 }) : x.name;
    const flatShape = flat === x.name ? x.shape : [x.shape[0]!, x.shape[3]!];
    // Its input is the logits graft names as an output.
    if (flatShape.length === 2) c.logits = { name: flat, shape: flatShape };
    const scaled = beta === 1 || beta === 0 ? flat : b.node('Mul', [flat, c.scalar(beta)], b.fresh(`${out.name}_beta`));
    const axis = flatShape.length === 4 ? 1 : flatShape.length - 1;
    return { y: { name: b.node('Softmax', [scaled], out.name, { axis }), shape: flatShape }, requantise: false };
  },
  QUANTIZE: identity(true),
  DEQUANTIZE: identity(false),
});
