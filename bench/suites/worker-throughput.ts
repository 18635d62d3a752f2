/**
 * Worker throughput with the ledger on, against a raw BullMQ Worker on the same Redis, in one run.
 *
 * Both sides process the same number of no-op jobs with the same concurrency and the same job
 * options (`jobOptionsFor`: attempts, backoff, retention), on queues under the same prefix. Only the
 * processing is timed: jobs are enqueued first with no worker running, and the clock runs from the
 * first `active` event to the last `completed` one. Rounds alternate in ABBA order (raw, effects,
 * effects, raw, ...) after an untimed warm-up, and each side reports its median.
 *
 * Logs: the effects worker logs as `effects worker` does, at `info` (one line per job, its outcome)
 * with the same logger options and destination (`logDestination`), but into /dev/null instead of stdout:
 * serialising and writing every line is paid, only the reader of the stream is missing. Raw BullMQ
 * has no job logging, so it writes nothing. A third variant runs the effects worker at `debug`
 * (checking / doing / finished per job), to show what tracing every step costs.
 *
 * A fourth side is the reference design (`startReferenceWorker`): raw BullMQ plus one batched ledger
 * read per event-loop turn and batched done-marks, nothing else. Its ratio to raw is what the extra
 * round trip to PostgreSQL costs on this machine; the effects worker's ratio to it is what the rest
 * of the effects worker costs (logs, metrics, retries, shutdown bookkeeping).
 */
import { Queue, Worker, type Job } from 'bullmq';
import knexFactory from 'knex';
import type { Logger } from '../../src/core/logger.js';
import { effects as api, keys, logging, queues, redisConnections } from '../package.js';
import { startReferenceWorker } from '../fixtures/reference-worker.js';
import { deleteKeys } from '../../test/helpers.js';
import {
  DATABASE_URL,
  REDIS_URL,
  benchNamespace,
  emitMany,
  timeDrain,
  median,
  progress,
  round,
  localServerCpuUs,
  sampleRss,
  type BenchRow,
  type Suite,
} from '../lib.js';

