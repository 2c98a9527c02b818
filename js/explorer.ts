/**
 * The explorer view (anywidget ESM entry): token grid, layer slider with play, site and metric
 * switches, class picker with top-class chips, and the hovered token's top-5 classes.
 *
 * All numbers come from the kernel as binary buffers; this file only picks rows out of them
 * and maps values to colours.
 */

import {
  CLS_COLOUR,
  type ColourScale,
  MEAN_COLOUR,
  relevanceScale,
  scaleFor,
  TOKEN_COLOURS,
} from "./colors";
import { TokenGrid } from "./grid";
import { ClassPicker } from "./picker";
import { Heartbeat, type Layout, SliceStore, toArrayBuffer, type ViewModel } from "./store";
import { type Series, TrajectoryChart } from "./trajectories";

const SITES: [string, string][] = [
  ["resid", "residual stream"],
  ["attn", "attention"],
  ["mlp", "MLP"],
];
const METRICS: [string, string][] = [
  ["identifiability", "identifiability"],
  ["probability", "probability"],
  ["logit", "logit"],
];
const ATTENTION: [string, string][] = [
  ["", "full"],
  ["self_only", "image tokens see only themselves"],
  ["no_cls", "image tokens ignore [CLS]"],
];
const RELEVANCE: [string, string][] = [
  ["", "off"],
  ["class_space", "class space"],
  ["rollout", "rollout"],
  ["grad_rollout", "grad rollout"],
  ["random", "random"],
];
const PLAY_MS = 700;
const LAYER_SETTLE_MS = 250; // the layer trait sync waits for scrubbing to pause this long (see syncLayerSoon)
const LAYER_SYNC_MAX_MS = 1000; // but at most this long after the first change it has not sent
const MEMORIES_SETTLE_MS = 120; // the memories request waits for the layer to settle this long
const PAINT_SYNC_MS = 400; // longest a trait sync waits for the kernel's slice (see syncAfterPaint)
const SETTLE_MS = 60; // how long after that paint the trait sync waits for a further change

let instances = 0;

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function radioGroup(label: string, options: [string, string][], onChange: (v: string) => void) {
  const group = el("div", "vl-radios");
  group.setAttribute("role", "radiogroup");
  group.setAttribute("aria-label", label);
  const name = `vl-${label.toLowerCase()}-${instances}`;
  const inputs = options.map(([value, text]) => {
    const wrap = el("label", "vl-radio");
    const input = el("input");
    input.type = "radio";
    input.name = name;
    input.value = value;
    input.addEventListener("change", () => input.checked && onChange(value));
    wrap.append(input, document.createTextNode(text));
    group.append(wrap);
    return input;
  });
  const caption = el("span", "vl-caption", label);
  const box = el("div", "vl-field");
  box.append(caption, group);
  return { box, set: (v: string) => inputs.forEach((i) => (i.checked = i.value === v)) };
}

export class ExplorerUI {
  readonly root = el("div", "vl-explorer");
  private status = el("div", "vl-status");
  private grid: TokenGrid;
  private picker: ClassPicker;
  private slider = el("input", "vl-slider");
  private layerLabel = el("output", "vl-layer-label");
  private play = el("button", "vl-play");
  private chips = el("div", "vl-chips");
  private hoverPanel = el("div", "vl-hover");
  private legend = el("div", "vl-legend");
  private gallery = el("div", "vl-gallery");
  private chart: TrajectoryChart | null = null;
  private perturb = el("details", "vl-perturb");
  private attention: ReturnType<typeof radioGroup>;
  private renormalize = el("input");
  private blockBoxes: HTMLInputElement[] = [];
  private blockField = el("div", "vl-blocks");
  private removeMode = el("button", "vl-remove-mode");
  private whatIf = el("div", "vl-whatif");
  private memoryPanel = el("div", "vl-memories");
  private memoryRequest = 0;
  private relevance: ReturnType<typeof radioGroup>;
  private allBlocks = el("input");
  readonly store: SliceStore;
  private heartbeat: Heartbeat | null = null;
  private site: ReturnType<typeof radioGroup>;
  private metric: ReturnType<typeof radioGroup>;
  private hovered: number | null = null;
  private timer: number | undefined;
  private layerSync: number | undefined; // pending trait sync of the layer (see syncLayerSoon)
  private layerSyncBy = 0; // performance.now() by which that pending sync goes out at the latest
  private memoriesSoon: number | undefined; // pending memories request (see requestMemoriesSoon)
  private paintSync: number | undefined; // pending trait sync waiting for the kernel's answer (see syncAfterPaint)
  private afterPaint: (() => void) | null = null;
  private topIdx = new Int16Array(0);
  private topProb = new Float32Array(0);
  private error = "";
  private disconnected = false;
  private cleanups: (() => void)[] = [];
  /** The slice last painted and when (performance.now()), for tests and benchmarks. */
  lastPaint = { key: "", at: 0 };
  /** Called after every heat-map paint with its key (for tests and benchmarks). */
  readonly paintListeners = new Set<(key: string) => void>();

