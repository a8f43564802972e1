/**
 * TF op handlers: one small function per TF op, translating a node into ONNX nodes through the shared context.
 * The ops/*.ts modules register themselves; an op with no handler is refused before anything is built.
 */
import type { GraphNode } from './model-json.js';
import type { GraphCtx, T } from './context.js';

/**
 * Translate node `n`, whose ONNX output is to be named `out`; returns the translated tensor, or undefined for a node
 * that computes nothing (NoOp).
 */
export type OpHandler = (n: GraphNode, c: GraphCtx, out: string) => T | undefined;

export const OP_HANDLERS = new Map<string, OpHandler>();

export function register(handlers: Record<string, OpHandler>): void {
  for (const [op, h] of Object.entries(handlers)) OP_HANDLERS.set(op, h);
}
