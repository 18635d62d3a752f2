/**
 * `effects poison list --by-error` over 100k failed jobs against the naive way: BullMQ's
 * `queue.getFailed()` (every job, every field, stack traces included) plus grouping by the same
 * error fingerprint in JavaScript.
 *
 * The jobs are written as a BullMQ worker leaves them after 5 failed attempts (fixtures/failed-jobs.ts:
 * every field, five stack traces each, a dozen error shapes). Each run is a fresh process
 * (fixtures/poison-list-child.mjs) so each side's peak RSS is its own: the effects side runs the real
 * CLI code path (`run(argv)` of dist/cli/main.js: config lookup, connection, queue discovery, the
 * paged Lua scan, grouping, JSON output); the naive side connects, reads and groups. Each side's
 * clock starts after its modules are loaded. Runs alternate (effects, naive, effects, ...) and each
 * side reports its median.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRedis } from '../../src/queue/redis.js';
import { deleteKeys } from '../../test/helpers.js';
import { writeFailedJobs } from '../fixtures/failed-jobs.js';
import { REDIS_URL, benchNamespace, median, progress, round, type BenchRow, type Suite } from '../lib.js';

const JOBS = Number(process.env.BENCH_POISON_JOBS ?? 100_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const QUEUE = 'notify-crm';
const SPEEDUP_TARGET = 8;
const RSS_TARGET_MB = 200;
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/poison-list-child.mjs');

interface ChildRun {
  ms: number;
  maxRssMb: number;
  total: number;
  groups: number;
}

function runChild(args: string[]): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const line = stderr.trim().split('\n').pop() ?? '';
      try {
        if (code !== 0) throw new Error(`exit ${code}`);
        resolve(JSON.parse(line) as ChildRun);
      } catch (error) {
        reject(new Error(`${CHILD} ${args.join(' ')} failed (${(error as Error).message}):\n${stderr}`));
      }
    });
  });
}

export const suite: Suite = {
  name: 'poison-list',
  description: `poison list --by-error over ${JOBS.toLocaleString('en')} failed jobs vs getFailed() + grouping in JS`,
  async run() {
    const { prefix } = benchNamespace('poison-list');
    const redis = createRedis({ url: REDIS_URL, cluster: false });
    try {
      progress(`writing ${JOBS} failed jobs (5 attempts, 5 stack traces each) under ${prefix}`);
      await writeFailedJobs(redis, { prefix, queue: QUEUE, count: JOBS });

      const effects: ChildRun[] = [];
      const naive: ChildRun[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        progress(`round ${round + 1}/${ROUNDS}: effects poison list --by-error`);
        effects.push(await runChild(['cli', 'poison', 'list', '--by-error', '--json', '--prefix', prefix, '--redis', REDIS_URL]));
        progress(`round ${round + 1}/${ROUNDS}: getFailed() + grouping`);
        naive.push(await runChild(['naive', REDIS_URL, prefix, QUEUE, '5']));
      }
      for (const run of [...effects, ...naive]) {
        if (run.total !== JOBS) throw new Error(`a run saw ${run.total} poison pills, expected ${JOBS}`);
      }
      if (effects[0].groups !== naive[0].groups) {
        throw new Error(`effects found ${effects[0].groups} error groups, the naive way ${naive[0].groups}`);
      }

      const effectsMs = median(effects.map((r) => r.ms));
      const naiveMs = median(naive.map((r) => r.ms));
      const effectsRss = Math.max(...effects.map((r) => r.maxRssMb));
      const naiveRss = Math.max(...naive.map((r) => r.maxRssMb));
      const speedup = naiveMs / effectsMs;
      const rows: BenchRow[] = [
        { metric: 'naive: getFailed() + group, time', value: round(naiveMs / 1000), unit: 's' },
        { metric: 'naive: peak RSS', value: round(naiveRss, 1), unit: 'MB' },
        {
          metric: 'effects poison list --by-error, time',
          value: round(effectsMs / 1000),
          unit: 's',
          baseline: round(naiveMs / 1000),
          ratio: round(speedup, 1),
          target: `>= ${SPEEDUP_TARGET}x faster`,
          pass: speedup >= SPEEDUP_TARGET,
        },
        {
          metric: 'effects poison list --by-error, peak RSS',
          value: round(effectsRss, 1),
          unit: 'MB',
          baseline: round(naiveRss, 1),
          target: `<= ${RSS_TARGET_MB} MB`,
          pass: effectsRss <= RSS_TARGET_MB,
        },
        { metric: 'jobs scanned per second (effects)', value: Math.round(JOBS / (effectsMs / 1000)), unit: 'jobs/s' },
      ];
      return {
        rows,
        notes: [
          `${JOBS} failed jobs in one queue, ${effects[0].groups} error groups; median of ${ROUNDS} alternating run(s) per side, each in a fresh process.`,
          'Effects side: the CLI code path in-process (run(argv)), from config lookup to the JSON written; naive side: connect, getFailed() + getDelayed(), group by the same fingerprint.',
          'Peak RSS is the child process\'s maxRSS (getrusage), Node\'s own baseline included.',
        ],
      };
    } finally {
      progress('cleaning up');
      await deleteKeys(redis, `${prefix}:*`);
      redis.disconnect();
    }
  },
};
