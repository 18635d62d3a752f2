import { readResults, renderRows, resetResults, RESULTS_FILE } from './results.js';

/** Starts a fresh results file; at the end prints every scenario's row as one table. */
export function setup(): void {
  resetResults();
}

export function teardown(): void {
  const { rows } = readResults();
  if (rows.length === 0) return;
  console.log(`\nFault-injection results (also in ${RESULTS_FILE}):\n\n${renderRows(rows)}\n`);
}
