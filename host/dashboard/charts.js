// Small inline-SVG charts: stacked bars of requests per provider over time,
// and p50/p99 latency lines. No library; sized to their container.

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(container, height) {
  const width = Math.max(280, Math.round(container.clientWidth || 600));
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  return { svg, width, height, left: 34, right: 6, top: 8, bottom: 18 };
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function axes(f, max, ticks, unit) {
  const plotH = f.height - f.top - f.bottom;
  for (let i = 0; i <= ticks; i++) {
    const y = f.top + plotH - (plotH * i) / ticks;
    f.svg.append(el("line", { class: i === 0 ? "axis" : "grid-line", x1: f.left, x2: f.width - f.right, y1: y, y2: y }));
    const value = (max * i) / ticks;
    const label = value >= 1000 ? `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)}k` : `${+value.toFixed(1)}`;
    f.svg.append(el("text", { x: f.left - 4, y: y + 3, "text-anchor": "end" }, label + (i === ticks ? unit : "")));
  }
}

function timeLabels(f, buckets, slot) {
  const n = buckets.length;
  for (const i of [0, Math.floor(n / 2), n - 1]) {
    if (!buckets[i]) continue;
    const d = new Date(buckets[i].t);
    const label = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}:${String(d.getSeconds()).padStart(2, "0")}`;
    const x = f.left + slot * i + slot / 2;
    f.svg.append(el("text", { x, y: f.height - 4, "text-anchor": i === 0 ? "start" : i === n - 1 ? "end" : "middle" }, label));
  }
}

/**
 * Stacked bars: for each time bucket, each provider's successful requests in
 * its colour, then all errors in red on top.
 * buckets: [{t, providers: {id: {ok, err}}}]; colour(id) → "c0".."c7".
 */
export function requestsChart(container, buckets, colour) {
  const f = frame(container, 180);
  let max = 0;
  for (const b of buckets) {
    let sum = 0;
    for (const v of Object.values(b.providers)) sum += v.ok + v.err;
    max = Math.max(max, sum);
  }
  max = niceMax(max);
  axes(f, max, 4, "");
  const plotH = f.height - f.top - f.bottom;
  const slot = (f.width - f.left - f.right) / Math.max(1, buckets.length);
  const barW = Math.max(2, slot * 0.72);
  buckets.forEach((b, i) => {
    const x = f.left + slot * i + (slot - barW) / 2;
    let y = f.top + plotH;
    let errors = 0;
    const lines = [];
    for (const [id, v] of Object.entries(b.providers)) {
      errors += v.err;
      lines.push(`${id}: ${v.ok} ok, ${v.err} errors`);
      if (v.ok === 0) continue;
      const h = (plotH * v.ok) / max;
      y -= h;
      f.svg.append(el("rect", { x, y, width: barW, height: h, class: colour(id) }));
    }
    if (errors > 0) {
      const h = (plotH * errors) / max;
      y -= h;
      f.svg.append(el("rect", { x, y, width: barW, height: h, class: "err" }));
    }
    if (lines.length) {
      const hit = el("rect", { x: f.left + slot * i, y: f.top, width: slot, height: plotH, fill: "transparent" });
      hit.append(el("title", {}, lines.join("\n")));
      f.svg.append(hit);
    }
  });
  timeLabels(f, buckets, slot);
  f.svg.setAttribute("aria-label", "Requests per provider over time");
  container.replaceChildren(f.svg);
}

/**
 * p50 and p99 latency lines; buckets: [{t, p50, p99}] with null where no
 * request finished.
 */
export function latencyChart(container, buckets) {
  const f = frame(container, 180);
  const max = niceMax(Math.max(0, ...buckets.map((b) => (b.p99 == null ? 0 : b.p99))));
  axes(f, max, 4, " ms");
  const plotH = f.height - f.top - f.bottom;
  const slot = (f.width - f.left - f.right) / Math.max(1, buckets.length);
  for (const key of ["p50", "p99"]) {
    let d = "";
    let pen = false;
    buckets.forEach((b, i) => {
      const v = b[key];
      if (v == null) {
        pen = false;
        return;
      }
      const x = f.left + slot * i + slot / 2;
      const y = f.top + plotH - (plotH * v) / max;
      d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
      pen = true;
    });
    if (d) f.svg.append(el("path", { d, class: `line ${key}` }));
    buckets.forEach((b, i) => {
      const v = b[key];
      if (v == null) return;
      const x = f.left + slot * i + slot / 2;
      const y = f.top + plotH - (plotH * v) / max;
      const dot = el("circle", { cx: x, cy: y, r: 2, class: `line ${key}` });
      dot.append(el("title", {}, `${key} ${Math.round(v)} ms`));
      f.svg.append(dot);
    });
  }
  timeLabels(f, buckets, slot);
  f.svg.setAttribute("aria-label", "Latency p50 and p99 over time");
  container.replaceChildren(f.svg);
}

/** The q-quantile (0..1) of a list of numbers, or null. */
export function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}
