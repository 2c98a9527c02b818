/**
 * The explorer's panels: each builds its DOM once, redraws from a Frame (what the view shows
 * now) and reports user actions through Actions. None holds state of its own beyond the DOM.
 */

import type { Layout, MetricSpec, Option, SiteSpec, Specs, StateModel, Traits } from "./model";
import { ClassPicker } from "./picker";
import { type ColourScale } from "./palette";
import { PLAY_MS } from "./timing";

/** What is on screen in this frame, derived once and read by every panel. */
export interface Frame {
  layout: Layout;
  specs: Specs;
  site: SiteSpec;
  metric: MetricSpec;
  layer: number;
  row: number; // row of `layer` in this site's arrays
  cls: number;
  image: number;
  names: string[];
  selected: number[];
  hovered: number | null;
  scale: ColourScale | null; // of what the grid shows, once it has numbers
  top(token: number): { cls: number; prob: number }[]; // top classes of a token at this layer
}

export interface Actions {
  set<K extends keyof Traits>(name: K, value: Traits[K]): void;
  showError(message: string): void;
}

export interface Panel {
  root: HTMLElement;
  update(frame: Frame, model: StateModel): void;
  dispose?(): void;
}

let instances = 0;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  if (tag === "input" || tag === "button") suppressShortcuts(node);
  return node;
}

/**
 * Keys pressed on this element are the explorer's, not the notebook's. Notebook 7 matches its
 * shortcuts on the focused element itself, so the explorer's root carrying it is not enough.
 */
export function suppressShortcuts(node: HTMLElement): void {
  node.setAttribute("data-lm-suppress-shortcuts", "true");
}

/**
 * DOM writes that only happen when the value differs. Panels redraw on every frame; a write of an
 * unchanged text or attribute still costs a style and layout pass (and a repaint) in that frame.
 */
export function setText(node: Node, text: string): void {
  if (node.textContent === text) return;
  const only = node.firstChild;
  // Changing the text node's data, not replacing the node: no node leaves or joins the tree, so
  // nothing outside this element restyles (JupyterLab's output area has `:has()` rules).
  if (only instanceof Text && only === node.lastChild) only.data = text;
  else node.textContent = text;
}

