/** Output helpers shared by the CLI commands: results on stdout (or JSON), logs on stderr. */
import type { Command } from 'commander';

export interface Common { json?: boolean; quiet?: boolean }

export function out(s: string): void {
  process.stdout.write(s + '\n');
}

export function printJson(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

export function pct(x: number): string {
  return (100 * x).toFixed(2) + '%';
}


/** The options every command has: --json and --quiet. */
export function withCommon(c: Command): Command {
  return c.option('--json', 'print the result as JSON on stdout (logs go to stderr)').option('-q, --quiet', 'no progress or info on stderr');
}
