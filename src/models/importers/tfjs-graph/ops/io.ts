/** Graph inputs, constants and the ops that pass a tensor through unchanged. */
import { inlineTensor } from '../model-json.js';
import { where } from '../graph-order.js';
import { register, type OpHandler } from '../registry.js';

const placeholder: OpHandler = (n, c) => {
  if (c.inputT) c.fail(n, `a second input (the first is '${c.inputT.node.name}'); only one image input is supported`);
  const t = c.attr(n, 'dtype')?.type ?? 'DT_FLOAT';
  if (t !== 'DT_FLOAT') c.fail(n, `input type ${t} is not supported (only float images)`);
  const dims = (c.attr(n, 'shape')?.shape?.dim ?? []).map((d) => Number(d.size ?? -1));
  if (dims.length !== 4 || (dims[3] !== 3 && dims[3] !== -1)) c.fail(n, `input shape [${dims.join(', ')}] is not an image batch [N, H, W, 3]`);
  const known = (d: number) => (d > 0 ? d : null);
  const ph = known(dims[1]!);
  const pw = known(dims[2]!);
  const onnxDims = ['batch', 3, ph ?? 'height', pw ?? 'width'];
  c.inputT = { node: n, dims: onnxDims };
  return { name: c.b.input('input', onnxDims), shape: [null, ph, pw, 3] };
};

const passThrough: OpHandler = (n, c) => c.input(n, 0);

register({
  Placeholder: placeholder,
  PlaceholderWithDefault: placeholder,
  Const: (n, c) => {
    const inline = c.attr(n, 'value')?.tensor;
    const v = c.weights.get(n.name) ?? (inline ? inlineTensor(inline, c.file, where(n)) : c.fail(n, 'no value (not in the weights manifest)'));
    return { shape: v.shape, konst: v, cname: n.name };
  },
  Identity: passThrough,
  StopGradient: passThrough,
  Snapshot: passThrough,
  NoOp: () => undefined,
});
