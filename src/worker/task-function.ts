import { UnrecoverableError, type Job } from 'bullmq';
import type { ResolvedEffect } from '../config/settings.js';
import type { EffectContext, Task } from '../config/types.js';
import type { Runtime } from '../core/runtime.js';
import type { LedgerRow } from '../ledger/rows.js';
import { rowIdFromJobId } from '../queue/keys.js';
import type { LedgerBatcher } from './ledger-batcher.js';

export type Outcome = { status: 'done' } | { status: 'skipped'; reason: string };

export interface TaskHooks {
  onPoison?(job: Job, effect: ResolvedEffect, error: Error): void;
}

/** A task is `{ event, id }` with two non-empty strings (a numeric id is accepted and stringified). */
export function parseTask(data: unknown): Task {
  const d = data as Record<string, unknown> | null;
  const ok =
    d !== null &&
    typeof d === 'object' &&
    typeof d.event === 'string' &&
    d.event.length > 0 &&
    (typeof d.id === 'string' || typeof d.id === 'number') &&
    String(d.id).length > 0;
  if (!ok) {
    const shown = JSON.stringify(data)?.slice(0, 200) ?? String(data);
    throw new UnrecoverableError(`Job data is not a thin task { event, id }: ${shown}`);
  }
  return { event: d.event as string, id: String(d.id) };
}

/** Stable per (effect, event occurrence): the same across retries, replays and rebuilds. */
export function idempotencyKey(effect: string, ledgerId: string): string {
  return `effects:${effect}:${ledgerId}`;
}

/**
 * The smart task function: load the ledger row, skip what is no longer owed, run, record the
 * outcome. Errors are recorded and rethrown so BullMQ retries with backoff.
 */
export function createTaskFunction(
  runtime: Runtime,
  effect: ResolvedEffect,
  ledger: LedgerBatcher,
  hooks: TaskHooks = {},
) {
  const { poisonThreshold } = runtime.settings;

  return async function runTask(job: Job): Promise<Outcome> {
    const attempt = job.attemptsMade + 1;
    const log = runtime.logger.child({ effect: effect.name, jobId: job.id, attempt });
    const task = parseTask(job.data);
    const taskLog = log.child({ event: task.event, id: task.id });
    taskLog.info('checking');

    const row = await findRow(runtime, ledger, effect, job, task);
    if (!row) return skip(taskLog, 'no ledger row owes this effect');
    if (row.status === 'done' || row.status === 'discarded') return skip(taskLog, `ledger row is ${row.status}`);

    const ctx: EffectContext = {
      db: runtime.db,
      log: taskLog,
      idempotencyKey: idempotencyKey(effect.name, row.id),
      attempt,
      jobId: String(job.id),
      ledgerId: row.id,
    };
    try {
      if (effect.isNeeded && !(await effect.isNeeded(task, ctx))) {
        await ledger.markDone(row.id);
        return skip(taskLog, 'effect reports the work is no longer needed');
      }
      taskLog.info('doing');
      await effect.run(task, ctx);
    } catch (error) {
      const err = error instanceof Error ? error : new Error(String(error));
      const final = attempt >= (job.opts.attempts ?? 1) || err instanceof UnrecoverableError;
      await ledger.recordFailure({ id: row.id, attempts: attempt, error: err.message, final });
      // Exactly once per job: the attempt that reaches the threshold.
      if (attempt === poisonThreshold) {
        taskLog.error({ err, poisonThreshold }, 'poison pill: attempts reached the threshold');
        hooks.onPoison?.(job, effect, err);
      } else {
        taskLog.warn({ err: { message: err.message }, final }, final ? 'failed for good' : 'failed; will retry');
      }
      throw err;
    }
    await ledger.markDone(row.id);
    taskLog.info('finished');
    return { status: 'done' };
  };
}

function skip(log: EffectContext['log'], reason: string): Outcome {
  log.info({ reason }, 'skipping');
  return { status: 'skipped', reason };
}

/**
 * Jobs made from the ledger carry their row id in the job id. A job queued by other code is matched
 * to the newest row for its (event, id) instead.
 */
async function findRow(
  runtime: Runtime,
  ledger: LedgerBatcher,
  effect: ResolvedEffect,
  job: Job,
  task: Task,
): Promise<LedgerRow | null> {
  const rowId = rowIdFromJobId(job.id);
  if (rowId) {
    const row = await ledger.load(rowId);
    // A row of another effect or event means the job id was reused by foreign code: do not trust it.
    const matches = row && row.effect === effect.name && row.event === task.event && row.eventId === task.id;
    return matches ? row : null;
  }
  const rows = await runtime.ledger.findByEvent(task.event, task.id, effect.name);
  return rows.at(-1) ?? null;
}
