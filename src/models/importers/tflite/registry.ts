/**
 * TFLite operator handlers: one small function per builtin operator, translating it into ONNX nodes through the
 * shared context. The ops/*.ts modules register themselves; an operator with no handler is refused before anything
 * is built.
 */
import type { OpInfo, TensorInfo } from './parse.js';
import type { TfliteCtx, V } from './context.js';

/** The operator's (first) output tensor: its TFLite info and shape, and the ONNX name its value should take. */
export interface OpOutput { t: TensorInfo; shape: number[]; name: string }

export interface OpResult {
  y: V;
  /** The fused activation (ActivationFunctionType), applied with the output's quantisation by the caller. */
  fused?: number;
  /** The output is the feature vector (a global pooling). */
  features?: boolean;
  /** False for data movement, which keeps the grid it was given (and the final softmax, left exact). */
  requantise?: boolean;
}

export type OpHandler = (op: OpInfo, c: TfliteCtx, out: OpOutput) => OpResult;

/** Handlers by builtin operator name (BuiltinOperator's key). */
export const OP_HANDLERS = new Map<string, OpHandler>();

export function register(handlers: Record<string, OpHandler>): void {
  for (const [name, h] of Object.entries(handlers)) OP_HANDLERS.set(name, h);
}
