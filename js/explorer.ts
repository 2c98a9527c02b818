/**
 * The explorer view (anywidget ESM entry). ExplorerApp owns what is on screen: it derives one
 * Frame from the model's state and the slice store, and every panel, the token grid and the
 * trajectories draw from that frame in the same task. The kernel (or the exported page's data)
 * is only asked for numbers, through a DataSource.
 */

import type { RenderProps } from "@anywidget/types";
import { TokenGrid } from "./grid";
import {
  type Actions,
  classPanel,
  el,
  type Frame,
  galleryPanel,
  hoverPanel,
  layerPanel,
  legendPanel,
  memoriesPanel,
  type Panel,
  relevancePanel,
  siteMetricPanels,
  statusPanel,
  whatIfPanel,
} from "./panels";
import {
  type ExplorerModel,
  metricSpec,
  rowOf,
  siteSpec,
  type StateModel,
  toArrayBuffer,
  type Traits,
} from "./model";
import { type ColourScale, DASHES, LINES, relevanceScale, scaleFor, tokenColour } from "./palette";
import { STATE_TRAITS } from "./protocol";
import { type DataSource, Heartbeat, KernelSource } from "./source";
import { SliceStore } from "./store";
import { HOLD_FRAME_MS, SETTLE_MS } from "./timing";
import { type Line, TrajectoryChart } from "./trajectories";
import { ViewState } from "./viewstate";

/**
 * Traits the kernel does not act on (requests name their class and metric themselves): set at once in
 * the view, told to the kernel once the user pauses for SETTLE_MS, in a quiet `state` request, so that
 * quick changes (scrubbing, chips clicked in a row) never queue kernel work before the next request and
 * a pause never shows the kernel busy (JupyterLab would redraw its toolbar just as the next key comes).
 * The class is sent at once, as a widget update, while the relevance overlay is on: the kernel computes
 * that overlay for it.
 */
const VIEW_ONLY = new Set<keyof Traits>(STATE_TRAITS);
/**
 * Traits the kernel acts on, but no sooner than the numbers they show (the site: the kernel sends its
 * top-k tables): told to it once the view's request for those numbers is answered and the frame that
 * shows them is painted, so that the kernel's handling of the change (validation, echo, busy/idle
 * messages) never stands between the request and its reply, nor between the reply and its frame.
 */
const AFTER_ANSWER = new Set<keyof Traits>(["site"]);
const TRAITS: (keyof Traits)[] = [
  "specs",
  "class_names",
  "token_layout",
  "n_images",
  "image_png",
  "prediction",
  "base_prediction",
  "topk_indices",
  "topk_probs",
  "topk_k",
  "topk_site",
  "trace_version",
  "relevance_maps",
  "relevance_rows",
  "relevance_blocks",
  "error",
  "image_index",
  "site",
  "metric",
  "layer",
  "cls",
  "selected",
  "highlight",
  "attention",
  "perturb_blocks",
  "renormalize",
  "removed",
  "relevance_method",
  "relevance_all_blocks",
];

export class ExplorerApp implements Actions {
  readonly root = el("div", "vl-explorer");
  /** The widget's state, with the view's changes not sent yet (see ViewState). */
  readonly model: ViewState;
  readonly store: SliceStore;
  /** The slice last painted and when (performance.now()), for tests and benchmarks. */
  lastPaint = { key: "", at: 0 };
  /** Called after every heat-map paint with its key (for tests and benchmarks). */
  readonly paintListeners = new Set<(key: string) => void>();
  private grid: TokenGrid;
  private chart: TrajectoryChart;
  private panels: Panel[];
  private status = statusPanel();
  private memories = memoriesPanel();
  private removeMode = el("button", "vl-remove-mode");
  private heartbeat: Heartbeat;
  private hovered: number | null = null;
  private error = "";
  private disconnected = false;
  private scheduled = false;
  private syncTimer: ReturnType<typeof setTimeout> | undefined;
  private memoriesTimer: ReturnType<typeof setTimeout> | undefined;
  private holdTimer: ReturnType<typeof setTimeout> | undefined;
  private holding = ""; // the slice the frame on screen waits for
  private memoriesAsked = "";
  private overlay = {
    from: null as unknown,
    key: "",
    value: null as { rows: Float32Array; scales: ColourScale[] } | null,
  }; // the relevance rows last made, and from what
  private top = { indices: new Int16Array(0), probs: new Float32Array(0), from: null as unknown };
  private cleanups: (() => void)[] = [];

