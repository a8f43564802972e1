/** Loads every layer module into the handler table. */
import './conv.js';
import './shape.js';
import './elementwise.js';
export { LAYER_HANDLERS, type LayerHandler } from '../registry.js';
