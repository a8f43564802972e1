import { UsageError } from '../errors.js';
import { deriveSeed, mulberry32, shuffleInPlace } from '../util/random.js';

/** Stream number for {@link deriveSeed}, so the split does not share randomness with other consumers of a seed. */
const SPLIT_STREAM = 0x5b117;

/**
 * Split items into train and validation sets, class by class: each class sends `round(n * valFraction)` of its `n`
 * items to `val`, chosen by a seeded shuffle, but a class with at least 2 items always has at least one on each side
 * (with `valFraction > 0`); a class with a single item goes to `train`. Each class draws from its own stream derived
 * from (seed, label), so one class's membership does not depend on the others'. Both outputs keep the input order.
 * The same items, fraction and seed give the same split.
 */
export function stratifiedSplit<T extends { label: number }>(
  items: readonly T[],
  valFraction: number,
  seed: number,
): { train: T[]; val: T[] } {
  if (!Number.isFinite(valFraction) || valFraction < 0 || valFraction >= 1) {
    throw new UsageError(`validation fraction must be at least 0 and less than 1, got ${valFraction}`);
  }
  if (!Number.isInteger(seed)) throw new UsageError(`seed must be an integer, got ${seed}`);
  const byLabel = new Map<number, number[]>();
  items.forEach((item, i) => {
    let idx = byLabel.get(item.label);
    if (!idx) byLabel.set(item.label, (idx = []));
    idx.push(i);
  });
  const isVal = new Uint8Array(items.length);
  if (valFraction > 0) {
    const base = deriveSeed(seed, SPLIT_STREAM);
    for (const [label, idx] of byLabel) {
      const n = idx.length;
      if (n < 2) continue;
      const nVal = Math.min(n - 1, Math.max(1, Math.round(n * valFraction)));
      shuffleInPlace(idx, mulberry32(deriveSeed(base, label >>> 0)));
      for (let k = 0; k < nVal; k++) isVal[idx[k]] = 1;
    }
  }
  const train: T[] = [];
  const val: T[] = [];
  items.forEach((item, i) => (isVal[i] ? val : train).push(item));
  return { train, val };
}
