/** The state the TF.js layers translation shares between layer handlers, and the activations they apply. */
import { OnnxBuilder } from '../onnx-builder.js';
import { fail } from '../fail.js';
import type { TfjsConst } from '../tfjs-weights.js';

/** A tensor in the graph being built: its ONNX name and rank (4-D tensors are NCHW). */
export interface T { name: string; rank: number; channels?: number }

export class LayersCtx {
  readonly b = new OnnxBuilder();
  /** The global pooling output, flattened (the feature vector). */
  features: T | undefined;
  /** The input of a final softmax, flattened. */
  logits: T | undefined;

  constructor(
    readonly file: string,
    private readonly weights: Map<string, TfjsConst>,
  ) {}

  fail(layer: string, msg: string): never {
    fail(this.file, `layer ${layer}: ${msg}`);
  }

  /** Weight `short` of `layer` (its manifest name may carry a scope prefix or a `:0` suffix). */
  w(layer: string, short: string, required = true): TfjsConst {
    const hit = this.weights.get(`${layer}/${short}`) ?? [...this.weights.entries()].find(([k]) => k.endsWith(`${layer}/${short}`) || k.endsWith(`${layer}/${short}:0`))?.[1];
    if (!hit && required) fail(this.file, `weight '${layer}/${short}' not found in the weights manifest`);
    return hit!;
  }

  scalar(base: string, v: number): string {
    return this.b.floats(this.b.fresh(base), [], new Float32Array([v]));
  }

  /** A Keras activation by name. */
  act(x: T, a: string, name: string): T {
    const b = this.b;
    switch (a) {
      case 'linear':
        return x;
      case 'relu':
        return { ...x, name: b.node('Relu', [x.name], b.fresh(name)) };
      case 'relu6':
        return { ...x, name: b.node('Clip', [x.name, this.scalar('zero', 0), this.scalar('six', 6)], b.fresh(name)) };
      case 'sigmoid':
        return { ...x, name: b.node('Sigmoid', [x.name], b.fresh(name)) };
      case 'hard_sigmoid':
        return { ...x, name: b.node('HardSigmoid', [x.name], b.fresh(name), { alpha: { f: 0.2 }, beta: { f: 0.5 } }) };
      case 'tanh':
        return { ...x, name: b.node('Tanh', [x.name], b.fresh(name)) };
      case 'swish':
      case 'silu':
        return { ...x, name: b.node('Mul', [x.name, b.node('Sigmoid', [x.name], b.fresh(`${name}_sig`))], b.fresh(name)) };
      case 'softmax': {
        // Softmax over channels; its input is the logits.
        const flat = x.rank === 4 ? b.node('Flatten', [x.name], b.fresh(`${name}_flat`), { axis: 1 }) : x.name;
        this.logits = { name: flat, rank: 2, channels: x.channels };
        return { name: b.node('Softmax', [flat], b.fresh(name), { axis: 1 }), rank: 2, channels: x.channels };
      }
      default:
        this.fail(name, `activation '${a}' is not supported`);
    }
  }
}
