/** Loads every operator module into the handler table. */
import './conv.js';
import './elementwise.js';
import './shape.js';
export { OP_HANDLERS, type OpHandler } from '../registry.js';