  constructor(private model: ViewModel) {
    instances++;
    this.store = new SliceStore(
      model,
      () => {
        this.error = "";
        this.render();
      },
      (message) => this.showError(message),
    );
    this.grid = new TokenGrid({
      hover: (token) => {
        this.hovered = token;
        this.renderHover();
        this.requestMemories();
      },
      toggle: (token) => this.toggle(token),
    });
    this.picker = new ClassPicker((cls) => this.setState("cls", cls));
    this.site = radioGroup("Site", SITES, (v) => this.setState("site", v));
    this.metric = radioGroup("Metric", METRICS, (v) => this.setState("metric", v));
    this.attention = radioGroup("Attention", ATTENTION, (v) => this.setState("attention", v));
    this.relevance = radioGroup("Relevance", RELEVANCE, (v) =>
      this.setState("relevance_method", v),
    );
    this.build();
    this.listen();
    this.refreshAll();
  }

  private build(): void {
    this.root.setAttribute("data-lm-suppress-shortcuts", "true"); // keys in here are ours, not JupyterLab's
    this.root.addEventListener("keydown", (e) => e.stopPropagation());
    this.status.setAttribute("role", "status");
    this.status.setAttribute("aria-live", "polite");
    this.slider.type = "range";
    this.slider.min = "0";
    this.slider.step = "1";
    this.slider.setAttribute("aria-label", "Layer");
    this.slider.addEventListener("input", () => this.setState("layer", Number(this.slider.value)));
    this.play.type = "button";
    this.play.setAttribute("aria-label", "Play");
    this.play.textContent = "▶";
    this.play.addEventListener("click", () => this.togglePlay());
    this.chips.setAttribute("aria-label", "Top classes");

    const layerField = el("div", "vl-field vl-layer");
    layerField.append(el("span", "vl-caption", "Layer"), this.play, this.slider, this.layerLabel);
    const classField = el("div", "vl-field");
    classField.append(el("span", "vl-caption", "Class"), this.picker.root);
    const controls = el("div", "vl-controls");
    controls.append(
      this.gallery,
      layerField,
      this.site.box,
      this.metric.box,
      classField,
      this.chips,
      this.legend,
      this.hoverPanel,
    );
    if (!this.model.get("standalone")) {
      this.allBlocks.type = "checkbox";
      this.allBlocks.addEventListener("change", () =>
        this.setState("relevance_all_blocks", this.allBlocks.checked),
      );
      const all = el("label", "vl-radio");
      all.append(this.allBlocks, document.createTextNode("all blocks"));
      this.relevance.box.append(all);
      controls.append(this.relevance.box, this.buildPerturb(), this.memoryPanel);
    }
    const main = el("div", "vl-main");
    main.append(this.grid.root, controls);
    this.root.append(this.status, main);
    if (this.model.get("standalone")) {
      this.chart = new TrajectoryChart(
        (layer) => this.setState("layer", layer),
        (token) => this.setState("highlight", token),
      );
      this.root.append(this.chart.root);
    }
  }

  private buildPerturb(): HTMLElement {
    const summary = el("summary", "", "What if…");
    this.renormalize.type = "checkbox";
    this.renormalize.addEventListener("change", () =>
      this.setState("renormalize", this.renormalize.checked),
    );
    const renorm = el("label", "vl-radio");
    renorm.append(this.renormalize, document.createTextNode("renormalise rows"));
    this.removeMode.type = "button";
    this.removeMode.textContent = "Remove tokens by clicking";
    this.removeMode.setAttribute("aria-pressed", "false");
    this.removeMode.addEventListener("click", () => {
      const on = this.removeMode.getAttribute("aria-pressed") !== "true";
      this.removeMode.setAttribute("aria-pressed", String(on));
    });
    const reset = el("button", "", "Reset");
    reset.type = "button";
    reset.addEventListener("click", () => {
      this.model.set("attention", "");
      this.model.set("perturb_blocks", []);
      this.model.set("removed", []);
      this.model.save_changes();
    });
    const blocks = el("div", "vl-field");
    blocks.append(el("span", "vl-caption", "Blocks"), this.blockField);
    const tools = el("div", "vl-field");
    tools.append(this.removeMode, reset);
    this.perturb.append(summary, this.attention.box, renorm, blocks, tools, this.whatIf);
    return this.perturb;
  }

