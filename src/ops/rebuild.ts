import { randomUUID } from 'node:crypto';
import { forgetAlerts } from '../alerts/webhook.js';
import type { Runtime } from '../core/runtime.js';
import { assertTimeWindow } from '../core/duration.js';
import { UsageError } from '../core/errors.js';
import { chunkSizeForRate, TokenBucket } from '../core/token-bucket.js';
import { assertMigrated } from '../ledger/migrate.js';
import type { PendingRef, RowPage, ScanCursor } from '../ledger/ledger.js';
import { jobIdForRow, redisKeys } from '../queue/keys.js';
import { jobLiveness } from '../queue/liveness.js';
import { pushRows } from '../queue/push.js';
import { audited } from './audit.js';
import { queueConfigs, restoreQueueSettings, type RestoredQueue } from './restore-queues.js';

export interface RebuildOptions {
  /** Rows that became pending (emitted, or replayed) at or after this time (epoch ms). */
  since: number;
  /** ...and before this time (epoch ms). @defaultValue now */
  until?: number;
  /** Only these effects. @defaultValue all */
  effects?: string[];
  /** At most this many jobs enqueued per second. @defaultValue unlimited */
  rate?: number;
  /**
   * Also owe again, and enqueue, the failed rows of the window (by when they failed) whose job Redis
   * no longer holds: lost with it, or removed by retention. They run again, attempts and all, and
   * fail again into the failed set if their cause is not fixed. @defaultValue false (counted only)
   */
  includeFailed?: boolean;
  /** Count what would be enqueued; change nothing. @defaultValue false */
  dryRun?: boolean;
  /** Who runs it, for the audit trail. @defaultValue the OS user (defaultActor) */
  actor?: string;
  /** Why, for the audit trail. @defaultValue none */
  reason?: string;
  /** Write an operation record (dry runs never do). @defaultValue true */
  audit?: boolean;
  /** Ledger rows read per page. @defaultValue 2000 */
  pageSize?: number;
  /** Jobs per addBulk when unthrottled; with a rate, smaller chunks keep the pace smooth. @defaultValue 500 */
  chunkSize?: number;
  /** Called after every chunk, with the running counts. */
  onProgress?(progress: RebuildResult): void;
  /** Stops between chunks; the result then says `interrupted` and a re-run continues. */
  signal?: AbortSignal;
}

export interface RebuildResult {
  /** Pending rows read from the ledger. */
  scanned: number;
  /** Jobs added (or that would be, on a dry run), re-driven ones included. */
  enqueued: number;
  /** Rows whose job is alive (waiting, delayed, active, paused): counted, not duplicated. */
  alreadyQueued: number;
  /** Of `enqueued`: rows whose job BullMQ still held as completed or failed, removed and added again. */
  redriven: number;
  /**
   * Rows marked done, not enqueued: their job had completed after the row became pending, and only
   * the done-mark, which the worker writes behind, was lost (a worker crash).
   */
  markedDone: number;
  /**
   * Failed rows that failed in the window and whose job Redis no longer holds (lost with it, or
   * removed by retention): `replay`, `discard` and `poison list` cannot see them. Counted always.
   */
  failedWithoutJob: number;
  /** Of `failedWithoutJob`, with `includeFailed`: owed again and enqueued (also counted in `enqueued`). */
  failedRedriven: number;
  /** Queues whose configured limits or paused state were put back after a Redis wipe. */
  restored: RestoredQueue[];
  /**
   * Effects whose jobs got the default job options: neither a config file nor a worker's record
   * (`QueueSettings.recordConfigs`) describes them.
   */
  defaultJobOptions: string[];
  dryRun: boolean;
  /** Stopped by the signal before the end of the window. */
  interrupted: boolean;
  /**
   * Redis lost its data while this ran (a restart without persistence, a flush): jobs it had added
   * before may be gone with it. Run it again; what is still owed and has no job is enqueued then.
   */
  redisLost: boolean;
}

const DEFAULT_PAGE_SIZE = 2000;
/**
 * A job that completed this recently may have its done-mark on the way (workers write them behind,
 * within milliseconds unless the database is slow): its row is left to its worker, counted as
 * already queued, and settled by a later rebuild if the mark never comes.
 */
const SETTLE_AFTER_MS = 5000;
const DEFAULT_CHUNK_SIZE = 500;
const PUSHES_IN_FLIGHT = 2;
/** Outlives any rebuild; only a run killed before its end leaves its key, for this long. */
const RUN_KEY_TTL_S = 7 * 86_400;

