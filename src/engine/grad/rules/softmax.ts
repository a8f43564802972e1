/** Backward rules of softmax and log-softmax (opset 13+: along one axis). */
import { attrInt } from '../forward.js';
import { register } from './registry.js';

register({
  // dx = y·(dy − Σ dy·y)
  Softmax: (n, [dy], c) => {
    if (!dy) return [];
    const y = n.outputs[0]!;
    const axis = attrInt(n, 'axis', -1);
    const dot = c.w.op('ReduceSum', [c.w.op('Mul', [dy, y]), c.w.ints([axis])], { keepdims: 1 });
    return [c.w.op('Mul', [y, c.w.op('Sub', [dy, dot])])];
  },
  // dx = dy − softmax·Σ dy, with softmax = exp(y)
  LogSoftmax: (n, [dy], c) => {
    if (!dy) return [];
    const axis = attrInt(n, 'axis', -1);
    const sum = c.w.op('ReduceSum', [dy, c.w.ints([axis])], { keepdims: 1 });
    return [c.w.op('Sub', [dy, c.w.op('Mul', [c.w.op('Exp', [n.outputs[0]!]), sum])])];
  },
});
