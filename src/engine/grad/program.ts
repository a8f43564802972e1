/**
 * A gradient program: a model's forward pass, a loss and the requested gradients as one ONNX graph, run by ONNX
 * Runtime (multi-threaded MLAS kernels). One program serves one batch size; `GradientPrograms` keeps one per size.
 */
import * as ort from 'onnxruntime-node';
import { createSession } from '../ort.js';
import { buildGradient, type GradGraph, type GradSpec } from './build.js';
import { prepareForward, type ForwardGraph } from './forward.js';

export interface ProgramSpec extends GradSpec {
  batch: number;
  /** Initializers trained as weights (fed with every run, returned gradients by name when listed in `wrt`). */
  params?: string[];
  /** Running means of BatchNormalization nodes to run in training mode; their batch statistics are returned. */
  bnTraining?: string[];
}

export interface ProgramOptions {
  /** Intra-op threads (default: all cores). */
  threads?: number;
  /** For error messages. */
  where?: string;
  /** Let ORT's idle threads spin-wait (default on; see the comment at the session). */
  spinning?: boolean;
}

export interface ProgramResult {
  loss: number;
  outputs: Record<string, { data: Float32Array; dims: number[] }>;
  grads: Record<string, Float32Array>;
}

const size = (d: number[]) => d.reduce((a, b) => a * b, 1);

export class GradientProgram {
  private constructor(
    readonly fwd: ForwardGraph,
    readonly graph: GradGraph,
    private readonly session: ort.InferenceSession,
  ) {}

  static async create(modelBytes: Uint8Array, spec: ProgramSpec, opts: ProgramOptions = {}): Promise<GradientProgram> {
    const where = opts.where ?? 'model';
    const fwd = await prepareForward(modelBytes, { batch: spec.batch, params: spec.params, bnTraining: spec.bnTraining }, where);
    const stats = fwd.bnStats.flatMap((s) => [s.batchMean, s.batchVar]);
    const graph = buildGradient(fwd, { ...spec, outputs: [...(spec.outputs ?? []), ...stats] });
    // Memory patterns off: --finetune all at batch 16 peaks at 1.54 GB RSS without, 2.5 GB with, at the same speed.
    // Spinning on by default: a gradient graph has ~1000 nodes, and waking sleeping threads for each costs ~40 ms
    // of a 155 ms ResNet-50 step (112 ms spinning). It slows another session running at the same moment, so
    // callers that interleave with another live session can turn it off.
    const session = await createSession(graph.bytes, { where, what: 'the gradient graph', threads: opts.threads, spinning: opts.spinning ?? true, memPattern: false });
    return new GradientProgram(fwd, graph, session);
  }

  /** Initial values of the trained weights, as the model holds them. */
  paramValues(): Record<string, Float32Array> {
    return Object.fromEntries(this.fwd.params.map((p) => [p.name, p.value.slice()]));
  }

  /** Run one step. `feeds` names every graph input (data, params, loss inputs) with its values. */
  async run(feeds: Record<string, Float32Array>): Promise<ProgramResult> {
    const input: Record<string, ort.Tensor> = {};
    for (const i of this.graph.inputs) {
      const v = feeds[i.name];
      if (!v) throw new Error(`internal: gradient program needs input '${i.name}'`);
      if (v.length !== size(i.dims)) throw new Error(`internal: input '${i.name}' has ${v.length} values, expected [${i.dims.join(',')}]`);
      input[i.name] = new ort.Tensor('float32', v, i.dims);
    }
    const out = await this.session.run(input);
    const grads: Record<string, Float32Array> = {};
    for (const [t, name] of Object.entries(this.graph.grads)) grads[t] = out[name]!.data as Float32Array;
    const outputs: ProgramResult['outputs'] = {};
    for (const o of this.graph.outputs) outputs[o] = { data: out[o]!.data as Float32Array, dims: [...out[o]!.dims] };
    return { loss: (out[this.graph.loss]!.data as Float32Array)[0]!, outputs, grads };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
