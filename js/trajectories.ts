/**
 * Class-embedding trajectories as a small SVG chart: one line per token across layers, and a
 * marker at the current layer. New data rewrites the title and the lines in place (the axes only
 * when the layers or the range change); a layer change moves the marker alone.
 */

import { DASHES, LINES } from "./palette";
import { setAttr, setText } from "./panels";

const SVG = "http://www.w3.org/2000/svg";
const W = 460;
const H = 210;
const PAD = { left: 44, right: 150, top: 18, bottom: 28 };

export interface Line {
  token: number; // -1 = mean of image tokens
  label: string;
  colour: string;
  values: number[];
  baseline?: boolean; // the unperturbed model's line
  dash?: number[]; // its stroke pattern (on, off), from the palette
}

interface Series {
  group: SVGGElement;
  path: SVGPolylineElement; // with a <title> tooltip
  key: SVGLineElement; // the legend's sample of the line
  label: SVGTextElement;
}

export interface ChartData {
  layers: number[];
  lines: Line[];
  range: [number, number];
  title: string;
}

function node<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | number>,
  text?: string,
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

export class TrajectoryChart {
  readonly root: SVGSVGElement;
  private marker = node("line", {
    class: "vl-marker",
    stroke: LINES.marker,
    "stroke-dasharray": DASHES.marker.join(" "),
  });
  private title = node("text", { x: PAD.left, y: 12, class: "vl-traj-title" });
  private axes = node("g", {}); // axes, ticks and layer labels: redrawn when the layers or the range change
  private series = node("g", {}); // a line and its legend entry per token, rewritten in place
  private drawn: Series[] = []; // the elements of each line in `series`
  private data: ChartData | null = null;
  private dataKey = "";
  private axesKey = "";

  constructor(
    private onLayer: (layer: number) => void,
    private onHover: (token: number) => void,
  ) {
    this.root = node("svg", { class: "vl-trajectories", viewBox: `0 0 ${W} ${H}`, role: "img" });
    this.root.setAttribute("aria-label", "Trajectories");
    const hit = node("rect", {
      x: PAD.left,
      y: PAD.top,
      width: W - PAD.left - PAD.right,
      height: H - PAD.top - PAD.bottom,
      class: "vl-hit",
    });
    hit.addEventListener("click", (e) => this.onLayer(this.nearestLayer(e as MouseEvent)));
    this.root.append(hit, this.title, this.axes, this.marker, this.series);
  }

  private x(layer: number): number {
    const layers = this.data?.layers ?? [0, 1];
    const span = Math.max(1, layers[layers.length - 1] - layers[0]);
    return PAD.left + ((layer - layers[0]) / span) * (W - PAD.left - PAD.right);
  }

  private y(value: number): number {
    const [lo, hi] = this.data?.range ?? [0, 1];
    return H - PAD.bottom - ((value - lo) / (hi - lo || 1)) * (H - PAD.top - PAD.bottom);
  }

  /**
   * Draw the lines `key` names with the marker at `layer`. `data` is asked for only when `key` differs
   * from what is drawn: a layer change moves the marker alone, without computing the lines again.
   */
  draw(key: string, layer: number, data: () => ChartData): void {
    if (key !== this.dataKey) {
      this.dataKey = key;
      this.data = data();
      this.redraw();
    }
    this.setLayer(layer);
  }

  setLayer(layer: number): void {
    const name = String(layer); // written also when x is unchanged (another site's same column)
    if (this.marker.dataset.layer !== name) this.marker.dataset.layer = name;
    const x = String(this.x(layer));
    if (this.marker.getAttribute("x1") === x) return;
    this.marker.setAttribute("x1", x);
    this.marker.setAttribute("x2", x);
  }

  /** New data: the title and the lines are rewritten in place; the axes only when they differ. */
  private redraw(): void {
    const data = this.data!;
    setText(this.title, data.title);
    const axesKey = `${data.layers.join(",")}|${data.range.join(",")}`;
    if (axesKey !== this.axesKey) {
      this.axesKey = axesKey;
      this.drawAxes(data);
    }
    data.lines.forEach((line, i) => this.drawSeries(line, (this.drawn[i] ??= this.newSeries(i))));
    for (const extra of this.drawn.splice(data.lines.length)) extra.group.remove();
  }

  private drawAxes(data: ChartData): void {
    const [lo, hi] = data.range;
    this.marker.setAttribute("y1", String(this.y(lo)));
    this.marker.setAttribute("y2", String(this.y(hi)));
    const parts: SVGElement[] = [
      node("line", {
        x1: PAD.left,
        y1: this.y(lo),
        x2: W - PAD.right,
        y2: this.y(lo),
        class: "vl-axis",
      }),
      node("line", {
        x1: PAD.left,
        y1: this.y(lo),
        x2: PAD.left,
        y2: this.y(hi),
        class: "vl-axis",
      }),
      node("text", { x: 4, y: this.y(hi) + 4, class: "vl-tick" }, hi.toFixed(2)),
      node("text", { x: 4, y: this.y(lo), class: "vl-tick" }, lo.toFixed(2)),
    ];
    for (const layer of data.layers) {
      const label = node(
        "text",
        { x: this.x(layer) - 3, y: H - 10, class: "vl-tick" },
        String(layer),
      );
      label.addEventListener("click", () => this.onLayer(layer));
      parts.push(label);
    }
    this.axes.replaceChildren(...parts);
  }

  /** The elements of line `index`: its polyline (with a tooltip), legend key and legend label. */
  private newSeries(index: number): Series {
    const path = node("polyline", {});
    path.append(node("title", {}));
    const token = () => this.data?.lines[index]?.token ?? -1;
    path.addEventListener("mouseenter", () => this.onHover(token()));
    path.addEventListener("mouseleave", () => this.onHover(-1));
    const y = PAD.top + 4 + index * 14;
    const key = node("line", {
      x1: W - PAD.right + 10,
      y1: y,
      x2: W - PAD.right + 26,
      y2: y,
      class: "vl-legend-key",
    });
    const label = node("text", { x: W - PAD.right + 30, y: y + 4, class: "vl-tick" });
    const group = node("g", {});
    group.append(path, key, label);
    this.series.append(group);
    return { group, path, key, label };
  }

  /** Write `line` into the elements of a series, changing only what differs. */
  private drawSeries(line: Line, { path, key, label }: Series): void {
    const points = line.values
      .map((v, j) => (Number.isFinite(v) ? `${this.x(this.data!.layers[j])},${this.y(v)}` : ""))
      .filter(Boolean)
      .join(" ");
    setAttr(path, "points", points);
    setAttr(path, "class", line.baseline ? "vl-series vl-baseline" : "vl-series");
    setAttr(path, "stroke", line.colour);
    setAttr(path, "data-token", String(line.token));
    if (line.dash) setAttr(path, "stroke-dasharray", line.dash.join(" "));
    else path.removeAttribute("stroke-dasharray");
    setText(path.firstElementChild!, line.label);
    setAttr(key, "stroke", line.colour);
    setText(label, line.label);
  }

  private nearestLayer(e: MouseEvent): number {
    const box = this.root.getBoundingClientRect();
    const px = ((e.clientX - box.left) / box.width) * W;
    const layers = this.data?.layers ?? [0];
    return layers.reduce((a, b) => (Math.abs(this.x(b) - px) < Math.abs(this.x(a) - px) ? b : a));
  }
}
