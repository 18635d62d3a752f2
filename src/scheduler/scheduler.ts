import { Worker } from 'bullmq';
import { DEFAULTS } from '../config/settings.js';
import { formatDuration } from '../core/duration.js';
import { UsageError } from '../core/errors.js';
import { errorSummary } from '../core/logger.js';
import type { Runtime } from '../core/runtime.js';
import { assertMigrated } from '../ledger/migrate.js';
import { SCHEDULER_QUEUE } from '../queue/keys.js';
import { rebuild, type RebuildResult } from '../ops/rebuild.js';
import { listQueues } from '../ops/status.js';
import { trimReplayCounts } from '../queue/replay-counts.js';
import { startRampTicker } from '../ramp/ticker.js';

/** The shortest rebuild period accepted. */
const MIN_EVERY_MS = 1000;

export interface SchedulerOptions {
  /** How often the fan-out rebuild runs; at least 1 s. @defaultValue settings.scheduler.everyMs (1 h) */
  everyMs?: number;
  /** How far back each rebuild looks for pending rows. @defaultValue settings.scheduler.lookbackMs (24 h) */
  lookbackMs?: number;
  /** Called after each periodic rebuild (for logs and tests). */
  onRebuild?(result: RebuildResult): void;
  /** How often the active ramp plan is applied. @defaultValue RAMP_TICK_MS (250 ms) */
  rampTickMs?: number;
}

export interface SchedulerHandle {
  close(): Promise<void>;
}

const REBUILD_SCHEDULER_ID = 'rebuild-pending';

/**
 * The fan-out: a BullMQ job scheduler puts one "rebuild" job on an internal queue every period, and
 * whichever scheduler process takes it re-drives the pending rows. With several scheduler processes
 * the rebuild still runs once per period, because the job does.
 */
export async function startScheduler(runtime: Runtime, options: SchedulerOptions = {}): Promise<SchedulerHandle> {
  const everyMs = options.everyMs ?? runtime.settings.scheduler.everyMs;
  const lookbackMs = options.lookbackMs ?? runtime.settings.scheduler.lookbackMs;
  // The period lives in Redis and the newest scheduler's wins, so a typo (1ms for 1m) would set
  // back-to-back rebuilds of the whole lookback window for every scheduler of the fleet.
  if (!(everyMs >= MIN_EVERY_MS)) {
    throw new UsageError(
      `The rebuild period (--every, scheduler.every) is ${formatDuration(everyMs)}; it must be at least ${formatDuration(MIN_EVERY_MS)}.`,
      `The default is ${formatDuration(DEFAULTS.schedulerEveryMs)}.`,
    );
  }
  if (!(lookbackMs > 0)) {
    throw new UsageError(`The rebuild lookback (--lookback, scheduler.lookback) must be longer than 0; the default is ${formatDuration(DEFAULTS.schedulerLookbackMs)}.`);
  }
  await runtime.assertReachable({ redis: true, db: true });
  await assertMigrated(runtime.db, runtime.settings.schema);
  const log = runtime.logger.child({ component: 'scheduler' });

  const queue = runtime.queues.get(SCHEDULER_QUEUE);
  const upsertSchedule = () =>
    queue.upsertJobScheduler(
      REBUILD_SCHEDULER_ID,
      { every: everyMs },
      { name: 'rebuild', data: { lookbackMs }, opts: { removeOnComplete: 100, removeOnFail: 100 } },
    );
  // At start, this process's period wins: the newest deploy's --every is the one in force.
  await upsertSchedule();
  // The job scheduler lives in Redis, so a wiped or restarted Redis loses it, and with it every
  // later rebuild: exactly when the rebuild is needed. Put it back (a fresh one runs at once) when
  // it is gone, checked at least once a minute. Only when gone: an upsert with another period
  // restarts the schedule, so schedulers with different --every (a rolling deploy) would each set
  // theirs every minute and run the rebuild at every change.
  const keepSchedule = setInterval(() => {
    queue
      .getJobScheduler(REBUILD_SCHEDULER_ID)
      .then((existing) => (existing ? undefined : upsertSchedule()))
      .catch((error: Error) => log.warn({ err: errorSummary(error) }, 'cannot re-assert the rebuild schedule; retrying'));
  }, Math.min(everyMs, 60_000));
  keepSchedule.unref();

  // Shutdown stops a rebuild in progress at its next batch (the next period re-drives the rest)
  // instead of waiting minutes for a large window to finish.
  const stopping = new AbortController();
  const worker = new Worker(
    SCHEDULER_QUEUE,
    async (job) => {
      const lookback = Number(job.data?.lookbackMs ?? lookbackMs);
      // Hourly housekeeping, not an operator action: logged, not written to the audit trail.
      const result = await rebuild(runtime, { since: Date.now() - lookback, audit: false, signal: stopping.signal });
      log.info({ ...result, lookbackMs: lookback }, 'periodic rebuild');
      if (result.redisLost) {
        // The schedule went with it; re-asserted within a minute, it runs the rebuild again.
        log.warn('Redis lost its data during the periodic rebuild: what it enqueued before may be gone; the next rebuild enqueues it again');
      }
      options.onRebuild?.(result);
      // Housekeeping after the rebuild; a failure here is not a failed rebuild, and the next period retries.
      const replayCountsDropped = await listQueues(runtime)
        .then((queues) => trimReplayCounts(runtime.redis, runtime.settings.prefix, queues))
        .catch((error: Error) => {
          log.warn({ err: errorSummary(error) }, 'cannot drop stale replay counts; retrying next period');
          return 0;
        });
      if (replayCountsDropped) log.info({ replayCountsDropped }, 'replay counts of jobs that no longer exist dropped');
      return { ...result, replayCountsDropped };
    },
    { connection: runtime.redis, prefix: runtime.settings.prefix, concurrency: 1 },
  );
  worker.on('error', (error) => log.warn({ err: errorSummary(error) }, 'scheduler worker error'));
  worker.on('failed', (_job, error) => log.error({ err: errorSummary(error) }, 'periodic rebuild failed'));
  await worker.waitUntilReady();
  // Every scheduler applies the active ramp: the limit is a pure function of plan and time, so
  // several of them set the same values, and a ramp outlives the terminal that started it.
  const ramps = startRampTicker(runtime, {
    everyMs: options.rampTickMs,
    heartbeat: true,
    onTick: (tick) => {
      if (tick.started.length) log.info({ ramp: tick.plan?.id, queues: tick.started }, 'ramp: queues started');
      if (tick.finished.length) log.info({ queues: tick.finished }, 'ramp: queues at their after-ramp limits');
      if (tick.ended) log.info({ ramp: tick.ended.id }, 'ramp finished');
    },
    onError: (error) => log.warn({ err: errorSummary(error) }, 'ramp tick failed; retrying'),
  });
  log.info({ everyMs, lookbackMs }, 'scheduler started');

  return {
    async close() {
      clearInterval(keepSchedule);
      stopping.abort();
      await ramps.stop();
      await worker.close();
      await runtime.close();
    },
  };
}