  constructor(
    model: StateModel,
    private source: DataSource,
  ) {
    this.model = new ViewState(model, [...VIEW_ONLY, ...AFTER_ANSWER]);
    this.store = new SliceStore(
      source,
      () => this.invalidate(),
      // A request for an image no longer shown failed (e.g. the kernel refused that image and put the
      // view back): the kernel's own error says why, this one would only hide it.
      (message, image) => image === this.model.get("image_index") && this.showError(message),
    );
    this.grid = new TokenGrid({
      hover: (token) => this.hover(token),
      toggle: (token) => this.toggle(token),
    });
    this.chart = new TrajectoryChart(
      (layer) => this.set("layer", layer),
      (token) => this.set("highlight", token),
    );
    const settings = [
      galleryPanel(this),
      layerPanel(this),
      ...siteMetricPanels(this),
      classPanel(this, (classes) => this.prefetch(classes)),
      legendPanel(),
    ];
    const tools = source.serves.has("retrace")
      ? [relevancePanel(this), whatIfPanel(this, this.removeMode)]
      : [];
    const pointed = [hoverPanel(), ...(source.serves.has("memories") ? [this.memories] : [])];
    this.panels = [...settings, ...tools, ...pointed];
    this.heartbeat = new Heartbeat(source, (alive) => {
      this.disconnected = !alive;
      this.renderStatus();
    });
    this.build(settings, tools, pointed);
    this.listen();
    this.heartbeat.start();
    this.refreshImage();
  }

  /**
   * Two columns: the grid with what the pointer over it shows (`pointed`) under it, and the
   * `settings`, the trajectories and the `tools`. Everything a held arrow key redraws (grid, slider,
   * chips, trajectory marker) then lies within the grid's height: the frame's damaged box stays small.
   */
  private build(settings: Panel[], tools: Panel[], pointed: Panel[]): void {
    this.root.setAttribute("data-lm-suppress-shortcuts", "true"); // keys in here are ours, not JupyterLab's
    this.root.addEventListener("keydown", (e) => e.stopPropagation());
    // The picker's value changes fire selectionchange; every code cell's editor in the notebook
    // listens for it on the document and measures the page. They have nothing to do with ours.
    this.root.addEventListener("selectionchange", (e) => e.stopPropagation());
    const tokens = el("div", "vl-tokens");
    tokens.append(this.grid.root, ...pointed.map((p) => p.root));
    const controls = el("div", "vl-controls");
    controls.append(...settings.map((p) => p.root), this.chart.root, ...tools.map((p) => p.root));
    const main = el("div", "vl-main");
    main.append(tokens, controls);
    this.root.append(this.status.root, main);
  }

  private listen(): void {
    const on = (event: string, fn: () => void) => {
      this.model.on(event, fn);
      this.cleanups.push(() => this.model.off(event as `change:${keyof Traits}`, fn));
    };
    for (const name of TRAITS) on(`change:${name}`, () => this.invalidate());
    on("change:token_layout", () => this.refreshImage());
    on("change:image_png", () => this.grid.setImage(toArrayBuffer(this.model.get("image_png"))));
    on("change:trace_version", () => this.store.setVersion(this.model.get("trace_version")));
    on("change:error", () => this.showError(this.model.get("error")));
    this.store.setVersion(this.model.get("trace_version") ?? 0);
    const active = () => this.heartbeat.userActive(); // typing in the picker, hovering tokens
    for (const event of ["keydown", "pointermove"] as const) {
      this.root.addEventListener(event, active, { capture: true, passive: true });
      this.cleanups.push(() => this.root.removeEventListener(event, active, { capture: true }));
    }
  }

  private refreshImage(): void {
    const layout = this.model.get("token_layout");
    if (!layout?.grid) return;
    this.grid.setLayout(layout);
    this.grid.setImage(toArrayBuffer(this.model.get("image_png")));
    this.invalidate();
  }

  // --- actions ---------------------------------------------------------------------------
  /** Change one piece of state as a user action does (also used by tests and benchmarks). */
  set<K extends keyof Traits>(name: K, value: Traits[K]): void {
    this.heartbeat.userActive();
    const relevanceClass = name === "cls" && !!this.model.get("relevance_method");
    const viewOnly = VIEW_ONLY.has(name) && !relevanceClass;
    if (viewOnly || AFTER_ANSWER.has(name)) this.model.hold(name, value);
    else this.model.set(name, value);
    if (name === "site") this.clampLayer();
    if (viewOnly) return this.syncSoon();
    clearTimeout(this.syncTimer);
    if (AFTER_ANSWER.has(name)) return this.syncAfterAnswer();
    this.model.save_changes(); // sends the changes waiting for a pause or an answer too
  }

