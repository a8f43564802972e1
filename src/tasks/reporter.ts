/** How long-running library calls tell the caller what they are doing; the CLI draws bars, a script may log. */
export interface Reporter {
  /** A unit of work with a known size starts (e.g. "train features", 2000 images). */
  start?(task: string, total: number, unit: string): void;
  /** `done` of `total` finished; `note` says something short like "612 from cache". */
  update?(task: string, done: number, note?: string): void;
  end?(task: string): void;
  info?(message: string): void;
  warn?(message: string): void;
}

export const silent: Reporter = {};
