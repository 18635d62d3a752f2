import { UnrecoverableError, type Job } from 'bullmq';
import type { ResolvedEffect } from '../config/settings.js';
import type { EffectContext, Task } from '../config/types.js';
import { asError } from '../core/errors.js';
import { errorSummary, type Logger } from '../core/logger.js';
import type { Runtime } from '../core/runtime.js';
import type { LedgerCheck } from '../ledger/ledger.js';
import { withDbRetry } from '../ledger/retry.js';
import { rowIdFromJobId } from '../queue/keys.js';
import { MAX_TASK_FIELD_LENGTH } from '../queue/push.js';
import type { LedgerBatcher } from './ledger-batcher.js';

export type Outcome = { status: 'done' } | { status: 'skipped'; reason: string };

export interface TaskHooks {
  onPoison?(job: Job, effect: ResolvedEffect, error: Error): void;
  /**
   * True once shutdown has abandoned the jobs still running (its deadline passed): their outcome is
   * no longer this worker's to record, since their locks lapse and another worker runs them again.
   */
  abandoned?(): boolean;
}

/**
 * A task is exactly `{ event, id }`: two non-empty strings (a numeric id is accepted and
 * stringified) and nothing else. Anything else is a poison pill, failed without retries: retrying
 * cannot make bad data good, and the reason says what is wrong without echoing a huge payload.
 */
export function parseTask(data: unknown): Task {
  const problem = thinTaskProblem(data);
  if (problem) throw new UnrecoverableError(`Job data is not a thin task { event, id }: ${problem}`);
  const d = data as { event: string; id: string | number };
  return { event: d.event, id: String(d.id) };
}

/**
 * Stands in for job data that Redis holds but that is not JSON (written by foreign code), so the
 * task function can fail the job as a poison pill instead of BullMQ never building it at all.
 */
export class UnparseableData {
  constructor(
    readonly raw: string,
    readonly reason: string,
  ) {}
}

function thinTaskProblem(data: unknown): string | undefined {
  if (data instanceof UnparseableData) return `the stored data is not JSON (${data.reason}): ${preview(data.raw)}`;
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    return `got ${Array.isArray(data) ? 'an array' : data === null ? 'null' : `a ${typeof data}`} (${preview(data)})`;
  }
  const d = data as Record<string, unknown>;
  const extra = Object.keys(d).filter((key) => key !== 'event' && key !== 'id');
  if (extra.length) {
    const shown = extra.slice(0, 5).map((k) => JSON.stringify(k.slice(0, 50))).join(', ');
    return `unexpected key(s) ${shown}${extra.length > 5 ? ', ...' : ''}; a task carries only event and id, and the task function loads the rest`;
  }
  if (typeof d.event !== 'string' || d.event.length === 0) return `"event" must be a non-empty string, got ${preview(d.event)}`;
  if ((typeof d.id !== 'string' && typeof d.id !== 'number') || String(d.id).length === 0) {
    return `"id" must be a non-empty string or a number, got ${preview(d.id)}`;
  }
  for (const key of ['event', 'id'] as const) {
    const length = String(d[key]).length;
    if (length > MAX_TASK_FIELD_LENGTH) return `"${key}" is ${length} characters long; at most ${MAX_TASK_FIELD_LENGTH}`;
  }
  return undefined;
}

