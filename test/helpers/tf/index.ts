/** graft's differentiable ONNX executor on TF.js (see executor.ts). */
export { TfExecutor, type TfExecutorOptions, type StepTiming } from './executor.js';
export { setBackend, ensureBackend, requestedBackend, wasmBinariesDir, wasmThreadCount, tf, type TfBackendName } from './backend.js';
export { registerWasmGradientKernels, DELEGATED_WASM_KERNELS, COMPOSED_WASM_KERNELS } from './wasm-kernels.js';