export function setAttr(node: Element, name: string, value: string): void {
  if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

/** Replace `root`'s children with what `build` makes, only when `key` differs from the last one shown. */
function keyedChildren(root: HTMLElement): (key: string, build: () => Node[]) => void {
  let shown: string | null = null;
  return (key, build) => {
    if (key === shown) return;
    shown = key;
    root.replaceChildren(...build());
  };
}

/** Elements made on first use (`make(i)`) and kept: `at(i)` shows the i-th, `hideFrom(n)` hides the rest. */
function reused<T extends HTMLElement>(make: (i: number) => T) {
  const items: T[] = [];
  return {
    at(i: number): T {
      const item = (items[i] ??= make(i));
      if (item.hidden) item.hidden = false;
      return item;
    },
    hideFrom(n: number): void {
      for (const item of items.slice(n)) if (!item.hidden) item.hidden = true;
    },
  };
}

function field(caption: string, ...children: HTMLElement[]): HTMLDivElement {
  const box = el("div", "vl-field");
  box.append(el("span", "vl-caption", caption), ...children);
  return box;
}

/** A labelled radiogroup over `options` (rebuilt only when the options change). */
export function radioGroup(
  label: string,
  options: (frame: Frame) => Option[],
  current: (frame: Frame, model: StateModel) => string,
  onChange: (value: string) => void,
): Panel {
  const group = el("div", "vl-radios");
  group.setAttribute("role", "radiogroup");
  group.setAttribute("aria-label", label);
  const name = `vl-${label.toLowerCase()}-${++instances}`;
  let inputs: HTMLInputElement[] = [];
  let shown = "";
  return {
    root: field(label, group),
    update(frame, model) {
      const list = options(frame);
      const key = list.map((o) => o.name).join("|");
      if (key !== shown) {
        shown = key;
        inputs = list.map(({ name: value, label: text }) => {
          const input = el("input");
          input.type = "radio";
          input.name = name;
          input.value = value;
          input.addEventListener("change", () => input.checked && onChange(value));
          const wrap = el("label", "vl-radio");
          wrap.append(input, document.createTextNode(text));
          return input;
        });
        group.replaceChildren(...inputs.map((i) => i.parentElement!));
      }
      const value = current(frame, model);
      inputs.forEach((i) => (i.checked = i.value === value));
    },
  };
}

/** The layer slider with its label and a play button. */
export function layerPanel(actions: Actions): Panel {
  const slider = el("input", "vl-slider");
  slider.type = "range";
  slider.step = "1";
  slider.setAttribute("aria-label", "Layer");
  const label = el("output", "vl-layer-label");
  const play = el("button", "vl-play", "▶");
  play.type = "button";
  play.setAttribute("aria-label", "Play");
  let site: SiteSpec | null = null;
  let layer = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  slider.addEventListener("input", () => actions.set("layer", Number(slider.value)));
  const stop = () => {
    clearInterval(timer);
    timer = undefined;
    play.textContent = "▶";
    play.setAttribute("aria-label", "Play");
  };
  play.addEventListener("click", () => {
    if (timer !== undefined) return stop();
    play.textContent = "⏸";
    play.setAttribute("aria-label", "Pause");
    timer = setInterval(() => {
      if (!site) return;
      const layers = site.layers;
      const next = layers[(layers.indexOf(layer) + 1) % layers.length]; // from the last, back to the first
      actions.set("layer", next);
    }, PLAY_MS);
  });
  const root = el("div", "vl-field vl-layer");
  root.append(el("span", "vl-caption", "Layer"), play, slider, label);
  return {
    root,
    update(frame) {
      site = frame.site;
      layer = frame.layer;
      setAttr(slider, "min", String(site.layers[0]));
      setAttr(slider, "max", String(site.layers[site.layers.length - 1]));
      if (slider.value !== String(layer)) slider.value = String(layer);
      const text = site.layer_labels[frame.row];
      setAttr(slider, "aria-valuetext", text);
      setText(label, text);
    },
    dispose: stop,
  };
}

/** The class picker and the chips of the shown token's top classes. */
export function classPanel(actions: Actions, prefetch: (classes: number[]) => void): Panel {
  const picker = new ClassPicker((cls) => actions.set("cls", cls));
  const chips = chipRow((cls) => actions.set("cls", cls));
  const root = el("div", "vl-class");
  root.append(field("Class", picker.root), chips.root);
  let names: string[] = [];
  return {
    root,
    update(frame) {
      if (frame.names !== names) picker.setNames((names = frame.names));
      picker.show(frame.cls);
      const { layout, selected, hovered } = frame;
      const fallback = layout.prefix.includes("cls") ? 0 : null;
      const token = hovered ?? (selected.length ? selected[selected.length - 1] : fallback);
      const top = token === null ? [] : frame.top(token);
      prefetch(top.map((t) => t.cls));
      chips.show(
        top.map((t) => t.cls),
        frame,
      );
    },
  };
}

/**
 * One line of class chips whose buttons are reused: a layer change rewrites their texts in place.
 * The chips share the row equally and clip nothing (a clipped box that repaints makes Chromium
 * re-layerize the whole page, every key): long names are cut in script to fit, ending in "…"; the
 * full name is the chip's accessible name and its tooltip. The tooltip is set when the pointer
 * comes: a `title` change restyles its element (a stylesheet on the page selects on it).
 */
function chipRow(choose: (cls: number) => void) {
  const root = el("div", "vl-chips");
  root.setAttribute("aria-label", "Top classes");
  const shown: number[] = [];
  let names: string[] = [];
  let last: { classes: number[]; frame: Frame } | null = null;
  const fitted = new FittedNames("600"); // measured bold: the picked chip's
  const showTooltip = (button: HTMLElement, i: number) =>
    setAttr(button, "title", names[shown[i]] ?? "");
  const chips = reused((i) => {
    const button = el("button", "vl-chip", "");
    button.type = "button";
    button.addEventListener("click", () => choose(shown[i]));
    button.addEventListener("pointerenter", () => showTooltip(button, i));
    root.append(button);
    return button;
  });
  const show = (classes: number[], frame: Frame) => {
    last = { classes, frame };
    names = frame.names;
    classes.forEach((c, i) => {
      const button = chips.at(i);
      shown[i] = c;
      setText(button, fitted.fit(names[c]));
      setAttr(button, "aria-label", names[c]);
      if (button.matches(":hover")) showTooltip(button, i);
      setAttr(button, "aria-pressed", String(c === frame.cls));
    });
    chips.hideFrom(classes.length);
  };
  fitted.follow(chips.at(0), () => last && show(last.classes, last.frame));
  return { root, show };
}

/**
 * Names cut to a width, in an element's font, with "…"; cached per name. For text that must not be
 * clipped by its box (see chipRow): the box keeps its size and nothing overflows it.
 */
class FittedNames {
  private context = document.createElement("canvas").getContext("2d");
  private width = 0;
  private font = ""; // as given: the context's own copy is normalised, so never equal to it
  private cache = new Map<string, string>();

  /** `weight`: measure in this font weight instead of the element's own (e.g. its bold state's). */
  constructor(private weight?: string) {}

  /** Fit to `element`'s content width and font, and again (then `refit`) whenever they change. */
  follow(element: HTMLElement, refit: () => void): void {
    new ResizeObserver(([entry]) => {
      if (this.resize(entry.contentRect.width, getComputedStyle(element))) refit();
    }).observe(element);
  }

  /** A new width or font: whether it changed (then every name is fitted again). */
  private resize(width: number, style: CSSStyleDeclaration): boolean {
    const weight = this.weight ?? style.fontWeight;
    const font = `${style.fontStyle} ${weight} ${style.fontSize} ${style.fontFamily}`;
    if (!this.context || (width === this.width && font === this.font)) return false;
    [this.width, this.font, this.context.font] = [width, font, font];
    this.cache.clear();
    return true;
  }

  fit(name: string): string {
    const context = this.context;
    if (!context || this.width <= 0) return name; // not laid out yet
    let text = this.cache.get(name);
    if (text === undefined) {
      const fits = (t: string) => context.measureText(t).width <= this.width;
      text = fits(name) ? name : cut(name, fits);
      this.cache.set(name, text);
    }
    return text;
  }
}

/** The longest start of `name` that `fits` with "…" after it (at least one character). */
function cut(name: string, fits: (text: string) => boolean): string {
  let [lo, hi] = [1, name.length];
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(name.slice(0, mid).trimEnd() + "…")) lo = mid;
    else hi = mid - 1;
  }
  return name.slice(0, lo).trimEnd() + "…";
}

