/** Colour mapping for the token heat map: the only maths the front end does. */

import colormaps from "../vitlens_widgets/static/colormaps.json";

export type Rgb = [number, number, number];

// Viridis sampled at nine stops (perceptually uniform, colour-blind safe) and a blue-red diverging
// map; one file shared with the kernel's static snapshot (vitlens_widgets/widgets/snapshot.py).
const VIRIDIS = colormaps.viridis as Rgb[];
const DIVERGING = colormaps.diverging as Rgb[];

function interpolate(stops: Rgb[], t: number): Rgb {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i];
  const b = stops[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

/** A value → colour function for one metric, with the range it maps. */
export interface ColourScale {
  colour(value: number): Rgb;
  min: number;
  max: number;
  label: string;
}

/** Identifiability and probability live in [0, 1]; logits get a symmetric range around 0. */
export function scaleFor(metric: string, values: Float32Array): ColourScale {
  if (metric === "logit") {
    let bound = 0;
    for (const v of values) if (Number.isFinite(v)) bound = Math.max(bound, Math.abs(v));
    bound = bound || 1;
    return {
      colour: (v) => interpolate(DIVERGING, (v + bound) / (2 * bound)),
      min: -bound,
      max: bound,
      label: "logit",
    };
  }
  return { colour: (v) => interpolate(VIRIDIS, v), min: 0, max: 1, label: metric };
}

/** Relevance maps: signed maps get a symmetric diverging scale, others a min-max sequential one. */
export function relevanceScale(values: Float32Array, signed: boolean): ColourScale {
  if (signed) return { ...scaleFor("logit", values), label: "relevance" };
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const span = max > min ? max - min : 1;
  return { colour: (v) => interpolate(VIRIDIS, (v - min) / span), min, max, label: "relevance" };
}

export function css([r, g, b]: Rgb, alpha = 1): string {
  return `rgba(${Math.round(r)}, ${Math.round(g)}, ${Math.round(b)}, ${alpha})`;
}

/** Colours of selected tokens, in selection order (same as the trajectories). */
export const TOKEN_COLOURS = [
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#bcbd22",
  "#17becf",
];
export const CLS_COLOUR = "#1f77b4";
export const MEAN_COLOUR = "#7f7f7f";