const JOBS = Number(process.env.BENCH_JOBS ?? 20_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const WARMUP_JOBS = Math.min(2_000, JOBS);
const CONCURRENCY = 50;
const TARGET = 0.75;
const EVENT = 'bench_tick';
const EFFECT = 'bench-noop';
const RAW_QUEUE = 'bench-raw-noop';

type Side = 'raw' | 'effects' | 'effects-debug' | 'reference';

interface RunFigures {
  jobsPerSec: number;
  ms: number;
  failed: number;
  rssPeakMb: number;
  /** CPU time of this process per job, user + system: less sensitive to other load than jobs/s. */
  cpuUsPerJob: number;
  /** CPU time of the local Redis and PostgreSQL servers per job, where /proc tells. */
  serversUsPerJob?: { redis: number; postgres: number };
}

const cpuSince = (start: NodeJS.CpuUsage, count: number) => {
  const used = process.cpuUsage(start);
  return (used.user + used.system) / count;
};

/** Starts counting the local servers' CPU time; the returned function gives it per job. */
const serversCpu = async () => {
  const start = await localServerCpuUs();
  return async (count: number) => {
    const end = await localServerCpuUs();
    if (!start || !end) return undefined;
    return { redis: (end.redis - start.redis) / count, postgres: (end.postgres - start.postgres) / count };
  };
};

export const suite: Suite = {
  name: 'worker-throughput',
  description: `${JOBS} no-op jobs, concurrency ${CONCURRENCY}: effects worker (ledger on) vs raw BullMQ Worker`,
  async run() {
    const { prefix, schema } = benchNamespace('worker-throughput');
    const config = api.validateConfig({
      effects: [api.defineEffect({ name: EFFECT, on: EVENT, concurrency: CONCURRENCY, run() {} })],
    });
    const flags = { redis: REDIS_URL, db: DATABASE_URL, prefix, schema };
    const settings = api.resolveSettings(config, flags, {});
    const jobOptions = queues.jobOptionsFor(settings.effects[0], settings, 'placeholder');
    const admin = knexFactory({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 2 } });
    const redis = redisConnections.createRedis({ url: REDIS_URL, cluster: false });
    const emitter = api.createEffects(config, { flags });
    const rawQueue = new Queue(RAW_QUEUE, { connection: redis, prefix });
    const effectQueue = new Queue(EFFECT, { connection: redis, prefix });
    let rawSeq = 0;

    /** Raw side: the same thin data and job options, ids in the same shape as ledger job ids. */
    const enqueueRaw = async (count: number) => {
      for (let start = 0; start < count; start += 1000) {
        const batch = Array.from({ length: Math.min(1000, count - start) }, () => {
          const n = ++rawSeq;
          return { name: EVENT, data: { event: EVENT, id: String(n) }, opts: { ...jobOptions, jobId: `raw-${n}` } };
        });
        await rawQueue.addBulk(batch);
      }
    };

    /** Effects side: every job through `emit`, so each has its ledger row, as in production. */
    let effectsSeq = 0;
    const enqueueEffects = async (count: number) => {
      await emitMany(emitter, EVENT, count, effectsSeq + 1);
      effectsSeq += count;
    };

    const runRaw = async (count: number): Promise<RunFigures> => {
      await enqueueRaw(count);
      const rss = sampleRss();
      const servers = await serversCpu();
      const cpu = process.cpuUsage();
      const worker = new Worker(RAW_QUEUE, async (_job: Job) => undefined, {
        connection: redis,
        prefix,
        concurrency: CONCURRENCY,
        lockDuration: settings.worker.lockDurationMs,
        stalledInterval: settings.worker.stalledIntervalMs,
        autorun: false,
      });
      worker.on('error', () => {});
      const done = timeDrain(worker, count);
      void worker.run();
      const { ms, failed } = await done;
      const cpuUsPerJob = cpuSince(cpu, count);
      const serversUsPerJob = await servers(count);
      await worker.close();
      const { peakMb } = rss.stop();
      await rawQueue.obliterate({ force: true });
      return { jobsPerSec: (count / ms) * 1000, ms, failed, rssPeakMb: peakMb, cpuUsPerJob, serversUsPerJob };
    };

    const runEffects = async (count: number, logLevel: 'info' | 'debug'): Promise<RunFigures> => {
      await enqueueEffects(count);
      const rss = sampleRss();
      // As `effects worker` builds it (secrets included), but into /dev/null.
      const logger: Logger = api.createLogger({
        level: logLevel,
        pretty: false,
        secrets: [REDIS_URL, DATABASE_URL],
        destination: logging.logDestination('/dev/null'),
      });
      const runtime = new api.Runtime(settings, { logger });
      const servers = await serversCpu();
      const cpu = process.cpuUsage();
      // startWorker starts consuming at once; the queue stays paused until the listeners are attached.
      await effectQueue.pause();
      const handle = await api.startWorker(runtime, { concurrency: CONCURRENCY });
      const done = timeDrain(handle.workers[0], count);
      await effectQueue.resume();
      const { ms, failed } = await done;
      const cpuUsPerJob = cpuSince(cpu, count);
      const serversUsPerJob = await servers(count);
      await handle.close({ timeoutMs: 10_000 });
      const { peakMb } = rss.stop();
      await settleLedgerRun();
      return { jobsPerSec: (count / ms) * 1000, ms, failed, rssPeakMb: peakMb, cpuUsPerJob, serversUsPerJob };
    };

    const runReference = async (count: number): Promise<RunFigures> => {
      await enqueueEffects(count);
      const rss = sampleRss();
      const servers = await serversCpu();
      const cpu = process.cpuUsage();
      const reference = startReferenceWorker({
        queue: EFFECT,
        prefix,
        connection: redis,
        databaseUrl: DATABASE_URL,
        schema,
        concurrency: CONCURRENCY,
        lockDuration: settings.worker.lockDurationMs,
        stalledInterval: settings.worker.stalledIntervalMs,
        rowIdOf: keys.rowIdFromJobId,
      });
      const done = timeDrain(reference.worker, count);
      void reference.worker.run();
      const { ms, failed } = await done;
      const cpuUsPerJob = cpuSince(cpu, count);
      const serversUsPerJob = await servers(count);
      await reference.close();
      const { peakMb } = rss.stop();
      await settleLedgerRun();
      return { jobsPerSec: (count / ms) * 1000, ms, failed, rssPeakMb: peakMb, cpuUsPerJob, serversUsPerJob };
    };

    /** Checks that a run left no row owed, then empties queue and ledger for the next one. */
    const settleLedgerRun = async () => {
      const pending = await admin.withSchema(schema).table('ledger').whereNot('status', 'done').count<{ count: string }[]>('* as count');
      if (Number(pending[0].count) !== 0) throw new Error(`${pending[0].count} ledger rows not done after the drain`);
      await effectQueue.obliterate({ force: true });
      // Every round starts from an empty ledger, so later rounds do not work on a larger index.
      await admin.withSchema(schema).table('ledger').del();
    };

    const results: Record<Side, RunFigures[]> = { raw: [], effects: [], 'effects-debug': [], reference: [] };
    const runners: Record<Side, (count: number) => Promise<RunFigures>> = {
      raw: runRaw,
      effects: (count) => runEffects(count, 'info'),
      'effects-debug': (count) => runEffects(count, 'debug'),
      reference: runReference,
    };
    const runSide = async (side: Side, count = JOBS) => {
      const figures = await runners[side](count);
      progress(
        `${side}: ${Math.round(figures.jobsPerSec)} jobs/s (${Math.round(figures.ms)} ms, ` +
          `${Math.round(figures.cpuUsPerJob)} µs CPU/job, ${figures.failed} failed)`,
      );
      return figures;
    };

    try {
      await api.migrate(admin, schema);
      progress(`warm-up: ${WARMUP_JOBS} jobs per side`);
      await runSide('raw', WARMUP_JOBS);
      await runSide('effects', WARMUP_JOBS);
      await runSide('reference', WARMUP_JOBS);
      const order: Side[] = ['raw', 'effects', 'effects-debug', 'reference'];
      for (let round = 0; round < ROUNDS; round += 1) {
        // ABBA: alternate the order so drift in machine load does not favour one side.
        for (const side of round % 2 === 0 ? order : [...order].reverse()) {
          results[side].push(await runSide(side));
        }
      }
    } finally {
      await emitter.close();
      await Promise.allSettled([rawQueue.close(), effectQueue.close()]);
      await deleteKeys(redis, `${prefix}:*`);
      await admin.raw('drop schema if exists ?? cascade', [schema]);
      await admin.destroy();
      redis.disconnect();
    }

    const med = (side: Side) => median(results[side].map((r) => r.jobsPerSec));
    const raw = med('raw');
    const effects = med('effects');
    const debug = med('effects-debug');
    const reference = med('reference');
    const ratio = effects / raw;
    const failed = Object.values(results).flat().reduce((n, r) => n + r.failed, 0);
    const rows: BenchRow[] = [
      { metric: 'raw BullMQ worker', value: round(raw, 0), unit: 'jobs/s' },
      {
        metric: 'effects worker (ledger on, info logs: one line per job)',
        value: round(effects, 0),
        unit: 'jobs/s',
        baseline: round(raw, 0),
        ratio: round(ratio, 3),
        target: `ratio >= ${TARGET}`,
        pass: ratio >= TARGET,
      },
      {
        metric: 'effects worker (ledger on, debug logs: every step)',
        value: round(debug, 0),
        unit: 'jobs/s',
        baseline: round(raw, 0),
        ratio: round(debug / raw, 3),
      },
      {
        metric: 'reference design (batched read per tick, batched done-marks, nothing else)',
        value: round(reference, 0),
        unit: 'jobs/s',
        baseline: round(raw, 0),
        ratio: round(reference / raw, 3),
      },
      {
        metric: 'effects worker against the reference design',
        value: round(effects, 0),
        unit: 'jobs/s',
        baseline: round(reference, 0),
        ratio: round(effects / reference, 3),
      },
      {
        metric: 'worker process CPU per job, raw',
        value: round(median(results.raw.map((r) => r.cpuUsPerJob)), 0),
        unit: 'µs',
      },
      {
        metric: 'worker process CPU per job, effects (info logs)',
        value: round(median(results.effects.map((r) => r.cpuUsPerJob)), 0),
        unit: 'µs',
      },
      {
        metric: 'worker process CPU per job, reference design',
        value: round(median(results.reference.map((r) => r.cpuUsPerJob)), 0),
        unit: 'µs',
      },
      ...serverCpuRows(results),
      { metric: 'failed jobs (all runs)', value: failed, unit: 'jobs', target: '= 0', pass: failed === 0 },
      {
        metric: 'peak RSS during effects runs',
        value: Math.max(...results.effects.map((r) => r.rssPeakMb)),
        unit: 'MB',
      },
    ];
    const perRun = (side: Side) => results[side].map((r) => Math.round(r.jobsPerSec)).join(', ');
    // Within a round the two sides ran back to back, so their ratio is less exposed to load drift
    // between rounds than the ratio of medians.
    const pairedWithRaw = (side: Side) => median(results[side].map((r, i) => r.jobsPerSec / results.raw[i].jobsPerSec));
    return {
      rows,
      notes: [
        `median of ${ROUNDS} alternating (ABBA) runs per side after a ${WARMUP_JOBS}-job warm-up; per run: ` +
          `raw [${perRun('raw')}], effects [${perRun('effects')}], effects at debug [${perRun('effects-debug')}], ` +
          `reference [${perRun('reference')}]`,
        `paired ratios (median over rounds of side/raw within the round): effects ${round(pairedWithRaw('effects'), 3)}, ` +
          `reference ${round(pairedWithRaw('reference'), 3)}`,
        'timed from the first active job to the last completed one; enqueueing (emit for effects, addBulk for raw) is not timed',
        'same Redis, prefix, concurrency and job options on both sides; effects logs one info line per job (three at debug) to /dev/null (buffered asynchronous writes, as the CLI), raw logs nothing',
      ],
    };
  },
};