  private renderPerturb(): void {
    const layout = this.layout;
    if (!layout || this.model.get("standalone")) return;
    if (this.blockBoxes.length !== layout.depth) {
      this.blockBoxes = Array.from({ length: layout.depth }, (_, b) => {
        const box = el("input");
        box.type = "checkbox";
        box.setAttribute("aria-label", `Block ${b + 1}`);
        box.addEventListener("change", () => this.onBlocks());
        return box;
      });
      this.blockField.replaceChildren(
        ...this.blockBoxes.map((box, b) => {
          const label = el("label", "vl-block");
          label.append(box, document.createTextNode(String(b + 1)));
          return label;
        }),
      );
    }
    const chosen = this.model.get("perturb_blocks") as number[];
    this.blockBoxes.forEach(
      (box, b) => (box.checked = chosen.length === 0 || chosen.includes(b + 1)),
    );
    const attention = this.model.get("attention") as string;
    this.attention.set(attention);
    this.renormalize.checked = this.model.get("renormalize") as boolean;
    this.renormalize.disabled = attention !== "no_cls";
    const removed = (this.model.get("removed") as number[]).length;
    const names = this.model.get("class_names") as string[];
    const base = this.model.get("base_prediction") as number;
    const now = this.model.get("prediction") as number;
    const active = attention !== "" || removed > 0;
    const dropped = removed ? ` · ${removed} token(s) removed` : "";
    this.whatIf.textContent = active
      ? `Prediction ${names[now]} (unperturbed: ${names[base]})${dropped}`
      : "Unperturbed model.";
    this.whatIf.classList.toggle("vl-changed", active && now !== base);
  }

  private onBlocks(): void {
    const chosen = this.blockBoxes.flatMap((box, b) => (box.checked ? [b + 1] : []));
    if (chosen.length === 0) {
      this.showError("Choose at least one block for the attention perturbation.");
      return;
    }
    this.setState("perturb_blocks", chosen.length === this.blockBoxes.length ? [] : chosen);
  }

  /** Scrubbing the layer asks for a hovered token's memories once it settles, not once per frame. */
  private requestMemoriesSoon(): void {
    window.clearTimeout(this.memoriesSoon);
    this.memoriesSoon = window.setTimeout(() => this.requestMemories(), MEMORIES_SETTLE_MS);
  }

  private requestMemories(): void {
    if (this.model.get("standalone")) return;
    const token = this.hovered;
    const layer = this.model.get("layer") as number;
    if (token === null || layer < 1) {
      if (this.memoryPanel.dataset.hint === "1") return; // already shown: no DOM work per frame
      this.memoryPanel.replaceChildren(
        el(
          "span",
          "vl-hint",
          "Memories: hover a token at a block (layer ≥ 1) to see what it activates.",
        ),
      );
      this.memoryPanel.dataset.hint = "1";
      return;
    }
    delete this.memoryPanel.dataset.hint;
    const id = ++this.memoryRequest;
    this.model.send({ type: "memories", id, token, layer, site: this.model.get("site") });
  }

  private renderMemories(content: any, buffers: (DataView | ArrayBuffer)[]): void {
    if (content.id !== this.memoryRequest) return; // a newer hover superseded it
    const coefficients = new Float32Array(toArrayBuffer(buffers[0]));
    const names = this.model.get("class_names") as string[];
    const kind = content.kind === "attn" ? "Attention" : "MLP";
    const title = el(
      "div",
      "vl-hover-title",
      `${kind} memories of block ${content.layer} most activated here`,
    );
    const list = el("ol", "vl-memory-list");
    (content.memories as number[]).forEach((memory, i) => {
      const writes = (content.classes[i] as number[]).map((c) => names[c]).join(", ");
      list.append(el("li", "", `#${memory} (${coefficients[i].toFixed(2)}) writes ${writes}`));
    });
    this.memoryPanel.replaceChildren(title, list);
  }

