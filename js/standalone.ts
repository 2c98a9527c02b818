/**
 * The self-contained page written by `export_html`: the same explorer view, served by a
 * model that answers from precomputed data inlined in the page instead of a kernel.
 */

import { ExplorerUI } from "./explorer";
import { halfToFloat } from "./standalone-data";
import type { ViewModel } from "./store";

interface ImageData {
  layout: unknown;
  png: string;
  prediction: number;
  classes: number[];
  slices: Record<string, string>;
  topk: Record<string, { indices: string; probs: string; k: number }>;
}

interface PageData {
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

type Listener = (...args: any[]) => void;

/** A ViewModel over the page's data: same events and messages as the kernel-backed one. */
export class StaticModel implements ViewModel {
  private state: Record<string, unknown>;
  private listeners = new Map<string, Set<Listener>>();

  constructor(private data: PageData) {
    this.state = {
      class_names: data.class_names,
      n_images: data.images.length,
      image_index: 0,
      site: "resid",
      metric: "identifiability",
      selected: [],
      highlight: -1,
      error: "",
      standalone: true,
    };
    this.loadImage(0);
    this.state.layer = (this.state.token_layout as { depth: number }).depth;
  }

  get(name: string): any {
    return this.state[name];
  }

  set(name: string, value: unknown): void {
    const old = this.state[name];
    this.state[name] = value;
    if (name === "image_index" && value !== old) this.loadImage(value as number);
    if (name === "site" && value !== old) this.loadTopk();
    if (old !== value) this.emit(`change:${name}`);
  }

  save_changes(): void {}

  on(event: string, callback: Listener): void {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event)!.add(callback);
  }

  off(event?: string | null, callback?: Listener | null): void {
    if (event && callback) this.listeners.get(event)?.delete(callback);
  }

  send(content: any): void {
    if (content?.type !== "slices") return;
    const image = this.data.images[this.state.image_index as number];
    const key = `${content.site}|${content.metric}`;
    const missing = content.classes.filter((c: number) => !image.classes.includes(c));
    queueMicrotask(() => {
      if (missing.length || !image.slices[key]) {
        const names = missing.map((c: number) => this.data.class_names[c]).join(", ");
        this.emit("msg:custom", {
          type: "error",
          id: content.id,
          message: `This page was exported with the top ${image.classes.length} classes only; '${names}' is not included.`,
        });
        return;
      }
      const all = halfToFloat(new Uint16Array(bytes(image.slices[key])));
      const layout = image.layout as { n_tokens: number };
      const rows = all.length / image.classes.length / layout.n_tokens;
      const size = rows * layout.n_tokens;
      const picked = new Float32Array(size * content.classes.length);
      content.classes.forEach((c: number, i: number) => {
        const j = image.classes.indexOf(c);
        picked.set(all.subarray(j * size, (j + 1) * size), i * size);
      });
      const reply = {
        ...content,
        image_index: this.state.image_index,
        rows,
        tokens: layout.n_tokens,
      };
      this.emit("msg:custom", reply, [picked.buffer]);
    });
  }

  private emit(event: string, ...args: unknown[]): void {
    this.listeners.get(event)?.forEach((fn) => fn(...args));
  }

  private loadImage(index: number): void {
    const image = this.data.images[index];
    this.state.token_layout = image.layout;
    this.state.image_png = bytes(image.png);
    this.state.prediction = image.prediction;
    this.state.cls = image.prediction;
    this.loadTopk();
    for (const name of ["token_layout", "image_png", "cls"]) this.emit(`change:${name}`);
  }

  private loadTopk(): void {
    const image = this.data.images[this.state.image_index as number];
    const topk = image.topk[this.state.site as string];
    this.state.topk_indices = bytes(topk.indices);
    this.state.topk_probs = bytes(topk.probs);
    this.state.topk_k = topk.k;
    this.emit("change:topk_indices");
  }
}

function mount(): void {
  const host = document.getElementById("vitlens-explorer");
  const source = document.getElementById("vitlens-data");
  if (!host || !source?.textContent) return;
  const model = new StaticModel(JSON.parse(source.textContent) as PageData);
  const ui = new ExplorerUI(model);
  host.append(ui.root);
  (host as any).__vlExplorer = ui;
}

mount();
