import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The shared data folder (env GRAFT_SHARED, default ../shared beside the repo), or undefined when absent. */
export function sharedDir(): string | undefined {
  const dir = resolve(process.env.GRAFT_SHARED ?? join(import.meta.dirname, '..', '..', '..', 'shared'));
  return existsSync(join(dir, 'models', 'mobilenet_v1_0.75_224.onnx')) ? dir : undefined;
}

export const SHARED = sharedDir();
/** For `test(name, { skip: SKIP_SHARED }, ...)`: false when the data is there, else the reason shown. */
export const SKIP_SHARED: string | false = SHARED ? false : 'shared data not found (set GRAFT_SHARED to the shared/ folder)';
export const MOBILENET = SHARED ? join(SHARED, 'models', 'mobilenet_v1_0.75_224.onnx') : '';