  private listen(): void {
    const on = (event: string, fn: (...args: any[]) => void) => {
      this.model.on(event, fn);
      this.cleanups.push(() => this.model.off(event, fn));
    };
    on("change:token_layout", () => this.refreshAll());
    on("change:image_png", () => this.grid.setImage(toArrayBuffer(this.model.get("image_png"))));
    on("change:topk_indices", () => this.readTopk());
    on("change:topk_probs", () => this.readTopk());
    on("change:class_names", () => this.picker.setNames(this.model.get("class_names")));
    for (const name of ["layer", "site", "metric", "cls", "selected", "highlight", "image_index"]) {
      on(`change:${name}`, () => this.render());
    }
    for (const name of [
      "attention",
      "perturb_blocks",
      "renormalize",
      "removed",
      "prediction",
      "base_prediction",
      "relevance_method",
      "relevance_all_blocks",
      "relevance_maps",
    ]) {
      on(`change:${name}`, () => this.render());
    }
    on("change:trace_version", () => {
      this.store.setVersion(this.model.get("trace_version"));
      this.render();
      this.requestMemories();
    });
    on("change:layer", () => this.requestMemoriesSoon());
    on("change:site", () => this.requestMemories());
    on("change:error", () => this.showError(this.model.get("error")));
    on("msg:custom", (content: any, buffers: (DataView | ArrayBuffer)[]) => {
      if (this.heartbeat?.receive(content)) return;
      if (content?.type === "memories") return this.renderMemories(content, buffers ?? []);
      if (content?.type === "error" && content.request === "memories") {
        this.memoryPanel.replaceChildren(el("span", "vl-hint", String(content.message)));
        return;
      }
      this.store.receive(content, buffers ?? []);
    });
    this.store.setVersion(this.model.get("trace_version") ?? 0);
    // Now that replies have a listener, ask the kernel to push the likeliest classes (messages it
    // sent before this view existed had no one to receive them).
    if (!this.model.get("standalone")) this.model.send({ type: "ready" });
    if (!this.model.get("standalone")) {
      this.heartbeat = new Heartbeat(this.model, (alive) => {
        this.disconnected = !alive;
        this.renderStatus();
      });
      this.heartbeat.start();
    }
  }

  dispose(): void {
    this.cleanups.forEach((fn) => fn());
    this.heartbeat?.stop();
    window.clearInterval(this.timer);
    window.clearTimeout(this.memoriesSoon);
    if (this.layerSync !== undefined || this.paintSync !== undefined) {
      window.clearTimeout(this.layerSync);
      this.flushSync(); // the kernel still learns the last state shown
    }
    this.grid.dispose();
  }

  /** Change one piece of view state as a user action would (also used by benchmarks). */
  setState(name: string, value: unknown): void {
    // set() re-renders through the change listener, which also sends any slice request.
    this.model.set(name, value);
    if (name === "layer") return this.syncLayerSoon();
    window.clearTimeout(this.layerSync);
    this.layerSync = undefined;
    if (this.root.classList.contains("vl-loading")) return this.syncAfterPaint();
    this.flushSync();
  }

  /**
   * While the grid waits for the kernel's slice, the trait sync waits too: it makes the kernel
   * redraw the trajectories, and those messages would otherwise reach the page between the
   * slice and the frame that shows it, or hold up the kernel when the next class follows at
   * once. The sync goes out SETTLE_MS after the paint that shows the answer (later if another
   * class is asked for meanwhile), or after PAINT_SYNC_MS if no answer comes.
   */
  private syncAfterPaint(): void {
    window.clearTimeout(this.paintSync);
    this.paintSync = window.setTimeout(() => this.flushSync(), PAINT_SYNC_MS);
    this.afterPaint = () => {
      window.clearTimeout(this.paintSync);
      this.paintSync = window.setTimeout(() => this.flushSync(), SETTLE_MS);
    };
  }

  private flushSync(): void {
    window.clearTimeout(this.paintSync);
    this.paintSync = undefined;
    this.afterPaint = null;
    this.model.save_changes();
  }