/**
 * Re-drives what the ledger says is owed: every row that became pending in the window (its
 * pending_since, not its created_at: a replayed row is owed from the replay) gets a job unless one is
 * alive. A job BullMQ still holds as completed or failed while the row is pending is not alive: it is
 * removed and added again, or the effect would be lost. Pages through the ledger with a keyset
 * cursor (the next page is read while this one is enqueued), so memory stays flat. After a Redis
 * wipe it first puts back the queues' configured limits and paused state.
 */
export async function rebuild(
  runtime: Runtime,
  options: RebuildOptions,
): Promise<RebuildResult & { operationId?: string }> {
  const window = checkWindow(options);
  await assertMigrated(runtime.db, runtime.settings.schema);
  await checkEffects(runtime, options.effects);
  const run = () => scanAndEnqueue(runtime, { ...options, ...window });
  if (options.dryRun || options.audit === false) return run();
  return audited(
    runtime,
    {
      command: 'rebuild',
      actor: options.actor,
      reason: options.reason,
      filter: {
        since: new Date(window.since).toISOString(),
        until: new Date(window.until).toISOString(),
        ...(options.effects?.length ? { effects: options.effects } : {}),
        ...(options.rate ? { rate: options.rate } : {}),
        ...(options.includeFailed ? { includeFailed: true } : {}),
      },
    },
    run,
    {
      counts: (r) => ({
        scanned: r.scanned,
        enqueued: r.enqueued,
        alreadyQueued: r.alreadyQueued,
        redriven: r.redriven,
        markedDone: r.markedDone,
        failedWithoutJob: r.failedWithoutJob,
        failedRedriven: r.failedRedriven,
      }),
      interrupted: (r) => r.interrupted || r.redisLost,
    },
  );
}

function checkWindow(options: RebuildOptions, now = Date.now()): { since: number; until: number } {
  const until = options.until ?? now;
  if (!Number.isFinite(options.since)) throw new UsageError('--since is required: a duration before now (3h) or an ISO timestamp.');
  assertTimeWindow(options.since, until, now);
  if (options.rate !== undefined && !(options.rate > 0)) {
    throw new UsageError(`--rate ${options.rate} is not a positive rate; expected something like 50/s.`);
  }
  return { since: options.since, until };
}

/** With a config, effects are what it defines; without one, what the ledger has rows for. */
async function checkEffects(runtime: Runtime, effects: string[] | undefined): Promise<void> {
  if (!effects?.length) return;
  const configured = [...runtime.effectsByName.keys()];
  const known = configured.length ? configured : (await runtime.ledger.countByEffect()).map((c) => c.effect);
  const unknown = effects.filter((e) => !known.includes(e));
  if (unknown.length) {
    throw new UsageError(
      `Unknown effect(s): ${unknown.join(', ')}. Known: ${known.join(', ') || '(none)'}.`,
    );
  }
}

