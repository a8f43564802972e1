/**
 * Errors a user can act on. The CLI prints `message` on one line (no stack) and exits with `exitCode`.
 * Anything that is not a GraftError is a bug and is printed with its stack.
 */
export class GraftError extends Error {
  readonly exitCode: 1 | 2 | 130;
  constructor(message: string, exitCode: 1 | 2 | 130 = 1) {
    super(message);
    this.name = 'GraftError';
    this.exitCode = exitCode;
  }
}

/** Bad command-line usage (exit code 2). */
export class UsageError extends GraftError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'UsageError';
  }
}

/** An image that cannot be turned into pixels; `file` names it, `reason` says why in a few words. */
export class ImageError extends GraftError {
  readonly file: string;
  readonly reason: string;
  constructor(file: string, reason: string) {
    super(`${file}: ${reason}`);
    this.name = 'ImageError';
    this.file = file;
    this.reason = reason;
  }
}

/** The user stopped the work (Ctrl-C); what could be saved was saved. Exit code 130, the shell's convention for SIGINT. */
export class InterruptedError extends GraftError {
  constructor(message: string) {
    super(message, 130);
    this.name = 'InterruptedError';
  }
}
