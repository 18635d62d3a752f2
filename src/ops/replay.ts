import type { Runtime } from '../core/runtime.js';
import { UsageError } from '../core/errors.js';
import { rowIdFromJobId } from '../queue/keys.js';
import { replayFailedJobs } from '../queue/replay-jobs.js';
import { audited } from './audit.js';
import { Brake, type BrakeOptions, type BrakeReport } from './brake.js';
import {
  describeFilter,
  forEachBatch,
  planBulk,
  requireLedger,
  type BulkOptions,
  type BulkPlan,
} from './bulk.js';
import { compileFilter } from './job-filter.js';

export interface ReplayOptions extends BulkOptions {
  /** The brake's settings, or false to replay without one. @defaultValue on, with BRAKE_DEFAULTS */
  brake?: BrakeOptions | false;
  /** Called when the replay starts waiting for the brake's verdict on its first `sample` jobs. */
  onBrakeWait?(sample: number): void;
}

export interface ReplayResult {
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
  const filter = await compileFilter(runtime, { ...options, until: options.until ?? startedAt }, { now: startedAt });

  if (options.dryRun) {
    const plan = await planBulk(runtime, filter, options);
    return {
      matched: plan.matched,
      replayed: plan.matched,
      skipped: 0,
      dryRun: true,
      stopped: null,
      brake: null,
      replayedBefore: 0,
      plan,
    };
  }

  const useLedger = options.useLedger !== false;
  const run = async (): Promise<ReplayResult> => {
    const brake = options.brake === false ? null : new Brake(runtime.redis, runtime.settings.prefix, options.brake);
    const result: ReplayResult = {
      matched: 0,
      replayed: 0,
      skipped: 0,
      dryRun: false,
      stopped: null,
      brake: null,
      replayedBefore: 0,
    };
    const loop = await forEachBatch(
      runtime,
      filter,
      options,
      async (queue, batch) => {
        // A full sample waits for its verdict before anything more is replayed.
        if (brake?.needsVerdict) {
          options.onBrakeWait?.(brake.sampleTarget);
          if (await brake.awaitVerdict(options.signal)) return 'stop';
        }
        if (options.signal?.aborted) return 'stop';
        const { replayed, skipped } = await replayFailedJobs(
          runtime.redis,
          runtime.settings.prefix,
          queue,
          batch.map((j) => j.id),
        );
        result.matched += batch.length;
        result.replayed += replayed.length;
        result.skipped += skipped.length;
        result.replayedBefore += replayed.filter((r) => r.replayCount > 1).length;
        if (useLedger) {
          const rowIds = replayed.map((r) => rowIdFromJobId(r.id)).filter((id): id is string => id !== undefined);
          await runtime.ledger.setStatus(rowIds, 'pending', { countReplay: true, from: ['failed', 'pending'] });
        }
        brake?.record(queue, replayed.map((r) => r.id));
        options.onProgress?.({ matched: result.matched, done: result.replayed, skipped: result.skipped });
        return (await brake?.tripped()) ? 'stop' : 'continue';
      },
      () => brake?.sampleRoom || Infinity,
    );
    result.stopped = brake?.isTripped ? 'brake' : loop.ended === 'interrupted' || options.signal?.aborted ? 'interrupted' : null;
    if (brake && result.replayed > 0) result.brake = await brake.report(loop.ended === 'complete');
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
    },
  );
}
