/**
 * A small SVG trajectory chart, used where bqplot cannot run: the self-contained HTML export.
 * In a live notebook the kernel draws the same lines with bqplot.
 */

const SVG = "http://www.w3.org/2000/svg";
const W = 420;
const H = 200;
const PAD = { left: 40, right: 12, top: 12, bottom: 28 };

export interface Series {
  token: number; // -1 = mean of image tokens
  label: string;
  colour: string;
  values: number[];
}

export class TrajectoryChart {
  readonly root: SVGSVGElement;

  constructor(
    private onLayer: (layer: number) => void,
    private onHover: (token: number) => void,
  ) {
    this.root = document.createElementNS(SVG, "svg");
    this.root.setAttribute("class", "vl-trajectories");
    this.root.setAttribute("viewBox", `0 0 ${W} ${H}`);
    this.root.setAttribute("role", "img");
    this.root.setAttribute("aria-label", "Trajectories");
  }

  draw(
    layers: number[],
    series: Series[],
    current: number,
    range: [number, number],
    title: string,
  ): void {
    const [lo, hi] = range[1] > range[0] ? range : [range[0], range[0] + 1];
    const x = (layer: number) =>
      PAD.left +
      ((layer - layers[0]) / Math.max(1, layers[layers.length - 1] - layers[0])) *
        (W - PAD.left - PAD.right);
    const y = (v: number) => H - PAD.bottom - ((v - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);
    const parts: SVGElement[] = [];
    parts.push(text(PAD.left, 10, title, "vl-traj-title"));
    parts.push(line(PAD.left, y(lo), W - PAD.right, y(lo), "vl-axis"));
    parts.push(line(PAD.left, y(lo), PAD.left, y(hi), "vl-axis"));
    parts.push(
      text(4, y(hi) + 4, hi.toFixed(2), "vl-tick"),
      text(4, y(lo), lo.toFixed(2), "vl-tick"),
    );
    for (const layer of layers) {
      const label = text(x(layer) - 3, H - 10, String(layer), "vl-tick");
      label.addEventListener("click", () => this.onLayer(layer));
      parts.push(label);
    }
    parts.push(line(x(current), y(lo), x(current), y(hi), "vl-marker"));
    series.forEach((s) => {
      const path = document.createElementNS(SVG, "polyline");
      path.setAttribute("points", s.values.map((v, j) => `${x(layers[j])},${y(v)}`).join(" "));
      path.setAttribute("class", "vl-series");
      path.setAttribute("stroke", s.colour);
      path.setAttribute("data-token", String(s.token));
      const tip = document.createElementNS(SVG, "title");
      tip.textContent = s.label;
      path.append(tip);
      path.addEventListener("mouseenter", () => this.onHover(s.token));
      parts.push(path);
    });
    const hit = document.createElementNS(SVG, "rect");
    hit.setAttribute("x", String(PAD.left));
    hit.setAttribute("y", String(PAD.top));
    hit.setAttribute("width", String(W - PAD.left - PAD.right));
    hit.setAttribute("height", String(H - PAD.top - PAD.bottom));
    hit.setAttribute("class", "vl-hit");
    hit.addEventListener("click", (e) => {
      const box = this.root.getBoundingClientRect();
      const px = ((e.clientX - box.left) / box.width) * W;
      const nearest = layers.reduce((a, b) => (Math.abs(x(b) - px) < Math.abs(x(a) - px) ? b : a));
      this.onLayer(nearest);
    });
    this.root.replaceChildren(hit, ...parts);
  }
}

function line(x1: number, y1: number, x2: number, y2: number, cls: string): SVGLineElement {
  const el = document.createElementNS(SVG, "line");
  el.setAttribute("x1", String(x1));
  el.setAttribute("y1", String(y1));
  el.setAttribute("x2", String(x2));
  el.setAttribute("y2", String(y2));
  el.setAttribute("class", cls);
  return el;
}

function text(x: number, y: number, content: string, cls: string): SVGTextElement {
  const el = document.createElementNS(SVG, "text");
  el.setAttribute("x", String(x));
  el.setAttribute("y", String(y));
  el.setAttribute("class", cls);
  el.textContent = content;
  return el;
}
