/**
 * The explorer's traits, typed once (their Python twins are the traits of widgets/explorer.py),
 * and the vocabulary the kernel sends in `specs` (widgets/specs.py): the view reads sites,
 * metrics, layer labels and options from there instead of restating them.
 */

import type { AnyModel } from "@anywidget/types";

export interface Layout {
  depth: number;
  grid: [number, number];
  prefix: string[];
  n_tokens: number;
  names: string[]; // per token, the engine's name ("cls", "reg0", "patch 3,4")
  image_size: [number, number];
}

export interface SiteSpec {
  name: string;
  label: string;
  layers: number[]; // valid layer numbers; row r of a slice is layers[r]
  layer_labels: string[];
  memories: string; // the site whose sublayer's key-value memories the hover shows here
}

export interface MetricSpec {
  name: string;
  label: string;
  scale: "sequential" | "diverging";
  range: [number, number] | null; // null: symmetric around 0, from the values shown
}

export interface Option {
  name: string;
  label: string;
}

export interface RelevanceOption extends Option {
  signed?: boolean; // its maps have negative values too (a diverging scale)
}

export interface Specs {
  sites: SiteSpec[];
  metrics: MetricSpec[];
  attention: Option[];
  relevance: RelevanceOption[];
  table_rows?: number; // rows of a logits table per message (kernel only; 0: tables too large, never asked)
}

type Bytes = DataView | ArrayBuffer | null;

export interface Traits {
  // what the view needs to draw (kernel -> view)
  specs: Specs;
  class_names: string[];
  token_layout: Layout;
  n_images: number;
  image_png: Bytes;
  prediction: number;
  base_prediction: number;
  topk_indices: Bytes;
  topk_probs: Bytes;
  topk_k: number;
  topk_site: string; // the site the top-k tables are for
  trace_version: number;
  relevance_maps: Bytes;
  relevance_rows: number;
  relevance_blocks: number[]; // the block (layer) of each per-block map; the global map comes after them
  error: string;
  // what is chosen (both ways)
  image_index: number;
  site: string;
  metric: string;
  layer: number;
  cls: number;
  selected: number[];
  highlight: number;
  attention: string;
  perturb_blocks: number[];
  renormalize: boolean;
  removed: number[];
  relevance_method: string;
  relevance_all_blocks: boolean;
}

/** The kernel-backed model anywidget hands to render(). */
export type ExplorerModel = AnyModel<Traits>;

/** What the view itself needs of a model: state, change events and sync (the exported page has no `send`). */
export type StateModel = Pick<ExplorerModel, "get" | "set" | "on" | "off" | "save_changes">;

export function siteSpec(specs: Specs, site: string): SiteSpec {
  const spec = specs.sites.find((s) => s.name === site);
  if (!spec) throw new Error(`unknown site '${site}'`);
  return spec;
}

export function metricSpec(specs: Specs, metric: string): MetricSpec {
  const spec = specs.metrics.find((m) => m.name === metric);
  if (!spec) throw new Error(`unknown metric '${metric}'`);
  return spec;
}

/** Row of `layer` in a slice of `site` (clamped to the site's layers). */
export function rowOf(spec: SiteSpec, layer: number): number {
  const row = spec.layers.indexOf(layer);
  if (row >= 0) return row;
  return layer < spec.layers[0] ? 0 : spec.layers.length - 1;
}

/** Bytes from a synced Bytes trait or a message buffer, as an aligned copy. */
export function toArrayBuffer(
  data: DataView | ArrayBuffer | ArrayBufferView | null | undefined,
): ArrayBuffer {
  if (!data) return new ArrayBuffer(0);
  if (data instanceof ArrayBuffer) return data;
  const view = data as ArrayBufferView;
  return (view.buffer as ArrayBuffer).slice(view.byteOffset, view.byteOffset + view.byteLength);
}
