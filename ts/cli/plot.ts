/** A line chart as SVG, drawn offline: busbw against size, one line per algorithm. */

/** One line of the chart. */
export interface Series {
  name: string;
  /** `[x, y]` points; x > 0 (plotted on a log-2 axis). */
  points: [number, number][];
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function bytes(x: number): string {
  if (x >= 1 << 20) return `${x / (1 << 20)}M`;
  if (x >= 1 << 10) return `${x / (1 << 10)}K`;
  return `${x}`;
}

/** The chart: log-2 x axis labelled in bytes, linear y axis from 0, grid, legend. */
export function lineChart(series: Series[], title: string, xLabel: string, yLabel: string): string {
  const [w, h, left, right, top, bottom] = [900, 520, 70, 190, 40, 60];
  const all = series.flatMap((s) => s.points);
  const xs = all.map(([x]) => Math.log2(x));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const yMax = Math.max(...all.map(([, y]) => y), 1e-9) * 1.1;
  const px = (x: number) => left + ((Math.log2(x) - x0) / Math.max(x1 - x0, 1)) * (w - left - right);
  const py = (y: number) => h - bottom - (y / yMax) * (h - top - bottom);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="${w / 2}" y="22" text-anchor="middle" font-size="15">${escape(title)}</text>`,
  ];
  for (let k = 0; k <= 5; k++) {
    const y = (yMax * k) / 5;
    out.push(`<line x1="${left}" x2="${w - right}" y1="${py(y)}" y2="${py(y)}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 8}" y="${py(y) + 4}" text-anchor="end">${y.toFixed(y < 10 ? 2 : 1)}</text>`);
  }
  for (let e = Math.ceil(x0); e <= x1; e += 2) {
    const x = 2 ** e;
    out.push(`<line x1="${px(x)}" x2="${px(x)}" y1="${top}" y2="${h - bottom}" stroke="#eee"/>`);
    out.push(`<text x="${px(x)}" y="${h - bottom + 18}" text-anchor="middle">${bytes(x)}</text>`);
  }
  out.push(`<line x1="${left}" x2="${w - right}" y1="${h - bottom}" y2="${h - bottom}" stroke="black"/>`);
  out.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${h - bottom}" stroke="black"/>`);
  out.push(`<text x="${(left + w - right) / 2}" y="${h - 15}" text-anchor="middle">${escape(xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${(top + h - bottom) / 2}) rotate(-90)" text-anchor="middle">${escape(yLabel)}</text>`);
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts}"><title>${escape(s.name)}</title></polyline>`);
    for (const [x, y] of s.points) out.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="2.5" fill="${color}"/>`);
    const ly = top + 10 + i * 20;
    out.push(`<line x1="${w - right + 15}" x2="${w - right + 40}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="3"/>`);
    out.push(`<text x="${w - right + 46}" y="${ly + 4}">${escape(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
