/**
 * TF.js set-up for graft's differentiable executor: backends (wasm by default, cpu as fallback) and gradients.
 *
 * Gradients: `@tensorflow/tfjs-core` alone registers none (its gradient registrations are extension-less ESM files
 * that plain Node cannot load). The umbrella `@tensorflow/tfjs` package's Node entry (`dist/tf.node.js`, CommonJS)
 * bundles all of them and registers them, on import, in tfjs-core's global gradient registry; it loads no native
 * code (tfjs-node is a separate package we do not use). We import it once, for that side effect only.
 *
 * wasm: the binaries ship in `@tensorflow/tfjs-backend-wasm/dist/`; `setWasmPaths` is pointed at that folder as a
 * file path (Node reads it from disk, no network). The SIMD single-threaded binary is used by default: the
 * multi-threaded one starts its pthreads from `blob:` URLs, which Node's worker_threads refuse; an experimental
 * shim (GRAFT_TF_WASM_THREADS=n) makes it run, see `initThreadedWasm`.
 * The wasm backend lacks some kernels that gradients need; `registerWasmGradientKernels` adds them.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs';
import * as tfwasm from '@tensorflow/tfjs-backend-wasm';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { GraftError } from '../../../src/errors.js';
import { registerWasmGradientKernels } from './wasm-kernels.js';

export type TfBackendName = 'wasm' | 'cpu';

const require = createRequire(import.meta.url);

/** The folder holding tfjs-backend-wasm's .wasm binaries (inside node_modules), with a trailing separator. */
export function wasmBinariesDir(): string {
  return join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + '/';
}

let wasmConfigured = false;
let wasmFailed: string | undefined;
let wasmThreads = 1;

/** Threads asked for the wasm backend: env GRAFT_TF_WASM_THREADS (default 1 = the SIMD single-threaded binary). */
function threadsWanted(): number {
  const n = Number(process.env.GRAFT_TF_WASM_THREADS ?? 1);
  return Number.isInteger(n) && n > 1 ? n : 1;
}

function configureWasm(): void {
  if (wasmConfigured) return;
  wasmConfigured = true;
  tfwasm.setWasmPaths(wasmBinariesDir());
  wasmThreads = threadsWanted();
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', wasmThreads > 1);
  if (wasmThreads > 1) tfwasm.setThreadsCount(wasmThreads);
  registerWasmGradientKernels();
}

/**
 * Experimental (GRAFT_TF_WASM_THREADS=n): start the multi-threaded SIMD binary in Node. tfjs-backend-wasm starts its
 * pthread workers from blob: URLs (the worker script and the module factory as text), which Node's worker_threads
 * refuse; while the backend initialises, Blob/URL.createObjectURL are shimmed so that both scripts are written to
 * a temporary folder and the workers load them from there (with the few bundler globals the factory text refers
 * to). XNNPACK sizes its pool from the logical core count / 2, so os.cpus() is widened for that moment too.
 */
