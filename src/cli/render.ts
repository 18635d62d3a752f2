import Table from 'cli-table3';
import type { ChalkInstance } from 'chalk';
import { formatDuration } from '../core/duration.js';

/** A borderless table that reads well in a terminal and in a pasted incident channel. */
export function table(head: string[], rows: Array<Array<string | number>>, chalk: ChalkInstance): string {
  const t = new Table({
    head: head.map((h) => chalk.bold(h)),
    style: { head: [], border: [], compact: true },
    chars: {
      top: '', 'top-mid': '', 'top-left': '', 'top-right': '',
      bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
      left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '  ',
    },
  });
  for (const row of rows) t.push(row.map(String));
  return t.toString();
}

export const age = (ms: number | null) => (ms === null ? '-' : formatDuration(ms));

/** Zero is quiet, anything else stands out: a triage table is read for its non-zeros. */
export function count(n: number, chalk: ChalkInstance, color: 'red' | 'yellow' | 'green' = 'yellow'): string {
  return n === 0 ? chalk.dim('0') : chalk[color](String(n));
}
