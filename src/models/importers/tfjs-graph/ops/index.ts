/** Loads every op module into the handler table. */
import './io.js';
import './conv.js';
import './elementwise.js';
import './shape.js';
import './linear.js';
export { OP_HANDLERS, type OpHandler } from '../registry.js';