  /** Sync once the request the redraw makes (a microtask from now) is answered and painted. */
  private syncAfterAnswer(): void {
    queueMicrotask(() => {
      this.store.answered().then(() => afterPaint(() => this.model.save_changes()));
    });
  }

  /** The old name of set(), kept for tests and benchmarks. */
  setState<K extends keyof Traits>(name: K, value: Traits[K]): void {
    this.set(name, value);
  }

  private syncSoon(): void {
    clearTimeout(this.syncTimer);
    this.syncTimer = setTimeout(() => this.tellKernel(), SETTLE_MS);
  }

  /** Tell the kernel the held choices it does not act on, in a request (quiet), not a widget update. */
  private tellKernel(): void {
    if (!this.source.serves.has("state")) return this.model.save_changes();
    const state = this.model.tell(STATE_TRAITS);
    if (Object.keys(state).length === 0) return;
    this.source
      .ask({ kind: "state", state })
      .catch((error: Error) => this.showError(error.message))
      .finally(() => this.model.settle(state));
  }

  private clampLayer(): void {
    const site = siteSpec(this.model.get("specs"), this.model.get("site"));
    const layer = this.model.get("layer");
    if (!site.layers.includes(layer)) this.model.hold("layer", site.layers[rowOf(site, layer)]);
  }

  showError(message: string): void {
    this.error = message;
    this.renderStatus();
  }

  private hover(token: number | null): void {
    this.hovered = token;
    this.invalidate();
  }

  private toggle(token: number): void {
    const removing = this.removeMode.getAttribute("aria-pressed") === "true";
    if (removing && token < this.model.get("token_layout").prefix.length)
      return this.showError("Only image (patch) tokens can be removed.");
    const name = removing ? "removed" : "selected";
    const list = [...this.model.get(name)];
    const at = list.indexOf(token);
    if (at >= 0) list.splice(at, 1);
    else list.push(token);
    this.set(name, list);
  }

  private prefetch(classes: number[]): void {
    const { image, site, metric } = this.query();
    this.store.prefetch({ image, site, metric }, classes);
  }

  private query() {
    return {
      image: this.model.get("image_index"),
      site: this.model.get("site"),
      metric: this.model.get("metric"),
      cls: this.model.get("cls"),
    };
  }

