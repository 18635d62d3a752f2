/**
 * The benchmark contract and its plumbing: what a suite returns, how a result is printed and stored,
 * and the small measuring helpers every suite shares (namespaces, percentiles, RSS sampling).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'bullmq';
import Table from 'cli-table3';
import chalk from 'chalk';

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
export const RESULTS_DIR = path.join(BENCH_DIR, 'results');
export const REDIS_URL = process.env.BENCH_REDIS_URL ?? process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const DATABASE_URL =
  process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** One measured figure. `baseline` and `ratio` compare it with a reference run in the same suite. */
export interface BenchRow {
  metric: string;
  value: number;
  unit: string;
  /** The reference figure this one is compared with (e.g. raw BullMQ jobs/s). */
  baseline?: number;
  /** value / baseline, or whatever ratio the target is stated on. */
  ratio?: number;
  /** The target in words, e.g. `ratio >= 0.75`. */
  target?: string;
  /** Whether the target was met; absent when the row has no target. */
  pass?: boolean;
}

export interface SuiteResult {
  rows: BenchRow[];
  /** Free text printed under the table: method, caveats, what was held equal. */
  notes?: string[];
  /** Paths of extra files the suite wrote (profiles, raw samples). */
  artifacts?: string[];
}

/** What every file in bench/suites/ exports as `suite`. */
export interface Suite {
  name: string;
  description: string;
  run(): Promise<SuiteResult>;
}

/** A BullMQ prefix and PostgreSQL schema of its own for one run: `bench_<suite>_<random>`. */
export function benchNamespace(suite: string): { prefix: string; schema: string } {
  const slug = suite.replace(/[^a-z0-9]+/gi, '_').toLowerCase().slice(0, 30);
  const name = `bench_${slug}_${Math.random().toString(36).slice(2, 8)}`;
  return { prefix: name, schema: name };
}

/** The middle value, or the mean of the two middle values for an even count. */
export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Nearest-rank percentile; `p` in 0..100. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export const round = (value: number, digits = 2) => Number(value.toFixed(digits));

export interface RssSample {
  peakMb: number;
  meanMb: number;
  samples: number;
}

/**
 * Samples this process's resident set size every `everyMs` until stopped. The timer is unref'd so a
 * forgotten sampler never keeps the process alive.
 */
export function sampleRss(everyMs = 100): { stop(): RssSample } {
  const values: number[] = [process.memoryUsage.rss()];
  const timer = setInterval(() => values.push(process.memoryUsage.rss()), everyMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      values.push(process.memoryUsage.rss());
      const mb = (bytes: number) => round(bytes / 1024 / 1024, 1);
      return {
        peakMb: mb(Math.max(...values)),
        meanMb: mb(values.reduce((a, b) => a + b, 0) / values.length),
        samples: values.length,
      };
    },
  };
}

/** Machine facts stored with every result, so figures from different hosts are not compared blindly. */
/**
 * CPU time (user + system, µs) used so far by the local Redis and PostgreSQL server processes, read
 * from /proc: on a machine where they share the cores with the process under test, their work per
 * job is part of what a throughput ratio measures. Undefined where /proc cannot tell (not Linux).
 */
export async function localServerCpuUs(): Promise<{ redis: number; postgres: number } | undefined> {
  const ticksPerSecond = 100; // USER_HZ: 100 on every Linux architecture Node.js runs on
  try {
    const totals = { redis: 0, postgres: 0 };
    for (const pid of await fs.readdir('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const server = name.startsWith('redis-server') ? 'redis' : name.startsWith('postgres') ? 'postgres' : undefined;
      if (!server) continue;
      // Fields after the name: state is the first, utime the 12th and stime the 13th.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      totals[server] += ((Number(fields[11]) + Number(fields[12])) / ticksPerSecond) * 1e6;
    }
    return totals;
  } catch {
    return undefined;
  }
}

export function machineInfo() {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    platform: `${os.platform()} ${os.release()}`,
    arch: os.arch(),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    totalMemMb: Math.round(os.totalmem() / 1024 / 1024),
    loadAvg: os.loadavg().map((l) => round(l)),
    node: process.version,
    commit: gitCommit(),
  };
}