async function scanAndEnqueue(
  runtime: Runtime,
  options: RebuildOptions & { since: number; until: number },
): Promise<RebuildResult> {
  const dryRun = Boolean(options.dryRun);
  const result: RebuildResult = {
    scanned: 0,
    enqueued: 0,
    alreadyQueued: 0,
    redriven: 0,
    markedDone: 0,
    failedWithoutJob: 0,
    failedRedriven: 0,
    restored: [],
    defaultJobOptions: [],
    dryRun,
    interrupted: false,
    redisLost: false,
  };
  // A key of this run's, set before the first push: if it is gone at the end, so may be what it pushed.
  const runKey = redisKeys(runtime.settings.prefix).rebuildRun(randomUUID());
  if (!dryRun) await runtime.redis.set(runKey, '1', 'EX', RUN_KEY_TTL_S);
  const configs = await queueConfigs(runtime);
  result.restored = await restoreQueueSettings(runtime, { queues: options.effects, dryRun, configs });
  const withDefaults = new Set<string>();
  /** Names the effects of these rows that neither a config file nor a worker's record describes. */
  const noteDefaults = (rows: PendingRef[]) => {
    for (const row of rows) if (!configs.has(row.effect)) withDefaults.add(row.effect);
    result.defaultJobOptions = [...withDefaults].sort();
  };

  const chunkSize = chunkSizeForRate(options.rate, options.chunkSize ?? DEFAULT_CHUNK_SIZE);
  // Up to a quarter second of catch-up, so a slow moment (a page boundary, a busy Redis) does not
  // lower the long-run rate; only one chunk at the start, so a short run is not faster than asked.
  const bucket = options.rate
    ? new TokenBucket(options.rate, { burst: Math.max(chunkSize, options.rate / 4), initial: chunkSize })
    : undefined;
  const aborted = () => Boolean(options.signal?.aborted);
  const pushes = new PushWindow(PUSHES_IN_FLIGHT);

  for await (const rows of windowPages(runtime, 'pending', options)) {
    if (aborted()) break;
    result.scanned += rows.length;
    const { missing, failed, completed } = await partitionByLiveness(runtime, rows);
    const { settled, notCovered } = await settleLostDoneMarks(runtime, completed, dryRun);
    result.markedDone += settled.size;
    const finished = [...failed, ...notCovered];
    // Between the scan and now a finished job's row may have been marked done: only re-drive what is still owed.
    const redrive = finished.length ? await stillPending(runtime, finished) : [];
    const toEnqueue = redrive.length ? [...missing, ...redrive] : missing;
    noteDefaults(toEnqueue);
    // Rows whose mark is on its way count here too: their job exists, and nothing is added for them.
    result.alreadyQueued += rows.length - toEnqueue.length - settled.size;

    if (dryRun) {
      result.enqueued += toEnqueue.length;
      result.redriven += redrive.length;
      options.onProgress?.({ ...result });
      continue;
    }
    let handed = 0;
    for (let i = 0; i < toEnqueue.length && !aborted(); i += chunkSize) {
      const chunk = toEnqueue.slice(i, i + chunkSize);
      await bucket?.take(chunk.length, options.signal);
      if (aborted()) break;
      // A finished job is removed just before its row is pushed again (an add with its id would be
      // a no-op), chunk by chunk: a run stopped between chunks leaves no row without its job.
      const finishedInChunk = i + chunk.length > missing.length ? chunk.slice(Math.max(0, missing.length - i)) : [];
      await pushes.add(async () => {
        if (finishedInChunk.length) await removeJobs(runtime, finishedInChunk);
        await pushRows(runtime, chunk, configs);
        result.enqueued += chunk.length;
        options.onProgress?.({ ...result });
      });
      handed += chunk.length;
    }
    // Redriven rows come last in the page; interrupted, the counts cover only what was handled, and
    // the rest (still pending, with no job) is what a re-run picks up.
    result.redriven += Math.max(0, handed - missing.length);
    result.scanned -= toEnqueue.length - handed;
  }

  // Failed rows whose job is gone are owed nothing by the pass above, and no command that reads Redis
  // sees them: count them, and with includeFailed owe them again. After the pending pass, so a row
  // put back here is not found pending there and pushed twice.
  for await (const rows of aborted() ? [] : windowPages(runtime, 'failed', options)) {
    if (aborted()) break;
    const { missing: lost } = await partitionByLiveness(runtime, rows);
    result.failedWithoutJob += lost.length;
    if (!options.includeFailed || lost.length === 0) continue;
    if (dryRun) {
      noteDefaults(lost);
      result.failedRedriven += lost.length;
      result.enqueued += lost.length;
      options.onProgress?.({ ...result });
      continue;
    }
    for (let i = 0; i < lost.length && !aborted(); i += chunkSize) {
      const chunk = lost.slice(i, i + chunkSize);
      await bucket?.take(chunk.length, options.signal);
      if (aborted()) break;
      // Owed first, then pushed: a push that fails leaves pending rows, which the next rebuild enqueues.
      const reopened = await runtime.ledger.setStatus(chunk.map((row) => row.id), 'pending', { countReplay: true, from: ['failed'] });
      const owed = chunk.filter((row) => reopened.has(row.id));
      noteDefaults(owed);
      await pushes.add(async () => {
        // The alert records of jobs removed by retention may outlive them: a new poisoning is news.
        await forgetAlertsOf(runtime, owed);
        await pushRows(runtime, owed, configs);
        // Redis lost their replay counts with the jobs: poison list flags a row sent round again and again by the ledger's.
        await restoreReplayCounts(runtime, owed, reopened);
        result.enqueued += owed.length;
        result.failedRedriven += owed.length;
        options.onProgress?.({ ...result });
      });
    }
  }
  await pushes.drain();
  result.interrupted = aborted();
  if (!dryRun) result.redisLost = (await runtime.redis.del(runKey)) === 0;
  return result;
}

/**
 * At most `size` addBulk calls in flight: Redis works through one chunk while this process builds
 * the next, instead of each waiting for the other. A failed push fails the next add (or the drain).
 */
class PushWindow {
  private readonly inFlight = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(private readonly size: number) {}

  async add(push: () => Promise<void>): Promise<void> {
    while (this.inFlight.size >= this.size) await Promise.race(this.inFlight);
    this.throwIfFailed();
    const running: Promise<void> = push()
      .catch((error: unknown) => {
        this.failure ??= { error };
      })
      .finally(() => this.inFlight.delete(running));
    this.inFlight.add(running);
  }

