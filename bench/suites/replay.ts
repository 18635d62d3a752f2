/**
 * `replay` throughput and pacing.
 *
 * Unthrottled: 100k failed jobs of an effect, each with its ledger row (status failed), plus 10k
 * failed jobs that the filter leaves out (2 attempts, below --min-attempts 5), written as a BullMQ
 * worker leaves them (fixtures/failed-jobs.ts). Twice: filtered by --since and --min-attempts (which
 * Redis decides, page by page in one script call), and by --grep (which the client decides). The
 * clock covers the whole `replay()` call as the CLI makes it with --yes: filter checks, the paged
 * scan, the batched retry script, the ledger updates (status pending, replay_count + 1) and the audit
 * record. The brake is off: no worker runs here, so its sample would never finish (the brake costs
 * its wait, not throughput). The baseline
 * is BullMQ's own way with the same semantics, `job.retry('failed', { resetAttemptsMade: true })`,
 * 100 jobs in flight at a time, on 10k jobs of another queue (no ledger).
 *
 * Paced: --rate 2000/s over 10k jobs and --rate 50/s over 250 jobs; the achieved rate is jobs
 * replayed over the wall time of the call, which must be within 5% of the asked rate.
 */
import { Job, Queue } from 'bullmq';
import knexFactory from 'knex';
import { resolveSettings } from '../../src/config/settings.js';
import { Runtime } from '../../src/core/runtime.js';
import { migrate } from '../../src/ledger/migrate.js';
import { replay, type ReplayOptions } from '../../src/ops/replay.js';
import { jobIdForRow } from '../../src/queue/keys.js';
import { createRedis } from '../../src/queue/redis.js';
import { deleteKeys } from '../../test/helpers.js';
import { writeFailedJobs } from '../fixtures/failed-jobs.js';
import { DATABASE_URL, REDIS_URL, benchNamespace, progress, round, sampleRss, type BenchRow, type Suite } from '../lib.js';

const JOBS = Number(process.env.BENCH_REPLAY_JOBS ?? 100_000);
const OTHERS = Math.round(JOBS / 10);
const BASELINE_JOBS = Math.min(JOBS, 10_000);
const THROUGHPUT_TARGET = 20_000;
const RATE_TOLERANCE = 0.05;
const PACED: Array<{ rate: number; jobs: number }> = [
  { rate: 2000, jobs: 10_000 },
  { rate: 50, jobs: 250 },
];

