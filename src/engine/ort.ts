import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { GraftError } from '../errors.js';
import { cutAt, LoadedOnnx } from '../models/onnx-file.js';

export interface OrtOptions {
  /** Intra-op threads; default: all cores. */
  threads?: number;
}

export interface OutputTensor { data: Float32Array; dims: number[] }

/**
 * A forward-only ONNX Runtime session that returns the requested tensors (graph outputs or any inner tensor: the
 * graph is cut there). One input, batched along the first axis.
 */
export class OrtModel {
  readonly inputName: string;
  readonly outputs: string[];
  readonly threads: number;
  private constructor(private session: ort.InferenceSession, outputs: string[], threads: number) {
    this.inputName = session.inputNames[0]!;
    this.outputs = outputs;
    this.threads = threads;
  }

  static async create(model: LoadedOnnx, outputs: string[], opts: OrtOptions = {}): Promise<OrtModel> {
    const graphOutputs = model.info.outputs.map((o) => o.name);
    const same = outputs.length === graphOutputs.length && outputs.every((o) => graphOutputs.includes(o));
    const bytes = same ? model.bytes : cutAt(model, outputs);
    const threads = opts.threads ?? availableParallelism();
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: 'all',
      });
    } catch (err) {
      throw new GraftError(`${model.info.path}: ONNX Runtime cannot load this model: ${(err as Error).message.split('\n')[0]}`);
    }
    return new OrtModel(session, outputs, threads);
  }

  /** Run a batch of `n` inputs laid out as `shape` (first dim = n). */
  async run(data: Float32Array, shape: number[]): Promise<Record<string, OutputTensor>> {
    const feeds = { [this.inputName]: new ort.Tensor('float32', data, shape) };
    const res = await this.session.run(feeds, this.outputs);
    const out: Record<string, OutputTensor> = {};
    for (const name of this.outputs) {
      const t = res[name]!;
      out[name] = { data: t.data as Float32Array, dims: t.dims.map(Number) };
    }
    return out;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
