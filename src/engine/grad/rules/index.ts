/** Loads every rule module into the registry. */
import './elementwise.js';
import './conv.js';
import './linear.js';
import './shape.js';
import './softmax.js';
import './quant.js';
export { RULES, type ConvMethods, type Rule, type RuleCtx } from './registry.js';
