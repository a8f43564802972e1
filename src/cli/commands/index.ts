import type { Command } from 'commander';
import { registerConvert } from './convert.js';
import { registerExport } from './export.js';
import { registerReport } from './report.js';
import { registerAttack, registerDream } from './vision.js';
import { registerModels } from './models.js';
import { register as registerFeaturemaps } from './featuremaps.js';
import { register as registerLrFind } from './lr-find.js';
import { registerWorker } from './worker.js';
import { registerExplain } from './explain.js';
import { register as registerQuantize } from './quantize.js';
import { registerServe } from './serve.js';

/**
 * Commands that live in their own module: each exports `register(program)` adding one subcommand (use `withCommon`
 * from ../output.js for --json/--quiet and `addModelOptions` from ../options.js for model flags). Add new ones here.
 */
export const COMMANDS: ((program: Command) => void)[] = [
  registerConvert,
  registerExport,
  registerReport,
  registerDream,
  registerAttack,
  registerModels,
  registerFeaturemaps,
  registerLrFind,
  registerWorker,
  registerExplain,
  registerQuantize,
  registerServe,
];
