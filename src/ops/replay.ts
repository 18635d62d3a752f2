import { forgetAlerts } from '../alerts/webhook.js';
import type { Runtime } from '../core/runtime.js';
import { UsageError } from '../core/errors.js';
import { rowIdFromJobId } from '../queue/keys.js';
import { replayFailedJobs, replayFailedPages, type ReplayedJobs, type ReplayedPage } from '../queue/replay-jobs.js';
import { audited } from './audit.js';
import { Brake, type BrakeOptions, type BrakeReport } from './brake.js';
import {
  describeFilter,
  forEachBatch,
  planBulk,
  requireLedger,
  windowEnd,
  type BatchLoopResult,
  type BatchOutcome,
  type BulkOptions,
  type BulkPlan,
} from './bulk.js';
import { compileFilter, type CompiledFilter } from './job-filter.js';
import { WriteBehind } from './write-behind.js';

export interface ReplayOptions extends BulkOptions {
  /** The brake's settings, or false to replay without one. @defaultValue on, with BRAKE_DEFAULTS */
  brake?: BrakeOptions | false;
  /** Called when the replay starts waiting for the brake's verdict on its first `sample` jobs. */
  onBrakeWait?(sample: number): void;
}

export interface ReplayResult {
  /**
   * Jobs that matched the filter. A run stopped by the brake counts those it left failed too;
   * an interrupted run (Ctrl-C) counts those it reached.
   */
  matched: number;
  /** Moved back to waiting with attempts reset (with `dryRun`: would be). */
  replayed: number;
  /** Matched but no longer failed when their turn came (replayed or removed by someone else). */
  skipped: number;
  dryRun: boolean;
  /** Why the replay ended before every match was replayed: the brake, or the signal (Ctrl-C). */
  stopped: 'brake' | 'interrupted' | null;
  /** What the brake saw; null when it was off or nothing was replayed. */
  brake: BrakeReport | null;
  /** Replayed jobs that had been replayed before: a task replayed again and again deserves a look. */
  replayedBefore: number;
  /** With `dryRun`: counts by queue, job name and error group, and the ETA at the rate. */
  plan?: BulkPlan;
  /** The audit record's id (absent with `useLedger: false` or `dryRun`). */
  operationId?: string;
}

/**
 * Moves matching failed jobs back to waiting with their attempts reset, paced by `rate`, counting
 * each job's replays (in Redis, and in the ledger row of jobs that have one), and stops when the
 * brake trips. Jobs that fail again during the run are not picked up again (the window ends when
 * the run starts), and a replayed job leaves the failed set, so a second run never replays it twice.
 */
