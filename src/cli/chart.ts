/**
 * A plain-ASCII column chart for terminals and pasted incident notes: `#` for what has happened,
 * `.` for what is planned, one column per sample.
 */
export function asciiChart(
  values: number[],
  options: {
    /** Columns before this index are drawn as done (`#`), the rest as planned (`.`). */
    doneColumns: number;
    height?: number;
    formatY: (value: number) => string;
    /** Labels under the first and last column. */
    xLabels: [string, string];
  },
): string {
  const height = options.height ?? 8;
  const max = Math.max(...values, 0);
  const top = options.formatY(max);
  const width = Math.max(top.length, 1);
  const lines: string[] = [];
  for (let row = height; row >= 1; row--) {
    // A cell is filled when the value reaches the middle of its band, so small values still show.
    const threshold = ((row - 0.5) / height) * max;
    const cells = values.map((v, i) => (max > 0 && v >= threshold ? (i < options.doneColumns ? '#' : '.') : ' '));
    const label = row === height ? top : row === 1 ? '0' : '';
    lines.push(`${label.padStart(width)} |${cells.join('')}`);
  }
  lines.push(`${' '.repeat(width)} +${'-'.repeat(values.length)}`);
  const [left, right] = options.xLabels;
  const gap = Math.max(1, values.length - left.length - right.length);
  lines.push(`${' '.repeat(width + 2)}${left}${' '.repeat(gap)}${right}`);
  return lines.join('\n');
}