  /**
   * The layer is drawn at once but told to the kernel only once scrubbing pauses for
   * LAYER_SETTLE_MS (or LAYER_SYNC_MAX_MS after the first unsent change, so that a long scrub or
   * play still moves the trajectory marker). Each sync costs a kernel round trip: the kernel's
   * echo, its busy/idle status and the marker redraw reach the page as several messages and
   * take CPU (page, kernel and server) just when the next key press wants its frame. With a
   * sync every 120 ms while scrubbing, 13-19 of 100 arrow-key presses (one per 60 ms, ViT-B/16,
   * two cores) were not painted in the next frame (benchmarks/explorer.py); now 1-3.
   */
  private syncLayerSoon(): void {
    const now = performance.now();
    if (this.layerSync === undefined) this.layerSyncBy = now + LAYER_SYNC_MAX_MS;
    window.clearTimeout(this.layerSync);
    this.layerSync = window.setTimeout(
      () => {
        this.layerSync = undefined;
        this.model.save_changes();
      },
      Math.max(0, Math.min(LAYER_SETTLE_MS, this.layerSyncBy - now)),
    );
  }

  private get layout(): Layout {
    return this.model.get("token_layout") as Layout;
  }

  private refreshAll(): void {
    const layout = this.layout;
    if (!layout || !layout.grid) return;
    this.picker.setNames(this.model.get("class_names"));
    this.grid.setLayout(layout);
    this.grid.setImage(toArrayBuffer(this.model.get("image_png")));
    this.readTopk();
    this.renderGallery();
    this.render();
  }

  private readTopk(): void {
    this.topIdx = new Int16Array(toArrayBuffer(this.model.get("topk_indices")));
    this.topProb = new Float32Array(toArrayBuffer(this.model.get("topk_probs")));
    this.renderHover();
    this.renderChips();
  }

  /** Row of the current layer in arrays of the current site (attn/mlp have no layer 0). */
  private row(): number {
    const layer = this.model.get("layer") as number;
    return this.model.get("site") === "resid" ? layer : Math.max(0, layer - 1);
  }

  private render(): void {
    const layout = this.layout;
    if (!layout || !layout.grid) return;
    const site = this.model.get("site") as string;
    const metric = this.model.get("metric") as string;
    const cls = this.model.get("cls") as number;
    const image = this.model.get("image_index") as number;
    const minLayer = site === "resid" ? 0 : 1;
    if ((this.model.get("layer") as number) < minLayer) {
      this.model.set("layer", minLayer);
      this.model.save_changes();
    }
    const layer = this.model.get("layer") as number;
    this.slider.min = String(minLayer);
    this.slider.max = String(layout.depth);
    this.slider.value = String(layer);
    this.slider.setAttribute("aria-valuetext", layerText(site, layer, layout.depth));
    this.layerLabel.textContent = layerText(site, layer, layout.depth);
    this.site.set(site);
    this.metric.set(metric);
    this.picker.show(cls);
    const slice = this.store.get(image, site, metric, cls);
    if (!slice) {
      this.store.request(image, { site, metric, classes: [cls] });
      this.root.classList.add("vl-loading");
    } else {
      this.root.classList.remove("vl-loading");
      const tokens = layout.n_tokens;
      const scale = scaleFor(metric, slice);
      const row = this.row();
      const overlay = this.relevanceValues(layer);
      if (overlay) this.grid.paint(overlay.values, overlay.scale);
      else this.grid.paint(slice.subarray(row * tokens, (row + 1) * tokens), scale);
      this.lastPaint = { key: `${image}|${site}|${metric}|${cls}|${layer}`, at: performance.now() };
      this.paintListeners.forEach((listener) => listener(this.lastPaint.key));
      const afterPaint = this.afterPaint;
      this.afterPaint = null;
      afterPaint?.();
      const shown = overlay ? overlay.scale : scale;
      const diverging = overlay
        ? this.model.get("relevance_method") === "class_space"
        : metric === "logit";
      this.renderLegend(shown.min, shown.max, shown.label, diverging);
      this.renderChart(slice, site, metric, cls);
      this.store.requestTable(image, site); // after the first paint: then any class is local
    }
    this.grid.setSelection(
      this.model.get("selected") as number[],
      this.model.get("highlight") as number,
    );
    this.grid.setRemoved((this.model.get("removed") as number[] | undefined) ?? []);
    this.renderPerturb();
    this.relevance.set(this.model.get("relevance_method") ?? "");
    this.allBlocks.checked = this.model.get("relevance_all_blocks") ?? true;
    this.renderHover();
    this.renderChips();
    this.renderStatus();
  }

