// A small SVG line chart: one chart per metric key, x = round, points appended as they arrive.
import { h, s } from "./dom.js";

const W = 520, H = 260, M = { left: 56, right: 16, top: 16, bottom: 40 };
const COLOURS = ["#0b5cad", "#b35900", "#116329", "#8250df", "#a40e26", "#1b7c83"];

function ticks(lo, hi, count = 5) {
  if (lo === hi) { lo -= 1; hi += 1; }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((v) => raw <= v);
  const out = [];
  const first = Math.floor(lo / step), last = Math.ceil(hi / step);
  for (let i = first; i <= last; i++) out.push(+(i * step).toPrecision(12));
  return out;
}

function label(v) {
  return Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : String(+v.toFixed(3));
}

export class LineChart {
  constructor(title) {
    this.title = title;
    this.series = new Map(); // name -> Map(step -> value)
    this.svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title} by round` });
    this.legend = h("div", { class: "legend" });
    this.element = h("figure", { class: "chart card", dataset: { metric: title } },
      h("figcaption", {}, h("strong", {}, title), " ", h("span", { class: "muted points" }, "")),
      this.svg, this.legend);
  }

  add(name, step, value) {
    if (!this.series.has(name)) this.series.set(name, new Map());
    this.series.get(name).set(step, value);
  }

  get size() {
    let n = 0;
    for (const points of this.series.values()) n += points.size;
    return n;
  }

  render() {
    const all = [...this.series.values()].flatMap((m) => [...m.entries()]);
    this.svg.replaceChildren();
    this.legend.replaceChildren();
    this.element.querySelector(".points").textContent = `${this.size} point${this.size === 1 ? "" : "s"}`;
    this.element.dataset.points = String(this.size);
    if (!all.length) return;
    const xs = all.map(([x]) => x), ys = all.map(([, y]) => y);
    const xt = ticks(Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1));
    const yt = ticks(Math.min(...ys), Math.max(...ys));
    const [x0, x1, y0, y1] = [xt[0], xt.at(-1), yt[0], yt.at(-1)];
    const px = (x) => M.left + ((x - x0) / (x1 - x0 || 1)) * (W - M.left - M.right);
    const py = (y) => H - M.bottom - ((y - y0) / (y1 - y0 || 1)) * (H - M.top - M.bottom);
    for (const y of yt) {
      this.svg.append(s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: py(y), y2: py(y) }));
      this.svg.append(s("text", { x: M.left - 6, y: py(y) + 4, "text-anchor": "end" }, label(y)));
    }
    for (const x of xt.filter(Number.isInteger)) {
      this.svg.append(s("text", { x: px(x), y: H - M.bottom + 16, "text-anchor": "middle" }, String(x)));
    }
    this.svg.append(s("line", { class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
    this.svg.append(s("line", { class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom }));
    this.svg.append(s("text", { x: (M.left + W - M.right) / 2, y: H - 6, "text-anchor": "middle" }, "round"));
    [...this.series.entries()].forEach(([name, points], i) => {
      const colour = COLOURS[i % COLOURS.length];
      const sorted = [...points.entries()].sort((a, b) => a[0] - b[0]);
      const d = sorted.map(([x, y], j) => `${j ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" ");
      this.svg.append(s("path", { class: "series", d, stroke: colour }));
      for (const [x, y] of sorted) {
        this.svg.append(s("circle", { cx: px(x), cy: py(y), r: 3, fill: colour },
          s("title", {}, `${name} round ${x}: ${y}`)));
      }
      this.legend.append(h("span", {}, h("span", { class: `swatch c${i % COLOURS.length}` }), name));
    });
  }
}
