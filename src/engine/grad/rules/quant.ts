/**
 * Quantisation: straight-through. The gradient that reaches a quantised tensor is carried in float "per quantum"
 * units (dL/dq = dL/dx·scale at DequantizeLinear), and QuantizeLinear turns it back (dL/dx = dL/dq / scale), so a
 * Quantize → Dequantize pair passes the gradient unchanged, as fake-quantisation training does.
 */
import { attrInt } from '../forward.js';
import { register, reshape, type RuleCtx } from './registry.js';

/** A per-axis scale [C] shaped to broadcast along `axis` of a tensor of rank `rank`. */
function scaleFor(c: RuleCtx, scale: string, axis: number, rank: number): string {
  const sd = c.dims(scale);
  if (sd.length === 0 || (sd.length === 1 && sd[0] === 1)) return scale;
  const a = (axis + rank) % rank;
  return reshape(c, scale, Array.from({ length: rank }, (_, i) => (i === a ? sd[0]! : 1)));
}

register({
  DequantizeLinear: (n, [dy], c) => {
    if (!dy) return [];
    const rank = c.dims(n.inputs[0]!).length;
    return [c.w.op('Mul', [dy, scaleFor(c, n.inputs[1]!, attrInt(n, 'axis', 1), rank)])];
  },
  QuantizeLinear: (n, [dy], c) => {
    if (!dy) return [];
    const rank = c.dims(n.inputs[0]!).length;
    return [c.w.op('Div', [dy, scaleFor(c, n.inputs[1]!, attrInt(n, 'axis', 1), rank)])];
  },
});
