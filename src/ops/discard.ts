import type { Runtime } from '../core/runtime.js';
import { withDbRetry } from '../ledger/retry.js';
import { redisKeys, rowIdFromJobId } from '../queue/keys.js';
import { audited } from './audit.js';
import { describeFilter, forEachBatch, planBulk, requireLedger, windowEnd, type BulkOptions, type BulkPlan } from './bulk.js';
import { compileFilter } from './job-filter.js';
import { WriteBehind } from './write-behind.js';

export type DiscardOptions = BulkOptions;

export interface DiscardResult {
  matched: number;
  /** Removed from Redis (with `dryRun`: would be). */
  discarded: number;
  /** Matched but no longer failed when their turn came, or locked by a worker. */
  skipped: number;
  dryRun: boolean;
  /** Ledger rows marked discarded, so that no rebuild brings their effects back. */
  ledgerRowsDiscarded: number;
  stopped: 'interrupted' | null;
  plan?: BulkPlan;
  operationId?: string;
}

/**
 * Removes matching failed jobs and marks their ledger rows `discarded`: the effect is given up on
 * for good, and neither the worker nor a rebuild will run it again.
 */
export async function discard(runtime: Runtime, options: DiscardOptions = {}): Promise<DiscardResult> {
  await runtime.assertReachable({ redis: true });
  const startedAt = Date.now();
  // Jobs that fail during the run are not the ones the operator looked at.
  const filter = await compileFilter(runtime, { ...options, until: windowEnd(options, startedAt) }, { now: startedAt });

  if (options.dryRun) {
    const plan = await planBulk(runtime, filter, options);
    return { matched: plan.matched, discarded: plan.matched, skipped: 0, dryRun: true, ledgerRowsDiscarded: 0, stopped: null, plan };
  }

  const useLedger = options.useLedger !== false;
  const keys = redisKeys(runtime.settings.prefix);
  /** The run's counts as they stand, for the audit record of a run that fails part-way. */
  let soFar: DiscardResult | undefined;
  const run = async (): Promise<DiscardResult> => {
    const result: DiscardResult = { matched: 0, discarded: 0, skipped: 0, dryRun: false, ledgerRowsDiscarded: 0, stopped: null };
    soFar = result;
    const ledgerWrites = new WriteBehind();
    const loop = await forEachBatch(runtime, filter, options, async (queueName, batch) => {
      // A ledger write failed (after its retries): remove nothing more whose row would stay owed.
      if (ledgerWrites.failed) return 'stop';
      const queue = runtime.queues.get(queueName);
      // The scan read the page a moment ago; only what is still failed now is removed.
      const pipeline = runtime.redis.pipeline();
      for (const job of batch) pipeline.zscore(keys.queue(queueName, 'failed'), job.id);
      const stillFailed = ((await pipeline.exec()) ?? []).map(([error, score]) => !error && score !== null);
      const removed = await Promise.all(
        batch.map(async (job, i) => {
          if (!stillFailed[i]) return false;
          // BullMQ's own removal: job hash, logs, deduplication key, parent dependencies, `removed` event.
          return (await queue.remove(job.id).catch(() => 0)) === 1;
        }),
      );
      const removedIds = batch.filter((_, i) => removed[i]).map((j) => j.id);
      if (removedIds.length) await runtime.redis.hdel(keys.replayCount(queueName), ...removedIds);
      result.matched += batch.length;
      result.discarded += removedIds.length;
      result.skipped += batch.length - removedIds.length;
      const rowIds = removedIds.map(rowIdFromJobId).filter((id): id is string => id !== undefined);
      if (useLedger && rowIds.length) {
        // Idempotent, so safe to retry through a PostgreSQL restart.
        const mark = () => runtime.ledger.setStatus(rowIds, 'discarded', { from: ['pending', 'failed'] });
        await ledgerWrites.add(async () => {
          result.ledgerRowsDiscarded += (await withDbRetry(mark, runtime.logger, 'discard mark')).size;
        });
      }
      options.onProgress?.({ matched: result.matched, done: result.discarded, skipped: result.skipped });
      return options.signal?.aborted ? 'stop' : 'continue';
    });
    await ledgerWrites.drain();
    result.stopped = loop.ended === 'complete' ? null : 'interrupted';
    return result;
  };

  if (!useLedger) return run();
  await requireLedger(runtime, 'discard');
  return audited(
    runtime,
    { command: 'discard', actor: options.actor, reason: options.reason, filter: describeFilter(options) },
    run,
    {
      counts: (r) => ({ matched: r.matched, discarded: r.discarded, skipped: r.skipped, ledgerRowsDiscarded: r.ledgerRowsDiscarded }),
      interrupted: (r) => r.stopped !== null,
      partial: () => soFar,
    },
  );
}
