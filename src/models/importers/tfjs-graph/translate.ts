/** A checked TF.js graph → ONNX bytes: every node the outputs need through its op handler, then graft's outputs. */
import { basename, dirname } from 'node:path';
import { fail } from '../fail.js';
import { count, TO_NCHW } from '../layout.js';
import type { TfjsConst } from '../tfjs-weights.js';
import { GraphCtx, type T } from './context.js';
import { graphOrder, ref, where } from './graph-order.js';
import type { GraphModelJson } from './model-json.js';
import { OP_HANDLERS } from './ops/index.js';

export function translate(json: GraphModelJson, weights: Map<string, TfjsConst>, file: string): Uint8Array {
  const { byName, outRefs, order } = graphOrder(json, file);
  // Refuse what cannot be translated before building anything.
  for (const n of order) if (!OP_HANDLERS.has(n.op)) fail(file, `${where(n)} is not supported by the TF.js graph importer`);

  const c = new GraphCtx(file, byName, weights);
  for (const n of order) {
    const out = c.uniq(n.name);
    const y = OP_HANDLERS.get(n.op)!(n, c, out);
    if (!y) continue;
    if (y.pooled) c.pooled = y;
    c.values.set(n.name, y);
  }
  if (!c.inputT) fail(file, 'graph has no input (Placeholder)');
  writeOutputs(c, outRefs);

  const metadata: Record<string, string> = {
    'Image.BitmapPixelFormat': 'Rgb8',
    'Image.ColorSpaceGamma': 'SRGB',
    'Image.NominalPixelRange': 'Normalized_0_1',
    'tfjs.format': 'graph-model',
  };
  if (json.convertedBy) metadata['tfjs.convertedBy'] = String(json.convertedBy);
  if (json.generatedBy) metadata['tfjs.generatedBy'] = String(json.generatedBy);
  return c.b.build({ producer: 'graft tfjs-graph importer', graphName: basename(dirname(file)) || 'model', metadata });
}

/**
 * graft's outputs: `features` (the last global pooling, flattened), `logits` (a classifier's output after it, or a
 * final Softmax's input), then the graph's own outputs that are neither as `output`, `output_1`, … (4-D ones NCHW).
 */
function writeOutputs(c: GraphCtx, outRefs: string[]): void {
  const b = c.b;
  const dimsOf = (t: T): (number | string)[] => {
    const d = t.shape.length === 4 ? TO_NCHW.map((p) => t.shape[p]!) : t.shape;
    return d.map((v, i) => (v === null ? (i === 0 ? 'batch' : `d${i}`) : v));
  };
  const flat = (t: T): { name: string; dims: (number | string)[] } => {
    if (t.shape.length === 2) return { name: t.name!, dims: dimsOf(t) };
    const rest = t.shape.slice(1);
    // NCHW flattening is the TF order only when H = W = 1 (a pooled map); otherwise go through NHWC.
    const src = t.shape.length === 4 && !(t.shape[1] === 1 && t.shape[2] === 1) ? c.toNhwc(t, 'flat') : t.name!;
    return { name: b.node('Flatten', [src], b.fresh('flat'), { axis: 1 }), dims: ['batch', rest.every((d) => d !== null) ? count(rest as number[]) : 'n'] };
  };
  const emit = (src: string, as: string, dims: (number | string)[]) => {
    b.node('Identity', [src], as);
    b.output(as, dims);
  };
  const outs = outRefs.map((o) => {
    const r = ref(o);
    const t = c.values.get(r.index ? `${r.node}:${r.index}` : r.node) ?? fail(c.file, `output '${o}' is not computed`);
    if (t.konst) fail(c.file, `output '${o}' is a constant`);
    return t;
  });
  const main = outs[0]!;
  let features: T | undefined;
  let logits: T | undefined;
  if (main.pooled) features = main;
  else {
    if (c.pooled) features = c.pooled;
    const sm = c.softmaxInput.get(main.name!);
    if (sm && !sm.konst) logits = sm;
    else if (main.shape.length === 2 && c.pooled) logits = main;
  }
  if (features) {
    const f = flat(features);
    emit(f.name, 'features', f.dims);
  }
  if (logits) {
    const l = flat(logits);
    emit(l.name, 'logits', l.dims);
  }
  const rest = outs.filter((t) => t !== features && t !== logits);
  rest.forEach((t, k) => emit(t.name!, k === 0 ? 'output' : `output_${k}`, dimsOf(t)));
}
