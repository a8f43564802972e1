/** One single-threaded ONNX Runtime session in a worker thread (see OrtWorkerPool). */
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { createSession } from './ort.js';

const { bytes, outputs, spinning, where } = workerData as { bytes: Uint8Array; outputs: string[]; spinning: boolean; where: string };
const port = parentPort!;

try {
  const session = await createSession(bytes, { where, threads: 1, spinning });
  const input = session.inputNames[0]!;
  port.on('message', async (m: { type: 'run'; id: number; data: Float32Array; shape: number[] }) => {
    try {
      const res = await session.run({ [input]: new ort.Tensor('float32', m.data, m.shape) }, outputs);
      const out: Record<string, { data: Float32Array; dims: number[] }> = {};
      const transfer: ArrayBuffer[] = [];
      for (const name of outputs) {
        const data = (res[name]!.data as Float32Array).slice();
        out[name] = { data, dims: res[name]!.dims.map(Number) };
        transfer.push(data.buffer);
      }
      // The input buffer goes back too: the pool reuses it for this worker's next batch.
      transfer.push(m.data.buffer as ArrayBuffer);
      port.postMessage({ type: 'result', id: m.id, out, input: m.data }, transfer);
    } catch (err) {
      port.postMessage({ type: 'error', id: m.id, message: String((err as Error)?.message ?? err), input: m.data }, [m.data.buffer as ArrayBuffer]);
    }
  });
  port.postMessage({ type: 'ready' });
} catch (err) {
  port.postMessage({ type: 'error', id: -1, message: String((err as Error)?.message ?? err) });
}
