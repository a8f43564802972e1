import { GraftError } from '../../errors.js';

/** Bad input to an importer: a GraftError whose message starts with the file it came from. */
export function fail(file: string, msg: string): never {
  throw new GraftError(`${file}: ${msg}`);
}
