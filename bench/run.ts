/**
 * `npm run bench [-- suite...]`: runs every bench/suites/*.ts (or the named ones) one after another,
 * prints a table per suite and writes bench/results/<suite>.json. A missed target is printed as FAIL
 * but does not fail the run (figures on a shared machine are noisy); only a crashing suite does.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import chalk from 'chalk';
import { BENCH_DIR, formatSuite, runMain, writeResult, type Suite } from './lib.js';

const SUITES_DIR = path.join(BENCH_DIR, 'suites');

async function availableSuites(): Promise<string[]> {
  const files = await fs.readdir(SUITES_DIR).catch(() => [] as string[]);
  return files
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => f.slice(0, -3))
    .sort();
}

async function loadSuite(name: string): Promise<Suite> {
  const module = (await import(pathToFileURL(path.join(SUITES_DIR, `${name}.ts`)).href)) as { suite?: Suite };
  if (!module.suite || typeof module.suite.run !== 'function') {
    throw new Error(`bench/suites/${name}.ts does not export \`suite\` with a run() function`);
  }
  return module.suite;
}

async function main(argv: string[]): Promise<number> {
  const available = await availableSuites();
  const requested = argv.filter((a) => !a.startsWith('-'));
  const unknown = requested.filter((n) => !available.includes(n));
  if (unknown.length) {
    process.stderr.write(`Unknown suite(s): ${unknown.join(', ')}. Available: ${available.join(', ') || 'none'}.\n`);
    return 2;
  }
  const names = requested.length ? requested : available;
  if (names.length === 0) {
    process.stderr.write('No suites in bench/suites/.\n');
    return 0;
  }

  const crashed: string[] = [];
  const missed: string[] = [];
  for (const name of names) {
    process.stderr.write(chalk.bold(`\n▶ ${name}\n`));
    const started = performance.now();
    try {
      const suite = await loadSuite(name);
      const result = await suite.run();
      const file = await writeResult(suite, result, { durationMs: performance.now() - started });
      process.stdout.write(`\n${formatSuite(suite, result)}\n`);
      process.stdout.write(chalk.dim(`  written to ${path.relative(process.cwd(), file)}\n`));
      if (result.rows.some((r) => r.pass === false)) missed.push(name);
    } catch (error) {
      crashed.push(name);
      process.stderr.write(chalk.red(`✖ ${name} crashed: ${(error as Error).stack ?? error}\n`));
    }
  }

  process.stdout.write('\n');
  if (missed.length) process.stdout.write(chalk.red.bold(`FAIL: target missed in ${missed.join(', ')}\n`));
  if (crashed.length) process.stdout.write(chalk.red.bold(`CRASHED: ${crashed.join(', ')}\n`));
  if (!missed.length && !crashed.length) process.stdout.write(chalk.green(`All targets met (${names.length} suite(s)).\n`));
  return crashed.length ? 1 : 0;
}

runMain(() => main(process.argv.slice(2)));