/**
 * Where the local servers' CPU time per job is known: theirs, and the sum with the worker's. With
 * Redis, PostgreSQL and the worker on the same cores and all of them busy, the ratio of the sums is
 * about the throughput ratio, whichever process a change saves time in.
 */
function serverCpuRows(results: Record<Side, RunFigures[]>): BenchRow[] {
  const known = (side: Side) => results[side].flatMap((r) => (r.serversUsPerJob ? [{ ...r.serversUsPerJob, worker: r.cpuUsPerJob }] : []));
  const raw = known('raw');
  const effects = known('effects');
  if (raw.length === 0 || effects.length === 0) return [];
  const med = (runs: typeof raw, pick: (r: (typeof raw)[number]) => number) => round(median(runs.map(pick)), 0);
  const total = (r: (typeof raw)[number]) => r.worker + r.redis + r.postgres;
  return [
    { metric: 'Redis CPU per job, raw', value: med(raw, (r) => r.redis), unit: 'µs' },
    { metric: 'Redis CPU per job, effects', value: med(effects, (r) => r.redis), unit: 'µs' },
    { metric: 'PostgreSQL CPU per job, effects', value: med(effects, (r) => r.postgres), unit: 'µs' },
    {
      metric: 'CPU per job, worker + Redis + PostgreSQL, effects',
      value: med(effects, total),
      unit: 'µs',
      baseline: med(raw, total),
      ratio: round(median(raw.map(total)) / median(effects.map(total)), 3),
    },
  ];
}
