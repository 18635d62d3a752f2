/**
 * The per-scenario result row: printed as each scenario ends, gathered in bench/results/faults.json,
 * and printed as one table when the suite ends (global-setup.ts).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Chalk } from 'chalk';
import { table } from '../../src/cli/render.js';
import { ROOT } from '../helpers.js';
import type { Oracle } from './harness.js';

export interface FaultRow {
  scenario: string;
  /** Events that happened (orders committed). */
  events: number;
  /** Effects owed (ledger rows). */
  owed: number;
  /** Effects done (ledger rows done). */
  done: number;
  /** Owed effects with no run, or not done at the end. A scenario fails on any. */
  lost: number;
  /** Runs beyond the first (at-least-once). */
  duplicateRuns: number;
  /** Worst recovery after a fault, ms; null where the scenario has no fault to recover from. */
  recoveryMs: number | null;
  /** What else the scenario measured, one short phrase. */
  notes?: string;
}

export const RESULTS_FILE = path.join(ROOT, 'bench/results/faults.json');

interface ResultsFile {
  startedAt: string;
  rows: FaultRow[];
}

/** Empties the results file at the start of a run (global setup). */
export function resetResults(): void {
  mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
  writeFileSync(RESULTS_FILE, `${JSON.stringify({ startedAt: new Date().toISOString(), rows: [] }, null, 2)}\n`);
}

export function readResults(): ResultsFile {
  try {
    return JSON.parse(readFileSync(RESULTS_FILE, 'utf8')) as ResultsFile;
  } catch {
    return { startedAt: new Date().toISOString(), rows: [] };
  }
}

/** Prints the scenario's row and adds it to bench/results/faults.json (files run one at a time). */
export function reportRow(row: FaultRow): void {
  const results = readResults();
  results.rows = [...results.rows.filter((r) => r.scenario !== row.scenario), row];
  mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
  writeFileSync(RESULTS_FILE, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\n${renderRows([row])}\n`);
}

export function rowFrom(scenario: string, oracle: Oracle, recoveryMs: number | null, notes?: string): FaultRow {
  return {
    scenario,
    events: oracle.events,
    owed: oracle.owed,
    done: oracle.done,
    lost: oracle.lost,
    duplicateRuns: oracle.duplicateRuns,
    recoveryMs,
    notes,
  };
}

export function renderRows(rows: FaultRow[]): string {
  const plain = new Chalk({ level: 0 });
  const ordered = [...rows].sort((a, b) => a.scenario.localeCompare(b.scenario, 'en', { numeric: true }));
  return table(
    ['scenario', 'events', 'owed', 'done', 'lost', 'dup runs', 'recovery', 'notes'],
    ordered.map((r) => [
      r.scenario,
      r.events,
      r.owed,
      r.done,
      r.lost,
      r.duplicateRuns,
      r.recoveryMs === null ? '-' : `${(r.recoveryMs / 1000).toFixed(1)} s`,
      r.notes ?? '',
    ]),
    plain,
  );
}
