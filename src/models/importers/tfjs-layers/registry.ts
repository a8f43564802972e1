/**
 * Keras layer handlers: one small function per layer class, translating a layer into ONNX nodes through the shared
 * context. The layers/*.ts modules register themselves; a layer class with no handler is refused before anything is
 * built.
 */
import type { LayersCtx, T } from './context.js';

/** A layer to translate: its name, its config, its input tensors (`x` the first). */
export interface LayerCall {
  cls: string;
  name: string;
  c: Record<string, unknown>;
  inputs: T[];
  x: T;
}

export type LayerHandler = (l: LayerCall, ctx: LayersCtx) => T;

export const LAYER_HANDLERS = new Map<string, LayerHandler>();

export function register(handlers: Record<string, LayerHandler>): void {
  for (const [cls, h] of Object.entries(handlers)) LAYER_HANDLERS.set(cls, h);
}
