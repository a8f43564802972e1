/**
 * Ctrl-C (SIGINT) for every command: one line on stderr, "graft: interrupted", and exit code 130 (the shell's code
 * for SIGINT), instead of Node's default of dying by the signal without a word. Leaving at once harms nothing a
 * killed process would not: files are written atomically (at worst a temp file stays beside its target), and the
 * caches and the model store recover from a dead process. Long training (`interruptible`) takes Ctrl-C over for a
 * while, to save a checkpoint first.
 */
import { quiesceOrtWorkers } from '../engine/ort.js';

/** A command's own Ctrl-C handling, while it runs. */
let current: (() => void) | undefined;
let installed = false;
let leaving = false;

/** At most this long is spent letting ONNX Runtime finish its running batches before leaving regardless. */
const QUIESCE_MS = 10_000;

/**
 * Print the line and leave with 130. On a terminal a progress bar may hold the cursor mid-line: start a fresh one.
 * ONNX Runtime worker threads are stopped safely first (a batch or two at most; stopping one mid-batch would abort
 * the process with a C++ message and exit code 134). Another Ctrl-C meanwhile changes nothing: we are leaving.
 */
export function exitInterrupted(): void {
  if (leaving) return;
  leaving = true;
  process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}graft: interrupted\n`);
  setTimeout(() => process.exit(130), QUIESCE_MS).unref();
  void quiesceOrtWorkers().finally(() => process.exit(130));
}

/** Called once by the CLI entry point: from now on Ctrl-C ends any command this way unless one took it over. */
export function handleSigint(): void {
  if (installed) return;
  installed = true;
  process.on('SIGINT', () => (current ?? exitInterrupted)());
}

/**
 * Route Ctrl-C to `handler` until the returned function is called. Under the entry point's handler this replaces
 * the default (so the two never both run); without it (main() called in-process, e.g. by tests) the handler is a
 * listener of its own.
 */
export function takeSigint(handler: () => void): () => void {
  if (!installed) {
    process.on('SIGINT', handler);
    return () => process.off('SIGINT', handler);
  }
  const previous = current;
  current = handler;
  return () => {
    if (current === handler) current = previous;
  };
}
