/** Matrix products (with fused bias and activation) and softmax, the classifier end of a network. */
import type { Attr } from '../../onnx-builder.js';
import type { T } from '../context.js';
import { register, type OpHandler } from '../registry.js';

const matmul: OpHandler = (n, c, out) => {
  const b = c.b;
  const a = c.input(n, 0);
  const w = c.input(n, 1);
  if (a.shape.length !== 2 || w.shape.length !== 2) c.fail(n, 'only 2-D matrix products are supported');
  const ta = c.bool(n, 'transpose_a');
  const tb = c.bool(n, 'transpose_b');
  const mOut = w.shape[tb ? 0 : 1]!;
  const shape = [a.shape[ta ? 1 : 0]!, mOut];
  let fused = n.op === '_FusedMatMul' ? c.strs(n, 'fused_ops') : [];
  const gemmIn = [c.data(a, `${n.name}/a`), c.data(w, `${n.name}/b`)];
  let arg = 2;
  if (fused[0] === 'BiasAdd') {
    gemmIn.push(c.data(c.input(n, arg++), `${n.name}/bias`));
    fused = fused.slice(1);
  }
  if (fused.length > 1) c.fail(n, `fused ops [${c.strs(n, 'fused_ops').join(', ')}] not supported`);
  const attrs: Record<string, Attr> = { transA: ta ? 1 : 0, transB: tb ? 1 : 0 };
  let name = b.node('Gemm', gemmIn, fused.length ? b.fresh(n.name) : out, attrs);
  if (fused.length) name = c.activation(n, fused[0]!, { name, shape }, out, fused[0] === 'Prelu' ? c.input(n, arg++) : undefined).name!;
  return { shape, name };
};

register({
  MatMul: matmul,
  _FusedMatMul: matmul,
  Softmax: (n, c, out) => {
    const x = c.input(n, 0);
    const axis = x.shape.length === 4 ? 1 : x.shape.length - 1;
    const y: T = { shape: x.shape, name: c.b.node('Softmax', [c.data(x, n.name)], out, { axis }) };
    // Its input is the logits graft names as an output.
    c.softmaxInput.set(y.name!, x);
    return y;
  },
});
