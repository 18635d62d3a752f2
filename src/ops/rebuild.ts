import type { Runtime } from '../core/runtime.js';
import { UsageError } from '../core/errors.js';
import type { LedgerRow } from '../ledger/rows.js';
import { jobIdForRow, redisKeys } from '../queue/keys.js';
import { pushRows } from '../queue/push.js';

export interface RebuildOptions {
  /** Pending rows created at or after this time (epoch ms). */
  since: number;
  /** ...and before this time (epoch ms). @defaultValue now */
  until?: number;
  /** Only these effects. @defaultValue all */
  effects?: string[];
  /** At most this many jobs per second. @defaultValue unlimited */
  rate?: number;
  dryRun?: boolean;
  /** Rows read per page. @defaultValue 1000 */
  pageSize?: number;
  onProgress?(progress: RebuildResult): void;
  signal?: AbortSignal;
}

export interface RebuildResult {
  scanned: number;
  enqueued: number;
  alreadyQueued: number;
  dryRun: boolean;
}

/**
 * Re-drives what the ledger says is owed: every pending row in the window gets a job unless one is
 * alive (waiting, delayed, active). A job BullMQ still holds as completed or failed while the row is
 * pending is not alive: it is removed and pushed again, or the effect would be lost.
 * Pages through the ledger with a keyset cursor, so memory stays flat.
 */
export async function rebuild(runtime: Runtime, options: RebuildOptions): Promise<RebuildResult> {
  const until = options.until ?? Date.now();
  if (options.since >= until) throw new UsageError('--since must be before --until.');
  const pageSize = options.pageSize ?? 1000;
  const result: RebuildResult = { scanned: 0, enqueued: 0, alreadyQueued: 0, dryRun: Boolean(options.dryRun) };
  const startedAt = Date.now();
  let after: { createdAt: Date; id: string } | undefined;

  for (;;) {
    if (options.signal?.aborted) break;
    const rows = await runtime.ledger.scanPending({
      since: options.since,
      until,
      effects: options.effects,
      after,
      limit: pageSize,
    });
    if (rows.length === 0) break;
    const last = rows[rows.length - 1];
    after = { createdAt: last.createdAt, id: last.id };
    result.scanned += rows.length;

    const { dead, finished } = await partitionByLiveness(runtime, rows);
    result.alreadyQueued += rows.length - dead.length;
    if (!options.dryRun && dead.length) {
      await removeFinishedJobs(runtime, finished);
      if (options.rate) await pace(startedAt, result.enqueued + dead.length, options.rate, options.signal);
      await pushRows(runtime, dead);
    }
    result.enqueued += dead.length;
    options.onProgress?.({ ...result });
    if (rows.length < pageSize) break;
  }
  return result;
}

/** One pipeline per page: a job is alive when its hash exists and it has not finished. */
async function partitionByLiveness(runtime: Runtime, rows: LedgerRow[]) {
  const keys = redisKeys(runtime.settings.prefix);
  const pipeline = runtime.redis.pipeline();
  for (const row of rows) pipeline.hmget(keys.job(row.effect, jobIdForRow(row.id)), 'timestamp', 'finishedOn');
  const replies = (await pipeline.exec()) ?? [];
  const dead: LedgerRow[] = [];
  const finished: LedgerRow[] = [];
  rows.forEach((row, i) => {
    const [error, value] = replies[i] ?? [];
    if (error) throw error;
    const [timestamp, finishedOn] = value as [string | null, string | null];
    if (timestamp === null) dead.push(row);
    else if (finishedOn !== null) {
      dead.push(row);
      finished.push(row);
    }
  });
  return { dead, finished };
}

async function removeFinishedJobs(runtime: Runtime, rows: LedgerRow[]): Promise<void> {
  await Promise.all(rows.map((row) => runtime.queues.get(row.effect).remove(jobIdForRow(row.id))));
}

/** Sleeps just enough that `done` jobs since `startedAt` stay at or under `rate` per second. */
async function pace(startedAt: number, done: number, rate: number, signal?: AbortSignal): Promise<void> {
  const due = startedAt + (done / rate) * 1000;
  const wait = due - Date.now();
  if (wait > 0 && !signal?.aborted) await new Promise((resolve) => setTimeout(resolve, wait));
}