/** The colour legend of what the grid shows. */
export function legendPanel(): Panel {
  const root = el("div", "vl-legend");
  const show = keyedChildren(root);
  return {
    root,
    update({ scale }) {
      if (!scale) return;
      setAttr(root, "class", `vl-legend vl-legend-${scale.diverging ? "diverging" : "sequential"}`);
      const [min, max] = [scale.min.toFixed(2), scale.max.toFixed(2)];
      show(`${scale.label}|${min}|${max}|${scale.gradient}`, () => {
        const bar = el("span", "vl-legend-bar");
        bar.style.background = scale.gradient;
        return [
          el("span", "vl-caption", scale.label),
          el("span", "", min),
          bar,
          el("span", "", max),
        ];
      });
    },
  };
}

/**
 * The hovered token's top classes as a title and a list of bars. Its rows are reused: a new layer or
 * token rewrites their texts and bar widths in place. Long names are cut in script, as the chips'
 * are: a held arrow key over a hovered token repaints them every key.
 */
export function hoverPanel(): Panel {
  const fitted = new FittedNames();
  let last: Frame | null = null;
  const root = el("div", "vl-hover");
  const hint = el("span", "vl-hint", "Hover a token: its top-5 classes. Click: select it.");
  const title = el("div", "vl-hover-title");
  const list = el("ol", "vl-hover-list");
  const rows = reused(() => {
    const [name, bar, prob] = [
      el("span", "vl-hover-name"),
      el("span", "vl-bar"),
      el("span", "vl-hover-prob"),
    ];
    const li = el("li");
    li.append(name, bar, prob);
    list.append(li);
    return Object.assign(li, { parts: { name, bar, prob } });
  });
  root.append(hint, title, list);
  const showRows = (frame: Frame) => {
    last = frame;
    const top = frame.hovered === null ? [] : frame.top(frame.hovered);
    top.forEach(({ cls, prob }, i) => {
      const { name, bar, prob: percent } = rows.at(i).parts;
      setText(name, fitted.fit(frame.names[cls]));
      const width = `${Math.round(prob * 100)}%`;
      if (bar.style.width !== width) bar.style.width = width;
      setText(percent, `${(prob * 100).toFixed(1)}%`);
    });
    rows.hideFrom(top.length);
  };
  fitted.follow(rows.at(0).parts.name, () => last && showRows(last)); // the names' column width
  rows.hideFrom(0);
  return {
    root,
    update(frame) {
      const token = frame.hovered;
      const showing = token !== null && token < frame.layout.n_tokens;
      if (hint.hidden !== showing)
        [hint.hidden, title.hidden, list.hidden] = [showing, !showing, !showing];
      if (!showing) return;
      setText(title, `${tokenName(frame.layout, token)} · top classes here`);
      showRows(frame);
    },
  };
}

