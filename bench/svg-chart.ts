/**
 * A small hand-written SVG line chart for benchmark results: panels stacked vertically, each with
 * its own y scale, axes, grid and legend. No dependencies; the output opens in any browser.
 */

export interface Series {
  label: string;
  color: string;
  points: Array<{ x: number; y: number }>;
  /** Dashed line (e.g. a plan) instead of a solid one. */
  dashed?: boolean;
}

export interface Panel {
  title: string;
  yLabel: string;
  series: Series[];
}

const WIDTH = 860;
const PANEL_HEIGHT = 300;
const MARGIN = { top: 40, right: 24, bottom: 44, left: 64 };

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A "nice" step (1, 2, 5 x 10^n) giving about `count` ticks up to `max`. */
function tickStep(max: number, count = 5): number {
  if (max <= 0) return 1;
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power;
}

function panel(p: Panel, top: number, xMax: number, xLabel: string): string {
  const width = WIDTH - MARGIN.left - MARGIN.right;
  const height = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const yMaxRaw = Math.max(1, ...p.series.flatMap((s) => s.points.map((pt) => pt.y)));
  const yStep = tickStep(yMaxRaw);
  const yMax = Math.ceil(yMaxRaw / yStep) * yStep;
  const xStep = tickStep(xMax, 10);
  const x = (v: number) => MARGIN.left + (v / xMax) * width;
  const y = (v: number) => top + MARGIN.top + height - (v / yMax) * height;
  const out: string[] = [];
  out.push(`<text x="${MARGIN.left}" y="${top + 24}" font-size="15" font-weight="bold">${escape(p.title)}</text>`);
  for (let v = 0; v <= yMax + 1e-9; v += yStep) {
    out.push(`<line x1="${x(0)}" x2="${x(xMax)}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x(0) - 8}" y="${y(v) + 4}" font-size="11" text-anchor="end">${Number(v.toFixed(2))}</text>`);
  }
  for (let v = 0; v <= xMax + 1e-9; v += xStep) {
    out.push(`<line x1="${x(v)}" x2="${x(v)}" y1="${y(0)}" y2="${y(0) + 5}" stroke="#333"/>`);
    out.push(`<text x="${x(v)}" y="${y(0) + 18}" font-size="11" text-anchor="middle">${Number(v.toFixed(2))}</text>`);
  }
  out.push(`<line x1="${x(0)}" x2="${x(xMax)}" y1="${y(0)}" y2="${y(0)}" stroke="#333"/>`);
  out.push(`<line x1="${x(0)}" x2="${x(0)}" y1="${y(0)}" y2="${y(yMax)}" stroke="#333"/>`);
  out.push(`<text x="${x(xMax / 2)}" y="${y(0) + 36}" font-size="12" text-anchor="middle">${escape(xLabel)}</text>`);
  out.push(
    `<text transform="translate(${16},${y(yMax / 2)}) rotate(-90)" font-size="12" text-anchor="middle">${escape(p.yLabel)}</text>`,
  );
  for (const s of p.series) {
    const points = s.points.map((pt) => `${x(pt.x).toFixed(1)},${y(pt.y).toFixed(1)}`).join(' ');
    out.push(
      `<polyline fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${points}"/>`,
    );
  }
  p.series.forEach((s, i) => {
    const lx = x(0) + 12 + i * 230;
    const ly = top + MARGIN.top + 4;
    out.push(
      `<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    out.push(`<text x="${lx + 30}" y="${ly + 4}" font-size="12">${escape(s.label)}</text>`);
  });
  return out.join('\n');
}

/** Stacked panels sharing an x axis from 0 to `xMax`. */
export function svgChart(panels: Panel[], options: { xMax: number; xLabel: string }): string {
  const height = PANEL_HEIGHT * panels.length;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...panels.map((p, i) => panel(p, i * PANEL_HEIGHT, options.xMax, options.xLabel)),
    '</svg>',
    '',
  ].join('\n');
}
