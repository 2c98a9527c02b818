/**
 * The token grid: the input crop, a heat-map canvas with one pixel per patch (scaled up),
 * and an ARIA grid of focusable cells (prefix tokens in their own labelled row above).
 */

import type { Layout } from "./model";
import { css, type ColourScale, HEAT_OPACITY, textOn, tokenColour } from "./palette";

export interface GridEvents {
  hover(token: number | null): void;
  toggle(token: number): void;
}

export class TokenGrid {
  readonly root: HTMLDivElement;
  readonly canvas: HTMLCanvasElement;
  private image: HTMLImageElement;
  private prefixRow: HTMLDivElement;
  private patches: HTMLDivElement;
  private cells: HTMLDivElement[] = [];
  private layout: Layout | null = null;
  private shown: { values: Float32Array | null; scale: ColourScale | null } = {
    values: null,
    scale: null,
  };
  private focusIndex = 0;
  private painted: { values: Float32Array | null; colours: string | null } = {
    values: null,
    colours: null,
  }; // what the canvas and prefix cells show
  private shownSelection = ""; // what setSelection and setRemoved last wrote
  private shownRemoved = "";
  private objectUrl: string | null = null;

  constructor(private events: GridEvents) {
    this.root = document.createElement("div");
    this.root.className = "vl-grid";
    this.root.setAttribute("role", "grid");
    this.root.setAttribute("aria-label", "Tokens");
    this.root.setAttribute("aria-multiselectable", "true");
    this.prefixRow = document.createElement("div");
    this.prefixRow.className = "vl-prefix-row";
    this.prefixRow.setAttribute("role", "row");
    this.patches = document.createElement("div");
    this.patches.className = "vl-patches";
    this.patches.setAttribute("role", "rowgroup");
    this.image = document.createElement("img");
    this.image.className = "vl-crop";
    this.image.alt = "";
    this.image.setAttribute("aria-hidden", "true");
    this.canvas = document.createElement("canvas");
    this.canvas.className = "vl-heat";
    this.canvas.setAttribute("aria-hidden", "true");
    this.patches.append(this.image, this.canvas);
    this.root.append(this.prefixRow, this.patches);
    this.root.addEventListener("keydown", (e) => this.onKey(e));
    this.root.addEventListener("mouseleave", () => this.events.hover(null));
  }

  setImage(png: ArrayBuffer): void {
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = URL.createObjectURL(new Blob([png], { type: "image/png" }));
    this.image.src = this.objectUrl;
  }

  setLayout(layout: Layout): void {
    this.layout = layout;
    [this.shownSelection, this.shownRemoved] = ["", ""]; // new cells: write everything again
    this.painted = { values: null, colours: null };
    const [h, w] = layout.grid;
    this.canvas.width = w;
    this.canvas.height = h;
    this.patches.style.gridTemplateColumns = `repeat(${w}, 1fr)`;
    this.patches.style.aspectRatio = `${layout.image_size[1]} / ${layout.image_size[0]}`;
    this.cells = [];
    this.prefixRow.replaceChildren();
    this.patches.querySelectorAll("[role=row]").forEach((row) => row.remove());
    layout.prefix.forEach((name, token) => {
      const cell = this.makeCell(token, prefixLabel(name));
      cell.classList.add("vl-prefix-cell");
      cell.textContent = name.toUpperCase();
      this.prefixRow.append(cell);
    });
    this.prefixRow.hidden = layout.prefix.length === 0;
    for (let r = 0; r < h; r++) {
      const row = document.createElement("div");
      row.setAttribute("role", "row");
      row.className = "vl-row";
      for (let c = 0; c < w; c++) {
        const token = layout.prefix.length + r * w + c;
        row.append(this.makeCell(token, `patch row ${r + 1}, column ${c + 1}`));
      }
      this.patches.append(row);
    }
    this.focusIndex = Math.min(this.focusIndex, this.cells.length - 1);
    this.cells.forEach((cell, i) => (cell.tabIndex = i === this.focusIndex ? 0 : -1));
  }

  /**
   * Colour every token by `values` (length T) with `scale`. Colours already on screen are not painted
   * again: a canvas write, even of the same pixels, costs the page a frame.
   */
  paint(values: Float32Array | null, scale: ColourScale | null): void {
    const layout = this.layout;
    if (!layout) return;
    const colours = scale && `${scale.min}|${scale.max}|${scale.gradient}`;
    if (colours === this.painted.colours && sameValues(values, this.painted.values)) {
      this.shown = { values, scale };
      return this.describe(this.focusIndex);
    }
    this.painted = { values: values && values.slice(), colours };
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    const [h, w] = layout.grid;
    const n = layout.prefix.length;
    const pixels = ctx.createImageData(w, h);
    for (let i = 0; i < h * w; i++) {
      const value = values ? values[n + i] : NaN;
      if (!values || !scale || !Number.isFinite(value)) continue;
      pixels.data.set(scale.colour(value), i * 4); // no array made per pixel: less for the collector
      pixels.data[i * 4 + 3] = HEAT_OPACITY * 255;
    }
    ctx.putImageData(pixels, 0, 0);
    for (let t = 0; t < n; t++) {
      const cell = this.cells[t];
      const colour = values && scale ? scale.colour(values[t]) : null;
      cell.style.background = colour ? css(colour) : "";
      cell.style.color = colour ? textOn(colour) : "";
    }
    this.shown = { values, scale };
    this.describe(this.focusIndex); // the others are described when they get focus
  }