function preview(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}...` : text;
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
  /**
   * Writes the one line a job logs at info, its outcome. Its fields are fixed (ids, attempt,
   * duration, a reason of ours) and none is a key that pino's redaction looks for, so it skips that
   * pass; connection passwords are still cut from the line by the logger's scrubber.
   */
  const outcomeLog = runtime.logger.child({ effect: effect.name }, { redact: [] });

  /** `startedAt`: when the job was picked (a `performance.now()`), so the log and the metrics time the same span. */
  return async function runTask(job: Job, startedAt = performance.now()): Promise<Outcome> {
    const attempt = job.attemptsMade + 1;
    let task: Task;
    try {
      task = parseTask(job.data);
    } catch (error) {
      // No ledger row to record it in: the log and the job's failedReason are where people see it.
      runtime.logger.error(
        { effect: effect.name, jobId: job.id, attempt, reason: (error as Error).message },
        'poison pill: not a thin task; failing without retries',
      );
      throw error;
    }
    const fields = { jobId: job.id, attempt, event: task.event, id: task.id };
    // The job's own logger (for the effect's ctx.log, debug steps and failures) is made on first use:
    // a child serialises its bindings, and most jobs of a busy worker log nothing but their outcome.
    let jobLog: Logger | undefined;
    const taskLog = () => (jobLog ??= runtime.logger.child({ effect: effect.name, ...fields }));
    const outcome = (result: Outcome): Outcome => {
      const durationMs = elapsedMs(startedAt);
      if (result.status === 'done') outcomeLog.info({ ...fields, durationMs }, 'finished');
      else outcomeLog.info({ ...fields, reason: result.reason, durationMs }, 'skipping');
      return result;
    };
    const skip = (reason: string) => outcome({ status: 'skipped', reason });
    // The steps before the outcome are for tracing one job: at info a job logs one line, its outcome
    // (finished or skipping) or its failure, so the log volume of a busy fleet is one line per job.
    if (runtime.logger.isLevelEnabled('debug')) taskLog().debug('checking');

    let row: LedgerCheck | null;
    try {
      row = await findRow(runtime, ledger, effect, job, task);
    } catch (error) {
      // The database stayed away through the read's retries: BullMQ retries the job, and the rebuild
      // re-drives its row if the job runs out of attempts meanwhile. Not a poison pill.
      if (hooks.abandoned?.()) throw error;
      const final = attempt >= (job.opts.attempts ?? 1);
      taskLog().warn(
        { err: errorSummary(asError(error)), final },
        'could not read the ledger row; the job fails this attempt',
      );
      throw error;
    }
    if (!row) return skip('no ledger row owes this effect');
    if (row.status === 'done' || row.status === 'discarded') return skip(`ledger row is ${row.status}`);

    const ctx: EffectContext = {
      db: runtime.db,
      get log() {
        return taskLog();
      },
      idempotencyKey: idempotencyKey(effect.name, row.id),
      attempt,
      jobId: String(job.id),
      ledgerId: row.id,
    };
    try {
      if (effect.isNeeded && !(await effect.isNeeded(task, ctx))) {
        await ledger.markDone(row);
        return skip('effect reports the work is no longer needed');
      }
      if (runtime.logger.isLevelEnabled('debug')) taskLog().debug('doing');
      await effect.run(task, ctx);
    } catch (error) {
      // Cut here, before BullMQ stores the message and stack (failedReason, stacktrace), the ledger
      // records it and an alert carries it: an effect's error may quote a connection string.
      const err = withoutSecrets(asError(error), runtime.scrubSecrets);
      // Its connections are closed under it, which is likely why it failed: nothing to record or alert on.
      if (hooks.abandoned?.()) throw err;
      const final = attempt >= (job.opts.attempts ?? 1) || isUnrecoverable(err);
      // The job fails with the effect's error whatever happens to its record: BullMQ retries it, and
      // the alert below still goes out.
      await ledger
        .recordFailure({ id: row.id, attempts: attempt, error: err.message, final })
        .catch((recordError: unknown) =>
          taskLog().error({ err: recordError, final }, 'could not record the failure in the ledger'),
        );
      // Exactly once per job: the attempt that reaches the threshold, or the last one when the job
      // fails for good before it (fewer attempts than the threshold, or an UnrecoverableError), which
      // would otherwise fail silently.
      if (attempt === poisonThreshold || (final && attempt < poisonThreshold)) {
        const why = attempt === poisonThreshold ? 'attempts reached the threshold' : 'failed for good before the threshold';
        taskLog().error({ err, poisonThreshold, final }, `poison pill: ${why}`);
        hooks.onPoison?.(job, effect, err);
      } else {
        taskLog().warn({ err: errorSummary(err), final }, final ? 'failed for good' : 'failed; will retry');
      }
      throw err;
    }
    // Written behind, with the other jobs' marks (see LedgerBatcher).
    await ledger.markDone(row);
    return outcome({ status: 'done' });
  };
}

/** `error` with `scrub` applied to its message and stack, in place (BullMQ stores both as they are). */
function withoutSecrets(error: Error, scrub: (text: string) => string): Error {
  const message = scrub(error.message);
  if (message !== error.message) error.message = message;
  if (error.stack) {
    const stack = scrub(error.stack);
    if (stack !== error.stack) error.stack = stack;
  }
  return error;
}

/**
 * BullMQ fails an UnrecoverableError for good. An effect may throw one from its own copy of bullmq
 * (another version in node_modules), which `instanceof` does not recognise; BullMQ itself matches
 * by name too.
 */
function isUnrecoverable(error: Error): boolean {
  return error instanceof UnrecoverableError || error.name === 'UnrecoverableError';
}

/** Milliseconds since `startedAt` (a `performance.now()`), to a tenth. */
function elapsedMs(startedAt: number): number {
  return Math.round((performance.now() - startedAt) * 10) / 10;
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
): Promise<LedgerCheck | null> {
  const rowId = rowIdFromJobId(job.id);
  if (rowId) {
    const row = await ledger.load(rowId);
    // A row of another effect or event means the job id was reused by foreign code: do not trust it.
    const matches = row && row.effect === effect.name && row.event === task.event && row.eventId === task.id;
    return matches ? row : null;
  }
  // A read, so safe to repeat: pooled connections can die under it (a restart, a terminated backend).
  const rows = await withDbRetry(
    () => runtime.ledger.findByEvent(task.event, task.id, effect.name),
    runtime.logger,
    'read by event',
  );
  return rows.at(-1) ?? null;
}
