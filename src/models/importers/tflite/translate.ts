/** Parsed TFLite model → ONNX bytes: the input, every operator through its handler, then graft's outputs. */
import { basename } from 'node:path';
import { fail } from '../fail.js';
import { count } from '../layout.js';
import { ActivationFunctionType } from '../tflite-schema/index.js';
import { TfliteCtx, type V } from './context.js';
import { translateInput } from './input.js';
import { OP_HANDLERS } from './ops/index.js';
import type { Parsed } from './parse.js';

export function translate(m: Parsed, file: string, emulate: boolean): Uint8Array {
  // Refuse what cannot be translated before building anything, naming the first such operator.
  const unsupported = m.ops.filter((op) => !OP_HANDLERS.has(op.name));
  if (unsupported.length) {
    const first = unsupported[0]!;
    const others = new Set(unsupported.slice(1).map((o) => o.name).filter((n) => n !== first.name));
    fail(file, `operator ${first.index} is ${first.name}, which the TFLite importer does not support${others.size ? ` (also unsupported here: ${[...others].join(', ')})` : ''}; supported: ${[...OP_HANDLERS.keys()].join(', ')}`);
  }

  const c = new TfliteCtx(file, m.tensors, emulate);
  const metadata = translateInput(c, m);
  for (const op of m.ops) {
    const t = c.T[op.outputs[0]!];
    if (!t) c.fail(op, 'no output tensor');
    const name = c.b.fresh(t.name.split(';')[0]!.replace(/[^A-Za-z0-9_/.-]+/g, '_') || `t${t.index}`);
    const r = OP_HANDLERS.get(op.name)!(op, c, { t, shape: t.shape, name });
    if (op.outputs.length !== 1) c.fail(op, `${op.outputs.length} outputs, expected 1`);
    const y = c.finish(r.y, r.fused ?? ActivationFunctionType.NONE, op, t, r.requantise ?? true);
    if (r.features) c.features = y;
    c.values.set(t.index, y);
  }
  writeOutputs(c, m);
  return c.b.build({ producer: 'graft tflite importer', graphName: basename(file).replace(/\.tflite$/i, '') || 'model', metadata });
}

/** `features` and `logits` flattened to [N, C], then the model's own outputs (`output`, `output_1`, …; 4-D ones NCHW). */
function writeOutputs(c: TfliteCtx, m: Parsed): void {
  const dimsOf = (v: V): (number | string)[] => (v.shape.length === 4 ? ['batch', v.shape[3]!, v.shape[1]!, v.shape[2]!] : ['batch', ...v.shape.slice(1)]);
  const named = (v: V, as: string, flatten: boolean) => {
    if (flatten && v.shape.length !== 2) {
      c.b.node('Flatten', [v.name], as, { axis: 1 });
      c.b.output(as, ['batch', count(v.shape.slice(1))]);
    } else {
      c.b.node('Identity', [v.name], as);
      c.b.output(as, dimsOf(v));
    }
  };
  if (c.features) named(c.features, 'features', true);
  if (c.logits) named(c.logits, 'logits', true);
  m.outputs.forEach((i, k) => {
    const v = c.values.get(i) ?? fail(c.file, `output tensor ${i} (${c.T[i]!.name}) is not computed by any operator`);
    named(v, k === 0 ? 'output' : `output_${k}`, false);
  });
}