/** Previous / next image of a gallery. */
export function galleryPanel(actions: Actions): Panel {
  const root = el("div", "vl-gallery");
  const prev = el("button", "vl-nav", "◀");
  const next = el("button", "vl-nav", "▶");
  const caption = el("span", "vl-caption");
  prev.setAttribute("aria-label", "Previous image");
  next.setAttribute("aria-label", "Next image");
  let index = 0;
  prev.addEventListener("click", () => actions.set("image_index", index - 1));
  next.addEventListener("click", () => actions.set("image_index", index + 1));
  root.append(prev, caption, next);
  return {
    root,
    update(frame, model) {
      const count = model.get("n_images");
      if (root.hidden !== count <= 1) root.hidden = count <= 1;
      index = frame.image;
      if (prev.disabled !== (index === 0)) prev.disabled = index === 0;
      if (next.disabled !== (index === count - 1)) next.disabled = index === count - 1;
      setText(caption, `image ${index + 1} of ${count}`);
    },
  };
}

/** Relevance overlay method, and whether it shows the per-block maps. */
export function relevancePanel(actions: Actions): Panel {
  const methods = radioGroup(
    "Relevance",
    (frame) => frame.specs.relevance,
    (_, model) => model.get("relevance_method") ?? "",
    (value) => actions.set("relevance_method", value),
  );
  const allBlocks = el("input");
  allBlocks.type = "checkbox";
  allBlocks.addEventListener("change", () =>
    actions.set("relevance_all_blocks", allBlocks.checked),
  );
  const all = el("label", "vl-radio");
  all.append(allBlocks, document.createTextNode("all blocks"));
  methods.root.append(all);
  return {
    root: methods.root,
    update(frame, model) {
      methods.update(frame, model);
      allBlocks.checked = model.get("relevance_all_blocks") ?? true;
    },
  };
}

