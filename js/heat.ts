/**
 * The heat map over the token grid: one pixel per patch, scaled up.
 *
 * Every layer's map is drawn into one image, one map under another, and an <img> on its own
 * compositor layer shows one band of it (`object-position`): a layer change repaints that image
 * alone. A new slice (another class, site, metric or image) shows first in a canvas holding the
 * current layer, in the same frame as the rest of the view, and the image takes over once it has
 * decoded. Chromium re-layerizes the whole page for every repainted canvas (1–1.5 ms a frame on
 * JupyterLab's page), not for a repainted image: held arrow keys stay on the image.
 */

import { type ColourScale, HEAT_OPACITY } from "./palette";

export interface HeatLayout {
  grid: [number, number]; // patch rows, columns
  prefix: number; // tokens before the patches
  tokens: number; // all tokens
}

export class HeatMap {
  readonly canvas = document.createElement("canvas"); // the current layer, until the image is ready
  readonly sprite = document.createElement("img"); // every layer, one band shown
  private painter = document.createElement("canvas"); // off the page: draws the sprite's image
  private layout: HeatLayout | null = null;
  private drawn = { values: null as Float32Array | null, colours: "" }; // what the two hold
  private generation = 0; // counts new slices: a decode that finished late is ignored
  private spriteReady = false;
  private bands = 1;
  private canvasRow = -1;
  private position = "";

  constructor() {
    this.canvas.className = "vl-heat";
    this.sprite.className = "vl-heat-sprite";
    this.sprite.alt = "";
    this.sprite.hidden = true;
    for (const part of [this.canvas, this.sprite]) part.setAttribute("aria-hidden", "true");
  }

  setLayout(layout: HeatLayout): void {
    this.layout = layout;
    this.drawn = { values: null, colours: "" };
    [this.canvas.width, this.canvas.height] = [layout.grid[1], layout.grid[0]];
  }

  /** Show row `row` of `rows` (R rows of T values, `scales[r]` colouring row r). */
  show(rows: Float32Array | null, scales: (ColourScale | null)[], row: number): void {
    const colours = scales.map((s) => s && `${s.min}|${s.max}|${s.gradient}`).join(";");
    if (colours !== this.drawn.colours || !sameValues(rows, this.drawn.values)) {
      this.drawn = { values: rows && rows.slice(), colours };
      this.startSprite(this.drawn.values, scales);
    }
    if (this.spriteReady) this.place(row);
    else this.paintCanvas(row, rows, scales[row] ?? null);
  }

  /** The canvas shows `row` (written only when it shows another). */
  private paintCanvas(row: number, rows: Float32Array | null, scale: ColourScale | null): void {
    if (row === this.canvasRow || !this.layout) return;
    this.canvasRow = row;
    const [h, w] = this.layout.grid;
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    const pixels = ctx.createImageData(w, h);
    this.fill(pixels.data, 0, rows, row, scale);
    ctx.putImageData(pixels, 0, 0);
  }

  /**
   * The canvas shows this slice now; every row is drawn into the sprite's image after this frame
   * (encoding it is not the class change's work), which takes over once decoded.
   */
  private startSprite(rows: Float32Array | null, scales: (ColourScale | null)[]): void {
    const generation = ++this.generation;
    [this.spriteReady, this.canvasRow, this.bands] = [false, -1, Math.max(1, scales.length)];
    [this.sprite.hidden, this.canvas.hidden] = [true, false];
    const later = () => generation === this.generation && this.drawSprite(rows, scales, generation);
    requestAnimationFrame(() => setTimeout(later, 0));
  }

  private drawSprite(
    rows: Float32Array | null,
    scales: (ColourScale | null)[],
    generation: number,
  ): void {
    const ctx = this.painter.getContext("2d");
    if (!this.layout || !ctx || !rows) return;
    const [h, w] = this.layout.grid;
    [this.painter.width, this.painter.height] = [w, h * this.bands];
    const pixels = ctx.createImageData(w, h * this.bands);
    scales.forEach((scale, r) => this.fill(pixels.data, r * h * w * 4, rows, r, scale));
    ctx.putImageData(pixels, 0, 0);
    this.sprite.src = this.painter.toDataURL();
    this.sprite
      .decode()
      .then(() => {
        if (generation !== this.generation) return;
        this.spriteReady = true;
        this.place(this.canvasRow);
        [this.sprite.hidden, this.canvas.hidden] = [false, true];
      })
      .catch(() => undefined); // a newer slice replaced it, or it failed: the canvas stays
  }

  /** The sprite shows band `row`. */
  private place(row: number): void {
    const percent = this.bands > 1 ? (100 * row) / (this.bands - 1) : 0;
    const position = `0% ${percent}%`;
    if (position === this.position) return;
    this.position = position;
    this.sprite.style.objectPosition = position;
  }

  /** Row `row`'s patch colours into `data` from byte `at` (no array made per pixel). */
  private fill(
    data: Uint8ClampedArray,
    at: number,
    rows: Float32Array | null,
    row: number,
    scale: ColourScale | null,
  ): void {
    if (!this.layout || !rows || !scale) return;
    const { grid, prefix, tokens } = this.layout;
    for (let i = 0; i < grid[0] * grid[1]; i++) {
      const value = rows[row * tokens + prefix + i];
      if (!Number.isFinite(value)) continue;
      data.set(scale.colour(value), at + i * 4);
      data[at + i * 4 + 3] = HEAT_OPACITY * 255;
    }
  }
}

function sameValues(a: Float32Array | null, b: Float32Array | null): boolean {
  if (!a || !b || a.length !== b.length) return a === b;
  for (let i = 0; i < a.length; i++)
    if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return false;
  return true;
}
