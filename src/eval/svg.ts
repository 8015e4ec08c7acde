// Hand-written SVG line charts for the benchmark reports (no dependency): one x axis (linear, log2 or categorical
// positions), one y axis from the data (including 0 when asked), a line with markers per series, a legend and
// optional horizontal reference lines (e.g. speedup 1).

export interface Series {
  name: string;
  points: Array<[number, number]>;
  /** Drawn dashed (e.g. a prediction next to the measurement). */
  dashed?: boolean;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** 'log2' spaces powers of two evenly (batch sizes); 'linear' is the default. */
  xScale?: 'linear' | 'log2';
  /** Tick values on x (default: every x of the data); labels by xTickLabel. */
  xTicks?: number[];
  xTickLabel?: (x: number) => string;
  /** Start the y axis at 0. Default true. */
  yFromZero?: boolean;
  /** Horizontal dashed reference lines. */
  hLines?: Array<{ y: number; label: string }>;
  width?: number;
  height?: number;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Round numbers for tick labels: 1, 2 or 5 times a power of ten, about `n` ticks across [lo, hi]. */
export function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function fmt(x: number): string {
  return Number(x.toPrecision(4)).toString();
}

export function lineChart(o: ChartOptions): string {
  const W = o.width ?? 640;
  const H = o.height ?? 400;
  // The legend sits right of the plot; its width follows the longest series name (about 7 px per character).
  const legend = Math.max(...o.series.map((s) => s.name.length), 4) * 7 + 56;
  const m = { left: 64, right: legend, top: 40, bottom: 52 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const all = o.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (all.length === 0) throw new Error(`lineChart '${o.title}': no finite data points`);
  const tx = (x: number) => (o.xScale === 'log2' ? Math.log2(x) : x);
  const xs = o.xTicks ?? [...new Set(all.map((p) => p[0]))].sort((a, b) => a - b);
  if (o.xScale === 'log2' && [...xs, ...all.map((p) => p[0])].some((x) => !(x > 0))) {
    throw new Error(`lineChart '${o.title}': log2 x axis needs positive x values`);
  }
  let x0 = Math.min(...xs.map(tx), ...all.map((p) => tx(p[0])));
  let x1 = Math.max(...xs.map(tx), ...all.map((p) => tx(p[0])));
  if (x0 === x1) {
    x0 -= 1;
    x1 += 1;
  }
  const ys = [...all.map((p) => p[1]), ...(o.hLines ?? []).map((h) => h.y)];
  let y0 = Math.min(...ys);
  let y1 = Math.max(...ys);
  if (o.yFromZero ?? true) y0 = Math.min(0, y0);
  if (y0 === y1) y1 = y0 + 1;
  const yTicks = niceTicks(y0, y1);
  // The top tick must cover the largest value, so no point sits above the last grid line.
  if (yTicks.length > 1 && yTicks[yTicks.length - 1] < y1) {
    const step = yTicks[1] - yTicks[0];
    yTicks.push(Number((yTicks[yTicks.length - 1] + step).toPrecision(12)));
  }
  y0 = Math.min(y0, yTicks[0]);
  y1 = Math.max(y1, yTicks[yTicks.length - 1]);
  const px = (x: number) => m.left + ((tx(x) - x0) / (x1 - x0)) * pw;
  const py = (y: number) => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const label = o.xTickLabel ?? fmt;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(o.title)}</text>`);
  for (const t of yTicks) {
    const y = py(t).toFixed(1);
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#e0e0e0"/>`);
    out.push(`<text x="${m.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeXml(fmt(t))}</text>`);
  }
  for (const t of xs) {
    const x = px(t).toFixed(1);
    out.push(`<line x1="${x}" y1="${m.top + ph}" x2="${x}" y2="${m.top + ph + 5}" stroke="black"/>`);
    out.push(`<text x="${x}" y="${m.top + ph + 18}" text-anchor="middle">${escapeXml(label(t))}</text>`);
  }
  out.push(`<line x1="${m.left}" y1="${m.top + ph}" x2="${m.left + pw}" y2="${m.top + ph}" stroke="black"/>`);
  out.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + ph}" stroke="black"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  out.push(`<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel)}</text>`);
  for (const h of o.hLines ?? []) {
    const y = py(h.y).toFixed(1);
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#555" stroke-dasharray="5 4"/>`);
    out.push(`<text x="${m.left + pw - 4}" y="${Number(y) - 4}" text-anchor="end" fill="#555">${escapeXml(h.label)}</text>`);
  }
  o.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).sort((a, b) => a[0] - b[0]);
    if (pts.length > 1) {
      const d = pts.map(([x, y], j) => `${j ? 'L' : 'M'}${px(x).toFixed(1)} ${py(y).toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    }
    for (const [x, y] of pts) {
      out.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3.5" fill="${color}"><title>${escapeXml(`${s.name}: ${fmt(x)}, ${fmt(y)}`)}</title></circle>`);
    }
    const ly = m.top + 10 + i * 20;
    out.push(`<line x1="${m.left + pw + 14}" y1="${ly}" x2="${m.left + pw + 38}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    out.push(`<text x="${m.left + pw + 44}" y="${ly}" dominant-baseline="middle">${escapeXml(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