/** What if…: attention perturbations and removed tokens, and what they do to the prediction. */
export function whatIfPanel(actions: Actions, removeMode: HTMLButtonElement): Panel {
  const root = el("details", "vl-perturb");
  const attention = radioGroup(
    "Attention",
    (frame) => frame.specs.attention,
    (_, model) => model.get("attention"),
    (value) => actions.set("attention", value),
  );
  const renormalize = el("input");
  renormalize.type = "checkbox";
  renormalize.addEventListener("change", () => actions.set("renormalize", renormalize.checked));
  const renorm = el("label", "vl-radio");
  renorm.append(renormalize, document.createTextNode("renormalise rows"));
  const blockField = el("div", "vl-blocks");
  let boxes: HTMLInputElement[] = [];
  const onBlocks = () => {
    const chosen = boxes.flatMap((box, b) => (box.checked ? [b + 1] : []));
    if (chosen.length === 0)
      return actions.showError("Choose at least one block for the attention perturbation.");
    actions.set("perturb_blocks", chosen.length === boxes.length ? [] : chosen);
  };
  removeMode.type = "button";
  removeMode.textContent = "Remove tokens by clicking";
  removeMode.setAttribute("aria-pressed", "false");
  removeMode.addEventListener("click", () =>
    removeMode.setAttribute(
      "aria-pressed",
      String(removeMode.getAttribute("aria-pressed") !== "true"),
    ),
  );
  const reset = el("button", "", "Reset");
  reset.type = "button";
  reset.addEventListener("click", () => {
    actions.set("attention", "");
    actions.set("perturb_blocks", []);
    actions.set("removed", []);
  });
  const summary = el("div", "vl-whatif");
  root.append(
    el("summary", "", "What if…"),
    attention.root,
    renorm,
    field("Blocks", blockField),
    field("", removeMode, reset),
    summary,
  );
  return {
    root,
    update(frame, model) {
      if (boxes.length !== frame.layout.depth) {
        boxes = Array.from({ length: frame.layout.depth }, (_, b) => {
          const box = el("input");
          box.type = "checkbox";
          box.setAttribute("aria-label", `Block ${b + 1}`);
          box.addEventListener("change", onBlocks);
          return box;
        });
        blockField.replaceChildren(
          ...boxes.map((box, b) => {
            const label = el("label", "vl-block");
            label.append(box, document.createTextNode(String(b + 1)));
            return label;
          }),
        );
      }
      const chosen = model.get("perturb_blocks");
      boxes.forEach((box, b) => (box.checked = chosen.length === 0 || chosen.includes(b + 1)));
      attention.update(frame, model);
      const mode = model.get("attention");
      renormalize.checked = model.get("renormalize");
      if (renormalize.disabled !== (mode !== "no_cls")) renormalize.disabled = mode !== "no_cls";
      const removed = model.get("removed").length;
      const [base, now] = [model.get("base_prediction"), model.get("prediction")];
      const active = mode !== "" || removed > 0;
      const dropped = removed ? ` · ${removed} token(s) removed` : "";
      setText(
        summary,
        active
          ? `Prediction ${frame.names[now]} (unperturbed: ${frame.names[base]})${dropped}`
          : "Unperturbed model.",
      );
      summary.classList.toggle("vl-changed", active && now !== base);
    },
  };
}

/** The memories a hovered token activates at this block, and the classes they write. */
export function memoriesPanel(): Panel & {
  show(title: string, lines: string[]): void;
  hint(text: string): void;
} {
  const root = el("div", "vl-memories");
  let hinted = "";
  return {
    root,
    update() {},
    show(title, lines) {
      hinted = "";
      const list = el("ol", "vl-memory-list");
      lines.forEach((line) => list.append(el("li", "", line)));
      root.replaceChildren(el("div", "vl-hover-title", title), list);
    },
    hint(text) {
      if (hinted === text) return; // no DOM work per frame
      hinted = text;
      root.replaceChildren(el("span", "vl-hint", text));
    },
  };
}

/** Errors and the kernel's connection state. */
export function statusPanel(): Panel & { set(error: string, disconnected: boolean): void } {
  const root = el("div", "vl-status");
  root.setAttribute("role", "status");
  root.setAttribute("aria-live", "polite");
  root.hidden = true;
  return {
    root,
    update() {},
    set(error, disconnected) {
      const messages = [];
      if (disconnected)
        messages.push("Kernel not responding: if it restarted, run the cell again.");
      if (error) messages.push(error);
      root.textContent = messages.join(" ");
      root.hidden = messages.length === 0;
    },
  };
}

export function tokenName(layout: Layout, token: number): string {
  const n = layout.prefix.length;
  if (token < n) return `[${layout.prefix[token].toUpperCase()}]`;
  const w = layout.grid[1];
  return `patch row ${Math.floor((token - n) / w) + 1}, column ${((token - n) % w) + 1}`;
}

export function siteMetricPanels(actions: Actions): Panel[] {
  return [
    radioGroup(
      "Site",
      (f) => f.specs.sites,
      (f) => f.site.name,
      (value) => actions.set("site", value),
    ),
    radioGroup(
      "Metric",
      (f) => f.specs.metrics,
      (f) => f.metric.name,
      (value) => actions.set("metric", value),
    ),
  ];
}
