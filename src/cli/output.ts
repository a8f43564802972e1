/** Output helpers shared by the CLI commands: results on stdout (or JSON), logs on stderr. */
import type { Command } from 'commander';

export interface Common { json?: boolean; quiet?: boolean }

export function out(s: string): void {
  process.stdout.write(s + '\n');
}

export function printJson(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

const ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' };

/**
 * A path (or any name from the file system) for human-readable output: control characters (C0, DEL, C1) and the
 * Unicode line/paragraph separators become JSON-style escapes (\n, \t, \u001b, ...), so a file name with a newline
 * cannot split a listing into a fake extra line, nor an escape sequence drive the terminal. Other characters,
 * accented letters and CJK included, are left as they are. Not for --json: JSON.stringify escapes on its own.
 */
export function displayPath(p: string): string {
  return p.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function pct(x: number): string {
  return (100 * x).toFixed(2) + '%';
}


/** The options every command has: --json and --quiet. */
export function withCommon(c: Command): Command {
  return c.option('--json', 'print the result as JSON on stdout (logs go to stderr)').option('-q, --quiet', 'no progress or info on stderr');
}