  async drain(): Promise<void> {
    await Promise.all(this.inFlight);
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }
}

/**
 * Keyset pages of the window's pending rows (by when they became pending) or failed rows (by when
 * they failed); the next page is already being read while the caller works on this one.
 */
async function* windowPages(
  runtime: Runtime,
  status: 'pending' | 'failed',
  options: { since: number; until: number; effects?: string[]; pageSize?: number },
): AsyncGenerator<PendingRef[]> {
  const read = (after?: ScanCursor) => {
    const scan = { since: options.since, until: options.until, effects: options.effects, after, limit: options.pageSize ?? DEFAULT_PAGE_SIZE };
    return status === 'pending' ? runtime.ledger.scanPending(scan) : runtime.ledger.scanFailed(scan);
  };
  let next: Promise<RowPage> | undefined = read();
  while (next) {
    const page: RowPage = await next;
    next = page.next ? read(page.next) : undefined;
    // A prefetched page that fails while the caller is busy must not become an unhandled rejection.
    next?.catch(() => undefined);
    if (page.rows.length) yield page.rows;
  }
}

/** Splits a page by the state of each row's job: none, or one BullMQ still holds as failed or completed. */
async function partitionByLiveness(runtime: Runtime, rows: PendingRef[]) {
  const keys = redisKeys(runtime.settings.prefix);
  const states = await jobLiveness(runtime.redis, rows.map((row) => keys.job(row.effect, jobIdForRow(row.id))));
  const missing: PendingRef[] = [];
  const failed: PendingRef[] = [];
  const completed: Array<{ row: PendingRef; finishedOn: number }> = [];
  rows.forEach((row, i) => {
    const job = states[i];
    if (job.state === 'missing') missing.push(row);
    else if (job.state === 'failed') failed.push(row);
    else if (job.state === 'completed') completed.push({ row, finishedOn: job.finishedOn });
  });
  return { missing, failed, completed };
}

/**
 * Pending rows whose job completed after they became pending: the effect ran, and the row waits for
 * its done-mark. Marked done here when the job completed over `SETTLE_AFTER_MS` ago (the mark was
 * lost); left to the worker when more recently. The others (the row became pending again after its
 * job ran: a replay) are for re-driving.
 */
async function settleLostDoneMarks(runtime: Runtime, completed: Array<{ row: PendingRef; finishedOn: number }>, dryRun: boolean) {
  const jobs = completed.map(({ row, finishedOn }) => ({ id: row.id, finishedOn }));
  const covered = await runtime.ledger.coveredByCompletedJobs(jobs);
  const settleBefore = Date.now() - SETTLE_AFTER_MS;
  const lost = jobs.filter((job) => covered.has(job.id) && job.finishedOn <= settleBefore);
  const settled = dryRun ? new Set(lost.map((job) => job.id)) : await runtime.ledger.settleCompleted(lost);
  return { settled, notCovered: completed.filter(({ row }) => !covered.has(row.id)).map(({ row }) => row) };
}

async function stillPending(runtime: Runtime, rows: PendingRef[]): Promise<PendingRef[]> {
  const current = await runtime.ledger.findByIds(rows.map((r) => r.id));
  return rows.filter((r) => current.get(r.id)?.status === 'pending');
}

/**
 * A finished job keeps its id; it has to go before `add` with that id creates a job again, and with
 * it the record that it was alerted on (the new job may become a poison pill, which is news).
 */
async function removeJobs(runtime: Runtime, rows: PendingRef[]): Promise<void> {
  await Promise.all(rows.map((row) => runtime.queues.get(row.effect).remove(jobIdForRow(row.id))));
  await forgetAlertsOf(runtime, rows);
}

/** Sets the replay count of the rows' jobs (`poison list`'s) to the ledger's. */
async function restoreReplayCounts(runtime: Runtime, rows: PendingRef[], replayCounts: Map<string, number>): Promise<void> {
  const keys = redisKeys(runtime.settings.prefix);
  const pipeline = runtime.redis.pipeline();
  for (const row of rows) pipeline.hset(keys.replayCount(row.effect), jobIdForRow(row.id), String(replayCounts.get(row.id) ?? 1));
  await pipeline.exec();
}

/** Forgets that the rows' jobs were alerted on, effect by effect. */
async function forgetAlertsOf(runtime: Runtime, rows: PendingRef[]): Promise<void> {
  for (const effect of new Set(rows.map((row) => row.effect))) {
    const ids = rows.filter((row) => row.effect === effect).map((row) => jobIdForRow(row.id));
    await forgetAlerts(runtime.redis, runtime.settings.prefix, effect, ids);
  }
}
