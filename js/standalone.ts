/**
 * The self-contained page written by `export_html`: the same ExplorerApp, with a local model
 * standing in for the widget's traits and a static source answering slice requests from data
 * inlined in the page (computed by the Python engine). No kernel: no what-if, relevance or memories.
 */

import { ExplorerApp } from "./explorer";
import type { Layout, Specs, StateModel, Traits } from "./model";
import type { Answer, AnyAsk } from "./protocol";
import { type Buffers, type Capability, type DataSource, SourceError } from "./source";

interface ImageData {
  layout: Layout;
  png: string;
  prediction: number;
  classes: number[];
  slices: Record<string, string>; // "site|metric" -> float16 [classes, rows, T], base64
  topk: Record<string, { indices: string; probs: string; k: number }>;
}

interface PageData {
  specs: Specs;
  initial: { site: string; metric: string; layer: number }; // the explorer widget's opening state
  class_names: string[];
  images: ImageData[];
  complete: boolean;
}

function bytes(b64: string): ArrayBuffer {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out.buffer;
}

/** IEEE half floats (as uint16) to float32. */
export function halfToFloat(halves: Uint16Array): Float32Array {
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i++) {
    const h = halves[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) out[i] = sign * 2 ** -14 * (fraction / 1024);
    else if (exponent === 31) out[i] = fraction ? NaN : sign * Infinity;
    else out[i] = sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
  }
  return out;
}

type Listener = (...args: any[]) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The traits' stand-in: local state with change events; choosing an image or site loads its data. */
export class StaticModel implements StateModel {
  private state: Partial<Traits>;
  private listeners = new Map<string, Set<Listener>>();

  constructor(private data: PageData) {
    this.state = {
      specs: data.specs,
      class_names: data.class_names,
      n_images: data.images.length,
      image_index: 0,
      ...data.initial,
      selected: [],
      highlight: -1,
      error: "",
      trace_version: 0,
      attention: "",
      removed: [],
    };
    this.loadImage(0);
  }

  get<K extends keyof Traits>(name: K): Traits[K] {
    return this.state[name] as Traits[K];
  }

  set<K extends keyof Traits>(name: K, value: Traits[K]): void {
    const old = this.state[name];
    this.state[name] = value;
    if (old === value) return;
    if (name === "image_index") this.loadImage(value as number);
    if (name === "site") this.loadTopk();
    this.emit(`change:${name}`);
  }

  save_changes(): void {}

  on(event: string, callback: Listener): void {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event)!.add(callback);
  }

  off(event?: string | null, callback?: Listener | null): void {
    if (event && callback) this.listeners.get(event)?.delete(callback);
  }

  private emit(event: string): void {
    this.listeners.get(event)?.forEach((fn) => fn());
  }

  private loadImage(index: number): void {
    const image = this.data.images[index];
    Object.assign(this.state, {
      token_layout: image.layout,
      image_png: bytes(image.png),
      prediction: image.prediction,
      base_prediction: image.prediction,
      cls: image.prediction,
    });
    this.loadTopk();
    for (const name of ["token_layout", "image_png", "cls"]) this.emit(`change:${name}`);
  }

  private loadTopk(): void {
    const image = this.data.images[this.state.image_index!];
    const topk = image.topk[this.state.site!];
    Object.assign(this.state, {
      topk_indices: bytes(topk.indices),
      topk_probs: bytes(topk.probs),
      topk_k: topk.k,
      topk_site: this.state.site,
    });
    this.emit("change:topk_probs");
  }
}

/** Slices from the page's data; a class left out of the export is an error. */
export class StaticSource implements DataSource {
  readonly serves: ReadonlySet<Capability> = new Set<Capability>(["slices"]);

  constructor(private data: PageData) {}

  ask<R extends AnyAsk>(request: R): Promise<[Answer<R["kind"]>, Buffers]> {
    if (request.kind !== "slices")
      return Promise.reject(new SourceError(`this page cannot answer '${request.kind}' requests`));
    const { image: index, site, metric, classes } = request;
    const image = this.data.images[index];
    if (!image) return Promise.reject(new SourceError(`this page has no image ${index}`));
    const missing = classes.filter((c) => !image.classes.includes(c));
    const packed = image.slices[`${site}|${metric}`];
    if (missing.length || !packed) {
      const names = missing.map((c) => this.data.class_names[c]).join(", ");
      const message = `This page was exported with the top ${image.classes.length} classes only; '${names}' is not included.`;
      return Promise.reject(new SourceError(message));
    }
    const all = halfToFloat(new Uint16Array(bytes(packed)));
    const size = all.length / image.classes.length;
    const picked = new Float32Array(size * classes.length);
    classes.forEach((c, i) => {
      const j = image.classes.indexOf(c);
      picked.set(all.subarray(j * size, (j + 1) * size), i * size);
    });
    const tokens = image.layout.n_tokens;
    const reply = {
      kind: "slices" as const,
      id: 0,
      image: index,
      version: 0,
      site,
      metric,
      classes,
      rows: size / tokens,
      tokens,
      base: false,
    };
    return Promise.resolve([reply as Answer<R["kind"]>, [picked.buffer]]);
  }

  dispose(): void {}
}

function mount(): void {
  const host = document.getElementById("vitlens-explorer");
  const source = document.getElementById("vitlens-data");
  if (!host || !source?.textContent) return;
  const data = JSON.parse(source.textContent) as PageData;
  const model = new StaticModel(data);
  const app = new ExplorerApp(model, new StaticSource(data));
  host.append(app.root);
  (host as HTMLElement & { __vlExplorer?: ExplorerApp }).__vlExplorer = app;
}

if (typeof document !== "undefined") mount(); // not when unit tests import this module