  /** A cell's value as its accessible description (set on focus, not for every cell each frame). */
  private describe(token: number): void {
    const cell = this.cells[token];
    if (!cell) return;
    const v = this.shown.values?.[token];
    const text = v === undefined ? "" : `${this.shown.scale?.label ?? ""} ${v.toFixed(3)}`;
    if (cell.getAttribute("aria-description") !== text) cell.setAttribute("aria-description", text);
  }

  setSelection(selected: number[], highlight: number): void {
    // This runs on every render: nothing to do unless the selection changed, and then only what
    // changed is written (each write restyles the cell).
    const key = `${selected}|${highlight}`;
    if (key === this.shownSelection) return;
    this.shownSelection = key;
    this.cells.forEach((cell, t) => {
      const position = selected.indexOf(t);
      const isSelected = String(position >= 0);
      if (cell.getAttribute("aria-selected") !== isSelected)
        cell.setAttribute("aria-selected", isSelected);
      const outline = position >= 0 ? tokenColour(position) : "";
      if (cell.style.outlineColor !== outline) cell.style.outlineColor = outline;
      cell.classList.toggle("vl-selected", position >= 0); // a no-op when the class is already so
      cell.classList.toggle("vl-highlight", t === highlight);
    });
  }

  setRemoved(removed: number[]): void {
    const key = `${removed}`;
    if (key === this.shownRemoved) return;
    this.shownRemoved = key;
    this.cells.forEach((cell, t) => cell.classList.toggle("vl-removed", removed.includes(t)));
  }

  dispose(): void {
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
  }

  private makeCell(token: number, label: string): HTMLDivElement {
    const cell = document.createElement("div");
    cell.className = "vl-cell";
    cell.setAttribute("role", "gridcell");
    cell.setAttribute("aria-label", label);
    cell.setAttribute("aria-selected", "false");
    cell.dataset.token = String(token);
    cell.tabIndex = -1;
    cell.setAttribute("data-lm-suppress-shortcuts", "true"); // Notebook 7 matches shortcuts on the focused cell
    cell.addEventListener("mouseenter", () => this.events.hover(token));
    cell.addEventListener("focus", () => {
      this.focusIndex = token;
      this.describe(token);
      this.events.hover(token);
    });
    cell.addEventListener("click", () => {
      this.focus(token);
      this.events.toggle(token);
    });
    this.cells.push(cell);
    return cell;
  }

  private focus(token: number): void {
    const cell = this.cells[token];
    if (!cell) return;
    this.cells.forEach((c, i) => (c.tabIndex = i === token ? 0 : -1));
    this.focusIndex = token;
    cell.focus();
  }

  private onKey(e: KeyboardEvent): void {
    const layout = this.layout;
    if (!layout) return;
    const [h, w] = layout.grid;
    const n = layout.prefix.length;
    const t = this.focusIndex;
    const isPrefix = t < n;
    const row = isPrefix ? -1 : Math.floor((t - n) / w);
    const col = isPrefix ? t : (t - n) % w;
    let next = t;
    switch (e.key) {
      case "ArrowRight":
        next = isPrefix ? Math.min(n - 1, t + 1) : n + row * w + Math.min(w - 1, col + 1);
        break;
      case "ArrowLeft":
        next = isPrefix ? Math.max(0, t - 1) : n + row * w + Math.max(0, col - 1);
        break;
      case "ArrowDown":
        next = isPrefix ? n + Math.min(w - 1, col) : n + Math.min(h - 1, row + 1) * w + col;
        break;
      case "ArrowUp":
        next = isPrefix
          ? t
          : row === 0 && n > 0
            ? Math.min(n - 1, col)
            : n + Math.max(0, row - 1) * w + col;
        break;
      case "Home":
        next = isPrefix ? 0 : n + row * w;
        break;
      case "End":
        next = isPrefix ? n - 1 : n + row * w + w - 1;
        break;
      case "Enter":
      case " ":
        this.events.toggle(t);
        e.preventDefault();
        return;
      default:
        return;
    }
    e.preventDefault();
    this.focus(next);
  }
}

function sameValues(a: Float32Array | null, b: Float32Array | null): boolean {
  if (!a || !b || a.length !== b.length) return a === b;
  for (let i = 0; i < a.length; i++)
    if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return false;
  return true;
}

function prefixLabel(name: string): string {
  if (name === "cls") return "class token";
  if (name === "dist") return "distillation token";
  return `register token ${name.replace("reg", "")}`;
}