async function initThreadedWasm(): Promise<boolean> {
  const dir = mkdtempSync(join(os.tmpdir(), 'graft-tfjs-wasm-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const OrigBlob = globalThis.Blob;
  const origCreate = URL.createObjectURL;
  const origCpus = os.cpus;
  let mainPath = '';
  const MAIN = 'var WasmBackendModuleThreadedSimd';
  class FileBlob extends OrigBlob {
    readonly text0: string;
    constructor(parts: BlobPart[], opts?: BlobPropertyBag) {
      super(parts, opts);
      this.text0 = parts.map(String).join('');
      if (this.text0.startsWith(MAIN)) {
        mainPath = join(dir, 'factory.js');
        const globals = "var require$$0 = require('fs'), require$$1 = require('path'), require$$2 = require('worker_threads'), require$$3 = require('perf_hooks'), require$$4 = require('os'), commonjsGlobal = globalThis;\n";
        writeFileSync(mainPath, globals + this.text0);
      }
    }
  }
  globalThis.Blob = FileBlob as typeof Blob;
  URL.createObjectURL = (b: Blob) => {
    if (b instanceof FileBlob && !b.text0.startsWith(MAIN)) {
      const p = join(dir, 'worker.js');
      writeFileSync(p, `URL.createObjectURL = () => ${JSON.stringify(mainPath)}; URL.revokeObjectURL = () => {};\n${b.text0}`);
      return p;
    }
    return origCreate(b);
  };
  const cpus = origCpus();
  os.cpus = () => Array.from({ length: Math.max(cpus.length, 2 * wasmThreads) }, (_, i) => cpus[i % cpus.length]!);
  try {
    const ok = await tf.setBackend('wasm');
    if (ok) {
      // Let the process exit with the pthread workers idle.
      const pt = (tf.backend() as unknown as { wasm?: { PThread?: { unusedWorkers: { unref?: () => void }[]; runningWorkers: { unref?: () => void }[] } } }).wasm?.PThread;
      for (const w of [...(pt?.unusedWorkers ?? []), ...(pt?.runningWorkers ?? [])]) w.unref?.();
    }
    return ok;
  } finally {
    globalThis.Blob = OrigBlob;
    URL.createObjectURL = origCreate;
    os.cpus = origCpus;
  }
}

/** Threads the wasm backend actually uses (1 unless GRAFT_TF_WASM_THREADS asked for more and it worked). */
export function wasmThreadCount(): number {
  try {
    return tfwasm.getThreadsCount();
  } catch {
    return 1;
  }
}

/** Silence the cpu backend's one-time "install tfjs-node" banner (we chose not to use native code). */
function quietCpu(): void {
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (cpu && 'firstUse' in cpu) cpu.firstUse = false;
}

/** The backend asked for by `name`, else env GRAFT_TF_BACKEND, else 'wasm'. */
export function requestedBackend(name?: string): TfBackendName {
  const n = (name ?? process.env.GRAFT_TF_BACKEND ?? 'wasm').toLowerCase();
  if (n !== 'wasm' && n !== 'cpu') throw new GraftError(`unknown TF.js backend '${n}' (use wasm or cpu)`);
  return n;
}

/**
 * Make `name` (default: env GRAFT_TF_BACKEND, else 'wasm') the active TF.js backend. When the wasm backend cannot
 * start, falls back to cpu and says so on stderr. Returns the backend now active.
 */
export async function setBackend(name?: TfBackendName | string): Promise<TfBackendName> {
  const want = requestedBackend(name);
  quietCpu();
  if (want === 'wasm' && !wasmFailed) {
    configureWasm();
    if (tf.getBackend() === 'wasm') return 'wasm';
    let ok = false;
    // The emscripten module adds process-wide uncaughtException/unhandledRejection listeners that rethrow (so an
    // uncaught error elsewhere gets reported from inside its minified source): taken off again.
    const before = { ex: process.listeners('uncaughtException'), rej: process.listeners('unhandledRejection') };
    try {
      ok = wasmThreads > 1 ? await initThreadedWasm() : await tf.setBackend('wasm');
    } catch (err) {
      wasmFailed = String((err as Error)?.message ?? err);
    } finally {
      for (const l of process.listeners('uncaughtException')) if (!before.ex.includes(l)) process.removeListener('uncaughtException', l);
      for (const l of process.listeners('unhandledRejection')) if (!before.rej.includes(l)) process.removeListener('unhandledRejection', l);
    }
    if (ok) return 'wasm';
    wasmFailed ??= 'initialisation failed';
    process.stderr.write(`graft: TF.js wasm backend unavailable (${wasmFailed}); using cpu\n`);
  }
  if (tf.getBackend() !== 'cpu' && !(await tf.setBackend('cpu'))) throw new GraftError('TF.js cpu backend failed to start');
  quietCpu();
  return 'cpu';
}

/** The active backend, starting the default one (see `setBackend`) if none is active yet. */
export async function ensureBackend(name?: TfBackendName): Promise<TfBackendName> {
  const current = tf.getBackend();
  if (name) return current === name ? name : setBackend(name);
  if (current === 'wasm' || current === 'cpu') return current;
  return setBackend();
}

export { tf };