  // --- drawing ---------------------------------------------------------------------------
  /** Redraw before the next frame, once however many changes arrive now. */
  private invalidate(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.render();
    });
  }

  render(): void {
    const frame = this.frame();
    if (!frame) return;
    const q = this.query();
    const slice = this.store.get(q);
    if (!slice) {
      this.store.request(q, [q.cls]);
      if (this.hold(q)) return;
    } else this.release();
    this.root.classList.toggle("vl-loading", !slice);
    if (slice) this.paint(frame, slice);
    this.grid.setSelection(frame.selected, this.model.get("highlight"));
    this.grid.setRemoved(this.model.get("removed") ?? []);
    for (const panel of this.panels) panel.update(frame, this.model);
    this.askMemories(frame);
  }

  /**
   * Whether to keep the frame on screen while the numbers for `q` are on their way: for
   * HOLD_FRAME_MS after the change, and only once something has been painted.
   */
  private hold(q: { image: number; site: string; metric: string; cls: number }): boolean {
    if (this.lastPaint.at === 0) return false;
    const key = `${q.image}|${q.site}|${q.metric}|${q.cls}`;
    if (this.holding === key) return this.holdTimer !== undefined;
    this.release();
    this.holding = key;
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      this.invalidate(); // still waiting: show the change, faded
    }, HOLD_FRAME_MS);
    return true;
  }

  private release(): void {
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    this.holding = "";
  }

  private frame(): Frame | null {
    const specs = this.model.get("specs");
    const layout = this.model.get("token_layout");
    if (!specs?.sites || !layout?.grid) return null;
    const site = siteSpec(specs, this.model.get("site"));
    const layer = this.model.get("layer");
    const row = rowOf(site, layer);
    this.readTopk();
    return {
      layout,
      specs,
      site,
      metric: metricSpec(specs, this.model.get("metric")),
      layer: site.layers[row],
      row,
      cls: this.model.get("cls"),
      image: this.model.get("image_index"),
      names: this.model.get("class_names"),
      selected: this.model.get("selected"),
      hovered: this.hovered,
      scale: null,
      top: (token) => this.topOf(token, row, layout.n_tokens),
    };
  }

  private paint(frame: Frame, slice: Float32Array): void {
    const overlay = this.relevance(frame);
    const scale = overlay ? null : scaleFor(frame.metric, slice); // one for every layer
    const scales = overlay?.scales ?? frame.site.layers.map(() => scale);
    frame.scale = scales[frame.row];
    this.grid.paint(overlay?.rows ?? slice, scales, frame.row);
    this.drawTrajectories(frame, slice);
    const { image, site, metric, cls } = this.query();
    this.lastPaint = {
      key: `${image}|${site}|${metric}|${cls}|${frame.layer}`,
      at: performance.now(),
    };
    this.paintListeners.forEach((listener) => listener(this.lastPaint.key));
    const rows = frame.site.layers.length;
    this.store.requestTable(image, site, rows, frame.specs.table_rows ?? rows); // then any class is local
  }

  private drawTrajectories(frame: Frame, slice: Float32Array): void {
    const q = this.query();
    const perturbed =
      this.model.get("attention") !== "" || (this.model.get("removed") ?? []).length > 0;
    let base: Float32Array | undefined;
    if (perturbed) {
      base = this.store.get({ ...q, base: true });
      if (!base) this.store.request({ ...q, base: true }, [q.cls]);
    }
    const version = this.model.get("trace_version");
    const key = `${q.image}|${version}|${q.site}|${q.metric}|${q.cls}|${frame.selected}|${!!base}`;
    this.chart.draw(key, frame.layer, () => {
      const lines = trajectoryLines(slice, frame, base);
      const range = frame.metric.range ?? finiteRange(lines);
      const title = `${frame.metric.label} of '${frame.names[frame.cls]}' across layers`;
      return { layers: frame.site.layers, lines, range, title };
    });
  }

  /**
   * The relevance maps as heat-map rows, one per layer of the site (each layer's own map, else the
   * global one; prefix tokens unpainted), with a colour scale per row; null when none is shown.
   */
  private relevance(frame: Frame): { rows: Float32Array; scales: ColourScale[] } | null {
    const method = this.model.get("relevance_method");
    const count = this.model.get("relevance_rows");
    if (!method || !count) return null;
    const raw = this.model.get("relevance_maps");
    const blocks = this.model.get("relevance_all_blocks")
      ? []
      : (this.model.get("relevance_blocks") ?? []);
    const key = `${method}|${blocks.join(",")}|${frame.site.layers.join(",")}`;
    if (raw === this.overlay.from && key === this.overlay.key) return this.overlay.value;
    const maps = new Float32Array(toArrayBuffer(raw));
    const [size, tokens] = [maps.length / count, frame.layout.n_tokens];
    const signed = !!frame.specs.relevance.find((r) => r.name === method)?.signed;
    const rows = new Float32Array(frame.site.layers.length * tokens).fill(NaN);
    const scales = frame.site.layers.map((layer, r) => {
      const block = blocks.indexOf(layer);
      const m = block >= 0 ? block : count - 1; // this layer's own map, else the global one
      const map = maps.subarray(m * size, (m + 1) * size);
      rows.set(map, r * tokens + frame.layout.prefix.length);
      return relevanceScale(map, signed);
    });
    this.overlay = { from: raw, key, value: { rows, scales } };
    return this.overlay.value;
  }

  private readTopk(): void {
    const raw = this.model.get("topk_probs");
    if (raw === this.top.from) return;
    this.top = {
      indices: new Int16Array(toArrayBuffer(this.model.get("topk_indices"))),
      probs: new Float32Array(toArrayBuffer(raw)),
      from: raw,
    };
  }

  private topOf(token: number, row: number, tokens: number): { cls: number; prob: number }[] {
    if (this.model.get("topk_site") !== this.model.get("site")) return []; // the kernel's are for another site
    const k = this.model.get("topk_k");
    const start = (row * tokens + token) * k;
    const out = [];
    for (let i = 0; i < k && start + i < this.top.indices.length; i++)
      out.push({ cls: this.top.indices[start + i], prob: this.top.probs[start + i] });
    return out;
  }

  /** A hovered token's memories at this block, asked once the pointer and the layer settle. */
  private askMemories(frame: Frame): void {
    if (!this.source.serves.has("memories")) return;
    const token = this.hovered;
    if (token === null || frame.layer < 1) {
      this.memoriesAsked = "";
      clearTimeout(this.memoriesTimer);
      return this.memories.hint(
        "Memories: hover a token at a block (layer ≥ 1) to see what it activates.",
      );
    }
    const ask = `${token}|${frame.layer}|${frame.site.name}|${this.model.get("trace_version")}`;
    if (ask === this.memoriesAsked) return;
    this.memoriesAsked = ask;
    clearTimeout(this.memoriesTimer);
    this.memoriesTimer = setTimeout(() => {
      this.source
        .ask({
          kind: "memories",
          image: frame.image,
          site: frame.site.name,
          layer: frame.layer,
          token,
        })
        .then(([reply, buffers]) => {
          if (ask !== this.memoriesAsked) return; // the pointer moved on
          const coefficients = new Float32Array(toArrayBuffer(buffers[0]));
          const sublayer = siteSpec(frame.specs, reply.memory_kind).label;
          this.memories.show(
            `Memories of block ${reply.layer}'s ${sublayer} most activated here`,
            reply.memories.map((memory, i) => {
              const writes = reply.classes[i].map((c) => frame.names[c]).join(", ");
              return `#${memory} (${coefficients[i].toFixed(2)}) writes ${writes}`;
            }),
          );
        })
        .catch((error: Error) => this.memories.hint(error.message));
    }, SETTLE_MS);
  }

  private renderStatus(): void {
    this.status.set(this.error, this.disconnected);
    this.root.classList.toggle("vl-disconnected", this.disconnected);
  }

  dispose(): void {
    this.cleanups.forEach((fn) => fn());
    this.heartbeat.stop();
    this.panels.forEach((p) => p.dispose?.());
    clearTimeout(this.memoriesTimer);
    this.release();
    clearTimeout(this.syncTimer);
    if (this.model.holding) this.model.save_changes(); // the kernel still learns the last state shown
    this.model.dispose();
    this.store.dispose();
    this.source.dispose();
    this.grid.dispose();
  }
}