  /** The relevance map to show at this layer, laid out per token (prefix tokens unpainted), or null. */
  private relevanceValues(layer: number): { values: Float32Array; scale: ColourScale } | null {
    const method = this.model.get("relevance_method") as string;
    const rows = this.model.get("relevance_rows") as number;
    if (!method || !rows) return null;
    const maps = new Float32Array(toArrayBuffer(this.model.get("relevance_maps")));
    const size = maps.length / rows;
    const perBlock = rows > 1 && !this.model.get("relevance_all_blocks") && layer >= 1;
    const row = perBlock ? Math.min(layer - 1, rows - 2) : rows - 1;
    const map = maps.subarray(row * size, (row + 1) * size);
    const values = new Float32Array(this.layout.n_tokens).fill(NaN);
    values.set(map, this.layout.prefix.length);
    return { values, scale: relevanceScale(map, method === "class_space") };
  }

  private renderLegend(min: number, max: number, label: string, diverging: boolean): void {
    this.legend.className = `vl-legend vl-legend-${diverging ? "diverging" : "sequential"}`;
    this.legend.replaceChildren(
      el("span", "vl-caption", label),
      el("span", "", min.toFixed(2)),
      el("span", "vl-legend-bar"),
      el("span", "", max.toFixed(2)),
    );
  }

  private renderChart(slice: Float32Array, site: string, metric: string, cls: number): void {
    if (!this.chart) return;
    const layout = this.layout;
    const tokens = layout.n_tokens;
    const rows = slice.length / tokens;
    const layers = Array.from({ length: rows }, (_, i) => (site === "resid" ? i : i + 1));
    const column = (t: number) => layers.map((_, r) => slice[r * tokens + t]);
    const n = layout.prefix.length;
    const series: Series[] = [];
    if (layout.prefix.includes("cls"))
      series.push({ token: 0, label: "[CLS]", colour: CLS_COLOUR, values: column(0) });
    series.push({
      token: -1,
      label: "image tokens (mean)",
      colour: MEAN_COLOUR,
      values: layers.map((_, r) => {
        let sum = 0;
        for (let t = n; t < tokens; t++) sum += slice[r * tokens + t];
        return sum / (tokens - n);
      }),
    });
    (this.model.get("selected") as number[]).forEach((t, i) =>
      series.push({
        token: t,
        label: `token ${t}`,
        colour: TOKEN_COLOURS[i % TOKEN_COLOURS.length],
        values: column(t),
      }),
    );
    const range: [number, number] =
      metric === "logit" ? [Math.min(...slice), Math.max(...slice)] : [0, 1];
    const name = (this.model.get("class_names") as string[])[cls];
    this.chart.draw(
      layers,
      series,
      this.model.get("layer"),
      range,
      `${metric} of '${name}' across layers`,
    );
  }

  private topOf(token: number): { cls: number; prob: number }[] {
    const k = this.model.get("topk_k") as number;
    const base = (this.row() * this.layout.n_tokens + token) * k;
    const out = [];
    for (let i = 0; i < k && base + i < this.topIdx.length; i++) {
      out.push({ cls: this.topIdx[base + i], prob: this.topProb[base + i] });
    }
    return out;
  }

  private renderHover(): void {
    const layout = this.layout;
    const token = this.hovered;
    if (!layout || token === null || token >= layout.n_tokens) {
      this.hoverPanel.replaceChildren(
        el("span", "vl-hint", "Hover a token: its top-5 classes. Click: select it."),
      );
      return;
    }
    const names = this.model.get("class_names") as string[];
    const title = el("div", "vl-hover-title", `${tokenName(layout, token)} · top classes here`);
    const list = el("ol", "vl-hover-list");
    for (const { cls, prob } of this.topOf(token)) {
      const li = el("li");
      const bar = el("span", "vl-bar");
      bar.style.width = `${Math.round(prob * 100)}%`;
      li.append(
        el("span", "vl-hover-name", names[cls]),
        bar,
        el("span", "vl-hover-prob", `${(prob * 100).toFixed(1)}%`),
      );
      list.append(li);
    }
    this.hoverPanel.replaceChildren(title, list);
  }

