/**
 * The token grid: the input crop, the heat map over it (js/heat.ts), and an ARIA grid of
 * focusable cells (prefix tokens in their own labelled row above, coloured here).
 */

import type { Layout } from "./model";
import { HeatMap } from "./heat";
import { css, type ColourScale, textOn, tokenColour } from "./palette";

export interface GridEvents {
  hover(token: number | null): void;
  toggle(token: number): void;
}

export class TokenGrid {
  readonly root: HTMLDivElement;
  private heat = new HeatMap();
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
  private prefixColours: string[] = []; // what each prefix cell's colour was last set to
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
    this.patches.append(this.image, this.heat.canvas, this.heat.sprite);
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
    this.prefixColours = [];
    this.heat.setLayout({
      grid: layout.grid,
      prefix: layout.prefix.length,
      tokens: layout.n_tokens,
    });
    const [h, w] = layout.grid;
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
   * Colour every token by row `row` of `rows` (R rows of T values, `scales[r]` colouring row r):
   * the patches in the heat map, the prefix tokens' cells here. Nothing already shown is written again.
   */
  paint(rows: Float32Array | null, scales: (ColourScale | null)[], row: number): void {
    const layout = this.layout;
    if (!layout) return;
    this.heat.show(rows, scales, row);
    const tokens = layout.n_tokens;
    const values = rows && rows.subarray(row * tokens, (row + 1) * tokens);
    const scale = scales[row] ?? null;
    for (let t = 0; t < layout.prefix.length; t++) {
      const colour = values && scale ? scale.colour(values[t]) : null;
      this.colourPrefixCell(t, colour ? css(colour) : "", colour ? textOn(colour) : "");
    }
    this.shown = { values, scale };
    this.describe(this.focusIndex); // the others are described when they get focus
  }

  /** A prefix token's cell in its colour, written only when it changes. */
  private colourPrefixCell(token: number, background: string, text: string): void {
    const key = `${background}|${text}`;
    if (this.prefixColours[token] === key) return;
    this.prefixColours[token] = key;
    const style = this.cells[token].style;
    [style.background, style.color] = [background, text];
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

function prefixLabel(name: string): string {
  if (name === "cls") return "class token";
  if (name === "dist") return "distillation token";
  return `register token ${name.replace("reg", "")}`;
}