/** [CLS], the mean of the image tokens, the selected tokens, and (when perturbed) the unperturbed
 * [CLS] and mean, dashed. Its Python twin is vitlens_widgets.widgets.lines.trajectory_lines. */
export function trajectoryLines(slice: Float32Array, frame: Frame, base?: Float32Array): Line[] {
  const { layout, site } = frame;
  const tokens = layout.n_tokens;
  const rows = site.layers.length;
  const column = (data: Float32Array, t: number) =>
    Array.from({ length: rows }, (_, r) => data[r * tokens + t]);
  const mean = (data: Float32Array) =>
    Array.from({ length: rows }, (_, r) => {
      let sum = 0;
      let count = 0;
      for (let t = layout.prefix.length; t < tokens; t++) {
        const v = data[r * tokens + t];
        if (Number.isFinite(v)) ((sum += v), count++);
      }
      return count ? sum / count : NaN;
    });
  const cls = layout.prefix.indexOf("cls");
  const lines: Line[] = [];
  if (cls >= 0)
    lines.push({ token: cls, label: "[CLS]", colour: LINES.cls, values: column(slice, cls) });
  lines.push({
    token: -1,
    label: "image tokens (mean)",
    colour: LINES.mean,
    values: mean(slice),
    dash: DASHES.mean,
  });
  frame.selected.forEach((t, i) =>
    lines.push({
      token: t,
      label: layout.names[t],
      colour: tokenColour(i),
      values: column(slice, t),
    }),
  );
  if (base) {
    if (cls >= 0)
      lines.push({
        token: cls,
        label: "[CLS] unperturbed",
        colour: LINES.baseline,
        values: column(base, cls),
        baseline: true,
        dash: DASHES.baseline,
      });
    lines.push({
      token: -1,
      label: "mean unperturbed",
      colour: LINES.baseline,
      values: mean(base),
      baseline: true,
      dash: DASHES.baseline,
    });
  }
  return lines;
}

/** Run `fn` just after the next frame is painted, or after SETTLE_MS where no frame comes (a hidden tab). */
function afterPaint(fn: () => void): void {
  let done = false;
  const once = () => {
    if (!done) ((done = true), fn());
  };
  requestAnimationFrame(() => setTimeout(once, 0));
  setTimeout(once, SETTLE_MS);
}

function finiteRange(lines: Line[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const line of lines)
    for (const v of line.values)
      if (Number.isFinite(v)) ((lo = Math.min(lo, v)), (hi = Math.max(hi, v)));
  return Number.isFinite(lo) ? [lo, hi > lo ? hi : lo + 1] : [0, 1];
}

export default {
  render({ model, el: host }: RenderProps<Traits>) {
    const app = new ExplorerApp(
      model,
      new KernelSource(model as ExplorerModel, (m) => app.showError(m)),
    );
    host.append(app.root);
    (host as HTMLElement & { __vlExplorer?: ExplorerApp }).__vlExplorer = app; // for tests and benchmarks
    return () => {
      app.dispose();
      app.root.remove();
    };
  },
};
