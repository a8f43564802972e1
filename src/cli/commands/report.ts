import type { Command } from 'commander';
import { renderReport } from '../../tasks/report.js';
import { displayPath, out, printJson, withCommon, type Common } from '../output.js';

export function registerReport(program: Command): void {
  withCommon(
    program
      .command('report')
      .description('render a run as one self-contained HTML page (curves, confusion matrix, top losses, settings)')
      .summary('render a run as one self-contained HTML page')
      .argument('<run>', 'run folder written by graft train')
      .option('--out <file.html>', 'where to write it (default: <run>/report.html)'),
  ).action(async (run: string, o: Common & { out?: string }) => {
    const res = await renderReport(run, o.out);
    if (o.json) return printJson(res);
    out(`report written to ${displayPath(res.out)} (${(res.bytes / 1024).toFixed(0)} KB, self-contained)`);
  });
}