export async function replay(runtime: Runtime, options: ReplayOptions = {}): Promise<ReplayResult> {
  await runtime.assertReachable({ redis: true });
  if (options.rate !== undefined && !(options.rate > 0)) throw new UsageError('--rate must be positive, such as 50/s.');
  const startedAt = Date.now();
  // A job that fails again during the run would otherwise come back into the window and be
  // replayed again, for as long as it keeps failing.
  const filter = await compileFilter(runtime, { ...options, until: windowEnd(options, startedAt) }, { now: startedAt });

  if (options.dryRun) {
    const plan = await planBulk(runtime, filter, options);
    return {
      matched: plan.matched,
      replayed: plan.matched,
      skipped: 0,
      dryRun: true,
      stopped: null,
      brake: null,
      replayedBefore: plan.replayedBefore,
      plan,
    };
  }

  const useLedger = options.useLedger !== false;
  /** The run's counts as they stand, for the audit record of a run that fails part-way. */
  let soFar: ReplayResult | undefined;
  const run = async (): Promise<ReplayResult> => {
    const brake = options.brake === false ? null : new Brake(runtime.redis, runtime.settings.prefix, options.brake);
    const ledgerWrites = new WriteBehind();
    const result: ReplayResult = {
      matched: 0,
      replayed: 0,
      skipped: 0,
      dryRun: false,
      stopped: null,
      brake: null,
      replayedBefore: 0,
    };
    soFar = result;
    // A replayed job can fail for good again before its row's write, which trails the move in Redis,
    // lands: that row was written after the run began and stays failed, as its job is, instead of
    // being owed again (and run once more by the next rebuild). A worker writes a failure before the
    // job fails, so the rows of jobs that failed before the run began were written before this; a
    // job failed as stalled too often is written just after, and if the run begins in between, its
    // row stays failed while the replayed job runs, which the job's outcome then settles.
    const startedInLedger = useLedger ? await runtime.ledger.now() : undefined;
    /** Books one replayed batch: counts, ledger rows, the brake's sample, progress. */
    const settle = async (queue: string, matched: number, { replayed, skipped }: ReplayedJobs) => {
      result.matched += matched;
      result.replayed += replayed.length;
      result.skipped += skipped.length;
      result.replayedBefore += replayed.filter((r) => r.replayCount > 1).length;
      const rowIds = replayed.map((r) => rowIdFromJobId(r.id)).filter((id): id is string => id !== undefined);
      if (useLedger && rowIds.length) {
        await ledgerWrites.add(() => runtime.ledger.setStatus(rowIds, 'pending', { countReplay: true, from: ['failed', 'pending'], updatedBy: startedInLedger }));
      }
      await forgetAlerts(runtime.redis, runtime.settings.prefix, queue, replayed.map((r) => r.id));
      brake?.record(queue, replayed.map((r) => r.id));
      options.onProgress?.({ matched: result.matched, done: result.replayed, skipped: result.skipped });
    };
    /** A full sample waits for its verdict before anything more is replayed; true: stop. */
    const brakeStops = async () => {
      if (!brake?.needsVerdict) return false;
      options.onBrakeWait?.(brake.sampleTarget);
      return brake.awaitVerdict(options.signal);
    };
    const room = () => Math.min((options.limit ?? Infinity) - result.matched, brake?.sampleRoom || Infinity);

    let ended: BatchLoopResult['ended'];
    if (filter.grep || filter.errorGroup || filter.ids || options.rate) {
      // The client decides what matches, or paces: read pages, then replay chosen batches.
      ({ ended } = await forEachBatch(
        runtime,
        filter,
        options,
        async (queue, batch) => {
          // A ledger write failed: replay nothing more whose row would not follow.
          if (ledgerWrites.failed || (await brakeStops()) || options.signal?.aborted) return 'stop';
          const ids = batch.map((j) => j.id);
          await settle(queue, batch.length, await replayFailedJobs(runtime.redis, runtime.settings.prefix, queue, ids));
          return (await brake?.tripped()) ? 'stop' : 'continue';
        },
        () => brake?.sampleRoom || Infinity,
      ));
    } else {
      ended = await replayInRedis(
        runtime,
        filter,
        options.pageSize,
        room,
        // A sample that filled with the last page of one queue waits for its verdict before the next queue.
        async () => (ledgerWrites.failed || (await brakeStops()) ? 'stop' : 'continue'),
        async (queue, page) => {
          await settle(queue, page.matched, page);
          if (options.signal?.aborted || ledgerWrites.failed) return 'stop';
          if (page.more && (await brakeStops())) return 'stop';
          return (await brake?.tripped()) ? 'stop' : 'continue';
        },
      );
    }
    await ledgerWrites.drain();
    result.stopped = brake?.isTripped ? 'brake' : ended === 'interrupted' || options.signal?.aborted ? 'interrupted' : null;
    if (result.stopped === 'brake') {
      // Stopped on purpose, after a sample: what it left in the failed set matched too, and the
      // operator (and the audit record) must see how much that is. Jobs that failed again since the
      // start are outside the window, so they are not counted twice.
      const room = (options.limit ?? Infinity) - result.matched;
      if (room > 0) result.matched += (await planBulk(runtime, filter, { limit: room, pageSize: options.pageSize })).matched;
    }
    if (brake && result.replayed > 0) result.brake = await brake.report(ended === 'complete');
    return result;
  };

  if (!useLedger) return run();
  await requireLedger(runtime, 'replay');
  return audited(
    runtime,
    { command: 'replay', actor: options.actor, reason: options.reason, filter: describeFilter(options) },
    run,
    {
      counts: (r) => ({
        matched: r.matched,
        replayed: r.replayed,
        skipped: r.skipped,
        ...(r.brake ? { brakeFailed: r.brake.failed, brakeSample: r.brake.size } : {}),
      }),
      interrupted: (r) => r.stopped !== null,
      partial: () => soFar,
    },
  );
}

/**
 * The fast path, for filters Redis decides alone (queues, a finishedOn window, a minimum of
 * attempts) and no pacing: each page of the failed set is read and replayed in one script call.
 */
async function replayInRedis(
  runtime: Runtime,
  filter: CompiledFilter,
  pageSize: number | undefined,
  room: () => number,
  beforeQueue: () => Promise<BatchOutcome>,
  onPage: (queue: string, page: ReplayedPage) => Promise<BatchOutcome>,
): Promise<BatchLoopResult['ended']> {
  for (const queue of filter.queues) {
    if ((await beforeQueue()) === 'stop') return 'stopped';
    const pages = replayFailedPages(
      runtime.redis,
      runtime.settings.prefix,
      queue,
      { minScore: filter.since, maxScore: filter.until, minAttempts: filter.minAttempts, pageSize },
      room,
    );
    for await (const page of pages) {
      if ((await onPage(queue, page)) === 'stop') return 'stopped';
    }
    if (room() <= 0) break;
  }
  return 'complete';
}