export const suite: Suite = {
  name: 'replay',
  description: `replay of ${JOBS.toLocaleString('en')} failed jobs (filtered, ledger updated) and --rate accuracy`,
  async run() {
    const { prefix, schema } = benchNamespace('replay');
    const redis = createRedis({ url: REDIS_URL, cluster: false });
    const db = knexFactory({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 4 } });
    const runtime = new Runtime(
      resolveSettings(undefined, { redis: REDIS_URL, db: DATABASE_URL, prefix, schema }, {}),
    );
    try {
      await migrate(db, schema);

      /** JOBS failed jobs of `queue` with their ledger rows (status failed), and OTHERS the filter leaves out. */
      const prepare = async (queue: string) => {
        progress(`${queue}: owing ${JOBS} ledger rows and writing their failed jobs, plus ${OTHERS} jobs the filter leaves out`);
        const rowIds: string[] = [];
        for (let from = 0; from < JOBS; from += 5000) {
          const rows = Array.from({ length: Math.min(5000, JOBS - from) }, (_, k) => ({
            event: 'order_placed',
            event_id: String(from + k),
            effect: queue,
            status: 'failed',
            attempts: 5,
          }));
          const inserted = (await db.withSchema(schema).table('ledger').insert(rows).returning('id')) as Array<{ id: string }>;
          rowIds.push(...inserted.map((r) => String(r.id)));
        }
        await writeFailedJobs(redis, {
          prefix,
          queue,
          count: JOBS,
          jobId: (i) => jobIdForRow(rowIds[i]),
          data: (i) => ({ event: 'order_placed', id: String(i) }),
        });
        await writeFailedJobs(redis, { prefix, queue, count: OTHERS, attempts: 2, jobId: (i) => `other-${i}` });
      };

      /** One unthrottled replay() call, as the CLI makes it with --yes; checked, then its keys dropped. */
      const measure = async (queue: string, filter: Pick<ReplayOptions, 'grep' | 'since' | 'minAttempts'>) => {
        const rss = sampleRss(50);
        const started = performance.now();
        const result = await replay(runtime, { queues: [queue], ...filter, brake: false, actor: 'bench', reason: 'benchmark' });
        const ms = performance.now() - started;
        const memory = rss.stop();
        if (result.replayed !== JOBS) throw new Error(`${queue}: replayed ${result.replayed}, expected ${JOBS}`);
        const [{ count }] = (await db
          .withSchema(schema)
          .table('ledger')
          .where({ effect: queue, status: 'pending', replay_count: 1 })
          .count('* as count')) as Array<{ count: string }>;
        if (Number(count) !== JOBS) throw new Error(`${queue}: ${count} ledger rows replayed, expected ${JOBS}`);
        await deleteKeys(redis, `${prefix}:${queue}:*`);
        return { jobsPerSec: JOBS / (ms / 1000), ms, peakMb: memory.peakMb };
      };

      await prepare('notify-crm');
      progress('replay --queue --since --min-attempts (decided in Redis), unthrottled, ledger and audit on');
      const inRedis = await measure('notify-crm', { since: Date.now() - 86_400_000, minAttempts: 5 });
      await prepare('send-email');
      progress('replay --grep (decided by the client), unthrottled, ledger and audit on');
      const byGrep = await measure('send-email', { grep: 'order_placed|Customer', minAttempts: 5 });

      progress(`baseline: job.retry('failed', { resetAttemptsMade: true }) on ${BASELINE_JOBS} jobs, 100 at a time`);
      await writeFailedJobs(redis, { prefix, queue: 'retry-baseline', count: BASELINE_JOBS });
      const queue = new Queue('retry-baseline', { connection: redis, prefix });
      const ids = await redis.zrange(`${prefix}:retry-baseline:failed`, 0, -1);
      const baselineStarted = performance.now();
      for (let i = 0; i < ids.length; i += 100) {
        await Promise.all(
          ids.slice(i, i + 100).map(async (id) => {
            const job = await Job.fromId(queue, id);
            await job!.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
          }),
        );
      }
      const baselinePerSec = BASELINE_JOBS / ((performance.now() - baselineStarted) / 1000);
      await queue.close();

      const rows: BenchRow[] = [];
      for (const [label, figures] of [
        ['replay --queue --since --min-attempts', inRedis],
        ['replay --grep', byGrep],
      ] as const) {
        rows.push(
          {
            metric: `${label}, unthrottled`,
            value: Math.round(figures.jobsPerSec),
            unit: 'jobs/s',
            baseline: Math.round(baselinePerSec),
            ratio: round(figures.jobsPerSec / baselinePerSec, 1),
            target: `>= ${THROUGHPUT_TARGET} jobs/s`,
            pass: figures.jobsPerSec >= THROUGHPUT_TARGET,
          },
          { metric: `${label}: wall time`, value: round(figures.ms / 1000), unit: 's' },
          { metric: `${label}: peak RSS of the bench process`, value: figures.peakMb, unit: 'MB' },
        );
      }

      for (const paced of PACED) {
        const queueName = `paced-${paced.rate}`;
        await writeFailedJobs(redis, { prefix, queue: queueName, count: paced.jobs });
        progress(`replay --rate ${paced.rate}/s of ${paced.jobs} jobs`);
        const pacedStarted = performance.now();
        const pacedResult = await replay(runtime, { queues: [queueName], rate: paced.rate, brake: false, useLedger: false });
        const achieved = pacedResult.replayed / ((performance.now() - pacedStarted) / 1000);
        const deviation = achieved / paced.rate - 1;
        rows.push({
          metric: `replay --rate ${paced.rate}/s (${paced.jobs} jobs): achieved`,
          value: round(achieved, 1),
          unit: 'jobs/s',
          baseline: paced.rate,
          ratio: round(achieved / paced.rate, 3),
          target: `within ${RATE_TOLERANCE * 100}% of ${paced.rate}/s`,
          pass: Math.abs(deviation) <= RATE_TOLERANCE,
        });
      }
      return {
        rows,
        notes: [
          `Unthrottled: ${JOBS} matching failed jobs (each with its ledger row) among ${JOBS + OTHERS}; one replay() call with the brake off (no worker runs here); ledger rows updated and the audit record written.`,
          'Filters Redis can decide (queues, a finishedOn window, a minimum of attempts) read and replay each page in one script call; --grep and --error-group read pages to the client, then replay the chosen jobs.',
          'Baseline: BullMQ job.retry() per job (Job.fromId + reprocessJob), the same resets, 100 in flight; its queue has no ledger.',
          'Paced: a token bucket whose first tenth of a second is free; the achieved rate is jobs over the wall time of the whole call.',
        ],
      };
    } finally {
      progress('cleaning up');
      await runtime.close();
      await deleteKeys(redis, `${prefix}:*`);
      await db.raw('drop schema if exists ?? cascade', [schema]);
      await db.destroy();
      redis.disconnect();
    }
  },
};