  private renderChips(): void {
    const layout = this.layout;
    if (!layout) return;
    const selected = this.model.get("selected") as number[];
    const token =
      this.hovered ??
      (selected.length ? selected[selected.length - 1] : layout.prefix.includes("cls") ? 0 : null);
    const names = this.model.get("class_names") as string[];
    const current = this.model.get("cls") as number;
    if (token === null) {
      this.chips.replaceChildren();
      return;
    }
    const top = this.topOf(token);
    this.store.prefetch(this.model.get("image_index"), {
      site: this.model.get("site"),
      metric: this.model.get("metric"),
      classes: top.map((t) => t.cls),
    });
    this.chips.replaceChildren(
      ...top.map(({ cls }) => {
        const chip = el("button", "vl-chip", names[cls]);
        chip.type = "button";
        chip.setAttribute("aria-pressed", String(cls === current));
        chip.addEventListener("click", () => this.setState("cls", cls));
        return chip;
      }),
    );
  }

  private renderGallery(): void {
    const count = this.model.get("n_images") as number;
    this.gallery.hidden = count <= 1;
    if (count <= 1) return;
    const index = this.model.get("image_index") as number;
    const prev = el("button", "vl-nav", "◀");
    const next = el("button", "vl-nav", "▶");
    prev.setAttribute("aria-label", "Previous image");
    next.setAttribute("aria-label", "Next image");
    prev.disabled = index === 0;
    next.disabled = index === count - 1;
    prev.addEventListener("click", () => this.setState("image_index", index - 1));
    next.addEventListener("click", () => this.setState("image_index", index + 1));
    this.gallery.replaceChildren(
      prev,
      el("span", "vl-caption", `image ${index + 1} of ${count}`),
      next,
    );
  }

  private toggle(token: number): void {
    if (this.removeMode.getAttribute("aria-pressed") === "true") return this.toggleRemoved(token);
    const selected = [...(this.model.get("selected") as number[])];
    const at = selected.indexOf(token);
    if (at >= 0) selected.splice(at, 1);
    else selected.push(token);
    this.setState("selected", selected);
  }

  private toggleRemoved(token: number): void {
    if (token < this.layout.prefix.length) {
      this.showError("Only image (patch) tokens can be removed.");
      return;
    }
    const removed = [...(this.model.get("removed") as number[])];
    const at = removed.indexOf(token);
    if (at >= 0) removed.splice(at, 1);
    else removed.push(token);
    this.setState("removed", removed);
  }

  private togglePlay(): void {
    if (this.timer !== undefined) {
      window.clearInterval(this.timer);
      this.timer = undefined;
      this.play.textContent = "▶";
      this.play.setAttribute("aria-label", "Play");
      return;
    }
    this.play.textContent = "⏸";
    this.play.setAttribute("aria-label", "Pause");
    this.timer = window.setInterval(() => {
      const depth = this.layout.depth;
      const min = this.model.get("site") === "resid" ? 0 : 1;
      const layer = this.model.get("layer") as number;
      this.setState("layer", layer >= depth ? min : layer + 1);
    }, PLAY_MS);
  }

  private showError(message: string): void {
    this.error = message;
    this.renderStatus();
  }

  private renderStatus(): void {
    const messages = [];
    if (this.disconnected)
      messages.push("Kernel not responding: if it restarted, run the cell again.");
    if (this.error) messages.push(this.error);
    this.status.textContent = messages.join(" ");
    this.status.hidden = messages.length === 0;
    this.root.classList.toggle("vl-disconnected", this.disconnected);
  }
}

function layerText(site: string, layer: number, depth: number): string {
  if (site === "resid")
    return layer === 0 ? `0 · embeddings` : `${layer} / ${depth} · after block ${layer}`;
  return `${layer} / ${depth} · ${site === "attn" ? "attention" : "MLP"} of block ${layer}`;
}

function tokenName(layout: Layout, token: number): string {
  const n = layout.prefix.length;
  if (token < n) return `[${layout.prefix[token].toUpperCase()}]`;
  const w = layout.grid[1];
  return `patch row ${Math.floor((token - n) / w) + 1}, column ${((token - n) % w) + 1}`;
}

export default {
  render({ model, el: host }: { model: ViewModel; el: HTMLElement }) {
    const ui = new ExplorerUI(model);
    host.append(ui.root);
    (host as any).__vlExplorer = ui; // handle for tests and benchmarks
    return () => {
      ui.dispose();
      ui.root.remove();
    };
  },
};
