/**
 * `npm run bench:compare -- DIR`: the worker throughput of this tree against another build of the
 * project (DIR: a checkout of another commit, built with `npm run build`), interleaved in one process.
 *
 * On a shared machine, throughput swings by tens of percent between runs a minute apart, more than
 * most changes to the worker are worth; `worker-throughput` compares with raw BullMQ, not between
 * versions. Here both versions run in the same process, each with its own worker, prefix and ledger
 * schema, and take turns draining the same number of no-op jobs (created by their own `emit`, so
 * each has its ledger row), in ABBA order: a slow minute of the machine falls on both. Each turn is
 * timed from its first `active` event to its last outcome; a version's figure is its jobs over its
 * time, all turns together, with its process CPU time per job and the ratio of this tree's to DIR's.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import knexFactory, { type Knex } from 'knex';
import type * as Api from '../src/index.js';
import type * as Logging from '../src/core/logger.js';
import type { Logger } from '../src/core/logger.js';
import { deleteKeys } from '../test/helpers.js';
import {
  BENCH_DIR,
  DATABASE_URL,
  REDIS_URL,
  benchNamespace,
  emitMany,
  formatSuite,
  median,
  progress,
  round,
  runMain,
  timeDrain,
  writeResult,
  type BenchRow,
} from './lib.js';
import { redisConnections } from './package.js';

const USAGE = `Usage: npm run bench:compare -- DIR [--turns N] [--jobs N]

Worker throughput of this tree against the build in DIR (another checkout, built), interleaved in
one process. --turns: turns per version (default 12); --jobs: jobs per turn (default 5000).

Example:
  git worktree add /tmp/effects-main main && (cd /tmp/effects-main && npm ci && npm run build)
  npm run bench:compare -- /tmp/effects-main`;

const EVENT = 'bench_tick';
const EFFECT = 'bench-noop';
const CONCURRENCY = 50;

interface Version {
  label: string;
  api: typeof Api;
  logging: Partial<typeof Logging>;
}

/** The package as built in `root`'s dist/, as users run it. */
async function loadVersion(label: string, root: string): Promise<Version> {
  const dist = path.join(root, 'dist');
  if (!fs.existsSync(path.join(dist, 'index.js'))) throw new Error(`${dist}/index.js not found: run \`npm run build\` in ${root}`);
  const load = (file: string) => import(pathToFileURL(path.join(dist, file)).href);
  return { label, api: (await load('index.js')) as typeof Api, logging: (await load('core/logger.js')) as Partial<typeof Logging> };
}

