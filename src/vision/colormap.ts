/**
 * A perceptual colour map for scalar images (feature maps, heat maps): viridis, matplotlib's default. Dark blue for
 * low values through green to yellow for high ones; lightness rises monotonically, so it reads correctly in greyscale
 * and for colour-blind viewers.
 *
 * The table is generated from Matt Zucker's degree-6 polynomial fit of viridis (public domain; shadertoy WlfXRN),
 * which stays within 0.015 of matplotlib's published table on every channel.
 */

const VIRIDIS_COEFFS: readonly (readonly [number, number, number])[] = [
  [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
  [0.1050930431085774, 1.404613529898575, 1.384590162594685],
  [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
  [-4.634230498983486, -5.799100973351585, -19.33244095627987],
  [6.228269936347081, 14.17993336680509, 56.69055260068105],
  [4.776384997670288, -13.74514537774601, -65.35303263337234],
  [-5.435455855934631, 4.645852612178535, 26.3124352495832],
];

/** Viridis at t in [0, 1] (clamped), as sRGB floats in [0, 1]. */
export function viridis(t: number): [number, number, number] {
  const x = Number.isFinite(t) ? Math.min(1, Math.max(0, t)) : 0;
  const out: [number, number, number] = [0, 0, 0];
  for (let ch = 0; ch < 3; ch++) {
    let v = 0;
    for (let k = VIRIDIS_COEFFS.length - 1; k >= 0; k--) v = v * x + VIRIDIS_COEFFS[k]![ch]!;
    out[ch] = Math.min(1, Math.max(0, v));
  }
  return out;
}

let table: Uint8Array | undefined;

/** The 256-entry viridis lookup table: entry i (RGB bytes at 3i..3i+2) is the colour of i/255. */
export function viridisTable(): Uint8Array {
  if (!table) {
    table = new Uint8Array(256 * 3);
    for (let i = 0; i < 256; i++) {
      const [r, g, b] = viridis(i / 255);
      table[3 * i] = Math.round(255 * r);
      table[3 * i + 1] = Math.round(255 * g);
      table[3 * i + 2] = Math.round(255 * b);
    }
  }
  return table;
}

/** Table index (0..255) of `v` scaled so that `lo` is 0 and `hi` is 255; a flat map (hi <= lo) gives 0. */
export function colourIndex(v: number, lo: number, hi: number): number {
  if (!(hi > lo) || !Number.isFinite(v)) return 0;
  const i = Math.round((255 * (v - lo)) / (hi - lo));
  return i < 0 ? 0 : i > 255 ? 255 : i;
}
