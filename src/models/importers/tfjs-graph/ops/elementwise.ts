/** Elementwise ops: binary arithmetic (folded on constants), bias add, activations and unary math. */
import { dataInputs } from '../graph-order.js';
import { register, type OpHandler } from '../registry.js';

/** A binary op with TF broadcasting; `fold` computes it on constants (shape arithmetic in the graph). */
const binary = (onnxOp: string, fold?: (p: number, q: number) => number): OpHandler => (n, c, out) => c.elementwise(n, onnxOp, [c.input(n, 0), c.input(n, 1)], out, fold);

const activation: OpHandler = (n, c, out) => c.activation(n, n.op, c.input(n, 0), out);

/** A unary op with the same name in ONNX. */
const unary: OpHandler = (n, c, out) => {
  const x = c.input(n, 0);
  return { shape: x.shape, name: c.b.node(n.op, [c.data(x, n.name)], out) };
};

register({
  BiasAdd: (n, c, out) => {
    c.nhwcOnly(n);
    return c.elementwise(n, 'Add', [c.input(n, 0), c.input(n, 1)], out);
  },
  Add: binary('Add', (p, q) => p + q),
  AddV2: binary('Add', (p, q) => p + q),
  Sub: binary('Sub', (p, q) => p - q),
  Mul: binary('Mul', (p, q) => p * q),
  RealDiv: binary('Div', (p, q) => p / q),
  Div: binary('Div', (p, q) => p / q),
  Maximum: binary('Max', Math.max),
  Minimum: binary('Min', Math.min),
  AddN: (n, c, out) => c.elementwise(n, 'Sum', dataInputs(n).map((_, i) => c.input(n, i)), out),
  Relu: activation,
  Relu6: activation,
  Elu: activation,
  LeakyRelu: activation,
  Sigmoid: activation,
  Tanh: activation,
  Prelu: (n, c, out) => c.activation(n, 'Prelu', c.input(n, 0), out, c.input(n, 1)),
  Neg: unary,
  Sqrt: unary,
  Exp: unary,
  Rsqrt: (n, c, out) => {
    const x = c.input(n, 0);
    return { shape: x.shape, name: c.b.node('Reciprocal', [c.b.node('Sqrt', [c.data(x, n.name)], c.b.fresh(`${n.name}_sqrt`))], out) };
  },
  Square: (n, c, out) => {
    const x = c.input(n, 0);
    const xn = c.data(x, n.name);
    return { shape: x.shape, name: c.b.node('Mul', [xn, xn], out) };
  },
});
