/** Colours of everything the explorer draws, from the one palette file (also read by the snapshot and plots). */

import palette from "../vitlens_widgets/static/palette.json";
import type { MetricSpec } from "./model";

export type Rgb = [number, number, number];

const HEAT = palette.heat as Record<"sequential" | "diverging", Rgb[]>;
export const LINES = palette.lines;
/** Dash patterns (on, off, in pixels) of the mean line, the unperturbed lines and the layer marker. */
export const DASHES = palette.dashes;
/** How opaque the heat map is over the image crop. */
export const HEAT_OPACITY: number = palette.heat_opacity;

function interpolate(stops: Rgb[], t: number): Rgb {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i];
  const b = stops[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

/** A value → colour function, with the range it maps. */
export interface ColourScale {
  colour(value: number): Rgb;
  min: number;
  max: number;
  label: string;
  diverging: boolean;
  gradient: string; // CSS gradient of the scale, min to max (the legend)
}

function largestMagnitude(values: ArrayLike<number>): number {
  let bound = 0;
  for (let i = 0; i < values.length; i++)
    if (Number.isFinite(values[i])) bound = Math.max(bound, Math.abs(values[i]));
  return bound || 1;
}

/** The scale of a metric, from its descriptor: a fixed range, or symmetric around 0 from `values`. */
export function scaleFor(spec: MetricSpec, values: ArrayLike<number>): ColourScale {
  const [min, max] = spec.range ?? [-largestMagnitude(values), largestMagnitude(values)];
  const stops = HEAT[spec.scale];
  const span = max > min ? max - min : 1;
  return {
    colour: (v) => interpolate(stops, (v - min) / span),
    min,
    max,
    label: spec.label,
    diverging: spec.scale === "diverging",
    gradient: `linear-gradient(90deg, ${stops.map((stop) => css(stop)).join(", ")})`,
  };
}

/** Relevance maps: signed maps get a symmetric diverging scale, others a min-max sequential one. */
export function relevanceScale(values: Float32Array, signed: boolean): ColourScale {
  if (signed)
    return scaleFor(
      { name: "relevance", label: "relevance", scale: "diverging", range: null },
      values,
    );
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const range: [number, number] = max > min ? [min, max] : [min, min + 1];
  return scaleFor({ name: "relevance", label: "relevance", scale: "sequential", range }, values);
}

export function css([r, g, b]: Rgb, alpha = 1): string {
  return `rgba(${Math.round(r)}, ${Math.round(g)}, ${Math.round(b)}, ${alpha})`;
}

/** Black or white, whichever reads better on `background` (by its perceived brightness). */
export function textOn([r, g, b]: Rgb): string {
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#000" : "#fff";
}

/** Colour of the i-th selected token: its grid outline and its trajectory. */
export function tokenColour(position: number): string {
  return LINES.tokens[position % LINES.tokens.length];
}