function gitCommit(): string | undefined {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: BENCH_DIR, encoding: 'utf8' }).trim();
  } catch {
    return undefined;
  }
}

/** Writes bench/results/<suite>.json and returns its path. */
export async function writeResult(
  suite: Pick<Suite, 'name' | 'description'>,
  result: SuiteResult,
  extra: { durationMs: number },
): Promise<string> {
  await fs.mkdir(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${suite.name}.json`);
  const body = {
    suite: suite.name,
    description: suite.description,
    timestamp: new Date().toISOString(),
    durationMs: Math.round(extra.durationMs),
    machine: machineInfo(),
    ...result,
  };
  await fs.writeFile(file, `${JSON.stringify(body, null, 2)}\n`);
  return file;
}

const formatNumber = (n: number | undefined) =>
  n === undefined || Number.isNaN(n) ? '' : Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(2);

/** The suite's rows as a table; a missed target reads FAIL in red, so it cannot be overlooked. */
export function formatSuite(suite: Pick<Suite, 'name' | 'description'>, result: SuiteResult): string {
  const table = new Table({
    head: ['metric', 'value', 'unit', 'baseline', 'ratio', 'target', 'result'].map((h) => chalk.bold(h)),
    style: { head: [], border: [] },
  });
  for (const row of result.rows) {
    const verdict = row.pass === undefined ? '' : row.pass ? chalk.green('PASS') : chalk.red.bold('FAIL');
    table.push([
      row.metric,
      formatNumber(row.value),
      row.unit,
      formatNumber(row.baseline),
      formatNumber(row.ratio),
      row.target ?? '',
      verdict,
    ]);
  }
  const lines = [chalk.bold(`${suite.name}`) + chalk.dim(` — ${suite.description}`), table.toString()];
  for (const note of result.notes ?? []) lines.push(chalk.dim(`  · ${note}`));
  for (const artifact of result.artifacts ?? []) lines.push(chalk.dim(`  artifact: ${artifact}`));
  return lines.join('\n');
}

/**
 * Times one drain of `count` jobs by `worker`: from its first `active` event to the count-th
 * outcome, failures counted too. Its listeners are removed once it resolves, so a worker can be
 * timed turn after turn.
 */
export function timeDrain(worker: Worker, count: number): Promise<{ ms: number; failed: number }> {
  return new Promise((resolve) => {
    let first = 0;
    let finished = 0;
    let failed = 0;
    const onActive = () => {
      if (first === 0) first = performance.now();
    };
    const onCompleted = () => finish();
    const onFailed = () => {
      failed += 1;
      finish();
    };
    const finish = () => {
      finished += 1;
      if (finished < count) return;
      worker.off('active', onActive).off('completed', onCompleted).off('failed', onFailed);
      resolve({ ms: performance.now() - first, failed });
    };
    worker.on('active', onActive).on('completed', onCompleted).on('failed', onFailed);
  });
}

/** Emits `count` events with ids `firstId`, `firstId + 1`, ..., 32 at a time, as a busy app would. */
export async function emitMany(
  emitter: { emit(event: string, id: string): Promise<unknown> },
  event: string,
  count: number,
  firstId = 1,
): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: 32 }, async () => {
    while (next < count) {
      const id = firstId + next;
      next += 1;
      await emitter.emit(event, String(id));
    }
  });
  await Promise.all(lanes);
}

/**
 * Runs a bench script's `main` and exits with its code, or 1 with the stack when it throws. Scripts
 * close what they open, but a stray handle must not keep a finished run alive.
 */
export function runMain(main: () => Promise<number>): void {
  main().then(
    (code) => {
      process.exitCode = code;
      setTimeout(() => process.exit(code), 1000).unref();
    },
    (error: unknown) => {
      process.stderr.write(`${(error as Error).stack ?? error}\n`);
      process.exit(1);
    },
  );
}

/** Progress lines go to stderr so stdout holds only the tables. */
export function progress(message: string): void {
  process.stderr.write(chalk.dim(`  ${message}\n`));
}