/** One version's worker on its own prefix and schema, with what it needs to take a turn. */
async function startSide(version: Version, admin: Knex) {
  const { api } = version;
  const { prefix, schema } = benchNamespace(`compare_${version.label}`);
  const config = api.validateConfig({
    effects: [api.defineEffect({ name: EFFECT, on: EVENT, concurrency: CONCURRENCY, run() {} })],
  });
  const flags = { redis: REDIS_URL, db: DATABASE_URL, prefix, schema };
  await api.migrate(admin, schema);
  const emitter = api.createEffects(config, { flags });
  // As `effects worker` logs at info, into /dev/null: with the version's own log destination where
  // it has one (versions before logDestination wrote asynchronously, a write per few lines).
  const destination = version.logging.logDestination?.('/dev/null') ?? (await import('pino')).pino.destination({ dest: '/dev/null', sync: false });
  const logger: Logger = api.createLogger({
    level: 'info',
    pretty: false,
    secrets: [REDIS_URL, DATABASE_URL],
    destination: destination as unknown as NodeJS.WritableStream,
  });
  const runtime = new api.Runtime(api.resolveSettings(config, flags, {}), { logger });
  const queue = new Queue(EFFECT, { connection: runtime.redis, prefix });
  // Paused between turns: jobs are created with no worker taking them, and only processing is timed.
  await queue.pause();
  const handle = await api.startWorker(runtime, { concurrency: CONCURRENCY });
  let nextId = 1;
  const turns: Array<{ ms: number; cpuUs: number; jobs: number }> = [];
  return {
    label: version.label,
    turns,
    async turn(jobs: number) {
      await emitMany(emitter, EVENT, jobs, nextId);
      nextId += jobs;
      const drained = timeDrain(handle.workers[0], jobs);
      const cpu = process.cpuUsage();
      await queue.resume();
      const { ms, failed } = await drained;
      const used = process.cpuUsage(cpu);
      await queue.pause();
      if (failed) throw new Error(`${version.label}: ${failed} jobs failed`);
      turns.push({ ms, cpuUs: used.user + used.system, jobs });
    },
    async close() {
      await handle.close({ timeoutMs: 10_000 });
      await emitter.close();
      await queue.obliterate({ force: true }).catch(() => undefined);
      await queue.close();
      await admin.raw('drop schema if exists ?? cascade', [schema]);
      const redis = redisConnections.createRedis({ url: REDIS_URL, cluster: false });
      await deleteKeys(redis, `${prefix}:*`);
      redis.disconnect();
    },
  };
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { turns: { type: 'string', default: '12' }, jobs: { type: 'string', default: '5000' }, help: { type: 'boolean' } },
    });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  const turns = Number(values.turns);
  const jobs = Number(values.jobs);
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1 || !Number.isInteger(turns) || turns < 1 || !Number.isInteger(jobs) || jobs < 100) {
    process.stderr.write(`Expected one directory, --turns a whole number >= 1 and --jobs a whole number >= 100.\n\n${USAGE}\n`);
    return 2;
  }

  let baseline: Version;
  let current: Version;
  try {
    baseline = await loadVersion('baseline', path.resolve(positionals[0]));
    current = await loadVersion('this tree', path.resolve(BENCH_DIR, '..'));
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    return 2;
  }
  const started = performance.now();
  const admin = knexFactory({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 2 } });
  const sides = [await startSide(baseline, admin), await startSide(current, admin)];
  try {
    for (let turn = 0; turn < turns; turn += 1) {
      // ABBA, so neither version always runs first after the other.
      for (const side of turn % 2 === 0 ? sides : [...sides].reverse()) await side.turn(jobs);
      progress(`turn ${turn + 1}/${turns}: ${sides.map((s) => `${s.label} ${Math.round((jobs / s.turns.at(-1)!.ms) * 1000)} jobs/s`).join(', ')}`);
    }
  } finally {
    for (const side of sides) await side.close();
    await admin.destroy();
  }

  const figures = sides.map((side) => {
    const ms = side.turns.reduce((sum, t) => sum + t.ms, 0);
    const count = side.turns.reduce((sum, t) => sum + t.jobs, 0);
    return { jobsPerSec: (count / ms) * 1000, cpuUsPerJob: side.turns.reduce((sum, t) => sum + t.cpuUs, 0) / count };
  });
  const [base, mine] = figures;
  // Turn by turn, the two versions ran back to back: the median of those ratios is another view.
  const paired = median(sides[1].turns.map((t, i) => sides[0].turns[i].ms / t.ms));
  const rows: BenchRow[] = [
    { metric: `baseline (${positionals[0]}) worker`, value: round(base.jobsPerSec, 0), unit: 'jobs/s' },
    { metric: 'this tree worker', value: round(mine.jobsPerSec, 0), unit: 'jobs/s', baseline: round(base.jobsPerSec, 0), ratio: round(mine.jobsPerSec / base.jobsPerSec, 3) },
    { metric: 'worker process CPU per job, baseline', value: round(base.cpuUsPerJob, 0), unit: 'µs' },
    { metric: 'worker process CPU per job, this tree', value: round(mine.cpuUsPerJob, 0), unit: 'µs', baseline: round(base.cpuUsPerJob, 0), ratio: round(mine.cpuUsPerJob / base.cpuUsPerJob, 3) },
  ];
  const suite = { name: 'compare-worker', description: `this tree against ${positionals[0]}, ${turns} turns of ${jobs} no-op jobs each, concurrency ${CONCURRENCY}, interleaved in one process` };
  const result = {
    rows,
    notes: [
      `paired ratio (median over turns of this tree's jobs/s over the baseline's, back to back): ${round(paired, 3)}`,
      "CPU per job is the whole process's during a turn: the other version's worker idles meanwhile, and that idle cost falls on both alike",
    ],
  };
  const file = await writeResult(suite, result, { durationMs: performance.now() - started });
  process.stdout.write(`\n${formatSuite(suite, result)}\n  written to ${path.relative(process.cwd(), file)}\n`);
  return 0;
}

runMain(() => main(process.argv.slice(2)));
