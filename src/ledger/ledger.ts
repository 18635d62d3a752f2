import type { Knex } from 'knex';
import { fromDb, type DbLedgerRow, type LedgerRow, type LedgerStatus } from './rows.js';

export interface FailureRecord {
  id: string;
  /** Attempts made so far, this one included. */
  attempts: number;
  error: string;
  /** The last allowed attempt failed: the row becomes `failed`. */
  final: boolean;
}

/**
 * A window on when rows came to their status: for pending rows when they became pending
 * (pending_since: emitted, or put back by a replay), for failed rows when they failed (finished_at).
 */
export interface WindowScan {
  /** Inclusive lower bound, epoch ms. */
  since: number;
  /** Exclusive upper bound, epoch ms. @defaultValue now */
  until?: number;
  effects?: string[];
  /** Keyset cursor: where the previous page ended (its `next`). */
  after?: ScanCursor;
  limit: number;
}

/**
 * The last row of a page: its time exactly, to the microsecond, as text. A JS Date would round it to
 * the millisecond, and a cursor rounded down re-reads rows forever when many share a timestamp
 * (every row of one emit or replay transaction does).
 */
export interface ScanCursor {
  at: string;
  id: string;
}

/** Each status a window scan reads, and the column its window and order are on (each has a partial index on (column, id)). */
const WINDOW_COLUMN = { pending: 'pending_since', failed: 'finished_at' } as const;
type WindowStatus = keyof typeof WINDOW_COLUMN;

/** What a job is built from (a rebuild, emit): a pending row's ids, nothing to parse in vain. */
export type PendingRef = Pick<LedgerRow, 'id' | 'event' | 'eventId' | 'effect'>;

/** What the worker checks before running a job: whose row it is and whether it is still owed. */
export type LedgerCheck = Pick<LedgerRow, 'id' | 'event' | 'eventId' | 'effect' | 'status'>;

export interface RowPage {
  rows: PendingRef[];
  /** The cursor of the next page; undefined when this page was the last (not full). */
  next?: ScanCursor;
}

export interface EffectCounts {
  effect: string;
  pending: number;
  done: number;
  failed: number;
  discarded: number;
}

/** Longest error text kept in the ledger; the full stack stays on the BullMQ job. */
const MAX_ERROR_LENGTH = 2000;

/** An error message as a text column takes it: PostgreSQL text cannot hold a NUL character. */
function storableError(message: string): string {
  return message.replaceAll('\u0000', '\uFFFD').slice(0, MAX_ERROR_LENGTH);
}

/** A job BullMQ holds as completed: its ledger row id and its `finishedOn` (epoch ms). */
export interface CompletedJob {
  id: string;
  finishedOn: number;
}

const COMPLETED_JOBS = 'unnest(?::bigint[], ?::bigint[]) as j(id, finished_on)';
const COVERED_BY_ITS_JOB = `l.id = j.id and l.status = 'pending' and l.pending_since <= to_timestamp(j.finished_on / 1000.0)`;
const completedJobBindings = (jobs: readonly CompletedJob[]) => [jobs.map((j) => j.id), jobs.map((j) => j.finishedOn)];

/**
 * Every SQL statement on the ledger table. Callers pass ids as strings (bigint) and get rows in
 * camelCase; the column names stay in this file.
 */
export class Ledger {
  constructor(
    readonly db: Knex,
    readonly schema: string,
    /**
     * How long a worker's failure record may wait for its answer. Past it, its connection is dropped
     * (one that died without a word would otherwise hold the job until the OS gives up on it, many
     * minutes) and the record is retried on another, as a transient failure.
     */
    private readonly recordTimeoutMs = 10_000,
  ) {}

  private table(on: Knex | Knex.Transaction = this.db) {
    return on.withSchema(this.schema).table('ledger');
  }

  /**
   * Records that an event occurrence owes these effects, in the caller's transaction if given. Only
   * the new ids are read back: the app's knex may rename the columns a query returns
   * (`postProcessResponse`, such as a camelCase mapper), and the rest is what was just written.
   */
  async owe(event: string, eventId: string, effects: string[], trx?: Knex.Transaction): Promise<PendingRef[]> {
    if (effects.length === 0) return [];
    const inserted = (await this.table(trx)
      .insert(effects.map((effect) => ({ event, event_id: eventId, effect })))
      .returning(['id', 'effect'])) as Array<{ id: string | number; effect: string }>;
    const idOf = new Map(inserted.map((row) => [row.effect, String(row.id)]));
    return effects.map((effect) => ({ id: idOf.get(effect)!, event, eventId, effect }));
  }

  async findByIds(ids: readonly string[]): Promise<Map<string, LedgerRow>> {
    const found = new Map<string, LedgerRow>();
    if (ids.length === 0) return found;
    const rows = (await this.table().whereIn('id', ids as string[])) as DbLedgerRow[];
    for (const row of rows) found.set(String(row.id), fromDb(row));
    return found;
  }

  async findByEvent(event: string, eventId: string, effect?: string): Promise<LedgerRow[]> {
    const query = this.table().where({ event, event_id: eventId }).orderBy('id');
    if (effect) query.andWhere({ effect });
    return ((await query) as DbLedgerRow[]).map(fromDb);
  }

  /**
   * Of the rows of these completed jobs, the pending ones whose job finished after the row last
   * became pending: the effect ran for it, and the row waits only for its done-mark. A row made
   * pending again after its job finished (a replay) is not covered. Times are epoch ms; the job's
   * comes from the worker's clock, so a clock behind PostgreSQL's errs towards running again.
   */
  async coveredByCompletedJobs(jobs: readonly CompletedJob[]): Promise<Set<string>> {
    if (jobs.length === 0) return new Set();
    const result = await this.db.raw<{ rows: Array<{ id: string }> }>(
      `select l.id from ??.ledger as l, ${COMPLETED_JOBS} where ${COVERED_BY_ITS_JOB}`,
      [this.schema, ...completedJobBindings(jobs)],
    );
    return new Set(result.rows.map((r) => String(r.id)));
  }

  /**
   * Marks done the rows `coveredByCompletedJobs` finds (checked again in the statement), finished
   * when their job did. Returns the ids it marked.
   */
  async settleCompleted(jobs: readonly CompletedJob[]): Promise<Set<string>> {
    if (jobs.length === 0) return new Set();
    const result = await this.db.raw<{ rows: Array<{ id: string }> }>(
      `update ??.ledger as l
          set status = 'done', finished_at = to_timestamp(j.finished_on / 1000.0), updated_at = now(), last_error = null
         from ${COMPLETED_JOBS}
        where ${COVERED_BY_ITS_JOB}
       returning l.id`,
      [this.schema, ...completedJobBindings(jobs)],
    );
    return new Set(result.rows.map((r) => String(r.id)));
  }

  /** Records failed attempts in one statement; a final failure turns the row `failed`. */
  async recordFailures(records: readonly FailureRecord[]): Promise<void> {
    if (records.length === 0) return;
    const values = records.map(() => '(?::bigint, ?::int, ?::text, ?::boolean)').join(', ');
    const bindings = records.flatMap((r) => [r.id, r.attempts, storableError(r.error), r.final]);
    await this.db.raw(
      `update ??.ledger as l
          set attempts = greatest(l.attempts, v.attempts),
              last_error = v.error,
              status = case when v.final then 'failed' else l.status end,
              finished_at = case when v.final then now() else l.finished_at end,
              updated_at = now()
         from (values ${values}) as v(id, attempts, error, final)
        where l.id = v.id and l.status in ('pending', 'failed')`,
      [this.schema, ...bindings],
    ).timeout(this.recordTimeoutMs);
  }

  /**
   * The database's clock, what `updated_at` is written with: to the microsecond, as text (a JS Date
   * would round it down to the millisecond, before rows written in the same millisecond).
   */
  async now(): Promise<string> {
    const result = await this.db.raw<{ rows: Array<{ now: string }> }>(
      `select to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as now`,
    );
    return result.rows[0].now;
  }

  /**
   * Sets rows' status (replay puts failed rows back to pending, discard marks them discarded). A row
   * made pending is owed from now on, however old it is: rebuild windows are on pending_since.
   * `updatedBy`: only rows last written at or before this time (of `now()`). Returns the rows it
   * changed: id to replay count.
   */
  async setStatus(
    ids: readonly string[],
    status: LedgerStatus,
    options: { countReplay?: boolean; from?: LedgerStatus[]; updatedBy?: string } = {},
  ): Promise<Map<string, number>> {
    if (ids.length === 0) return new Map();
    const query = this.table().whereIn('id', ids as string[]);
    if (options.from) query.whereIn('status', options.from);
    if (options.updatedBy) query.whereRaw('updated_at <= ?::timestamptz', [options.updatedBy]);
    const changed = (await query.update(
      {
        status,
        updated_at: this.db.fn.now(),
        finished_at: status === 'pending' ? null : this.db.fn.now(),
        ...(status === 'pending' ? { pending_since: this.db.fn.now() } : {}),
        ...(options.countReplay ? { replay_count: this.db.raw('replay_count + 1') } : {}),
      },
      ['id', 'replay_count'],
    )) as Array<{ id: string | number; replay_count: number }>;
    return new Map(changed.map((r) => [String(r.id), Number(r.replay_count)]));
  }

  /** One page of pending rows in (pending_since, id) order: a range scan of the partial index. */
  scanPending(scan: WindowScan): Promise<RowPage> {
    return this.scanWindow('pending', scan);
  }

  /** One page of failed rows in (finished_at, id) order, by when they failed: a range scan of the partial index. */
  scanFailed(scan: WindowScan): Promise<RowPage> {
    return this.scanWindow('failed', scan);
  }

  /** How many pending rows a scan of this window would read (the total of a progress bar). */
  async countPending(scan: Omit<WindowScan, 'after' | 'limit'>): Promise<number> {
    const [row] = (await this.inWindow('pending', scan).count<Array<{ count: string }>>('* as count')) as Array<{ count: string }>;
    return Number(row?.count ?? 0);
  }

  private async scanWindow(status: WindowStatus, scan: WindowScan): Promise<RowPage> {
    const column = WINDOW_COLUMN[status];
    const query = this.inWindow(status, scan)
      .select(
        'id',
        'event',
        'event_id',
        'effect',
        this.db.raw(`to_char(?? at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_at`, [column]),
      )
      .orderBy([{ column }, { column: 'id' }])
      .limit(scan.limit);
    if (scan.after) query.andWhereRaw('(??, id) > (?::timestamptz, ?::bigint)', [column, scan.after.at, scan.after.id]);
    const found = (await query) as Array<Pick<DbLedgerRow, 'id' | 'event' | 'event_id' | 'effect'> & { cursor_at: string }>;
    const last = found.at(-1);
    return {
      rows: found.map((r) => ({ id: String(r.id), event: r.event, eventId: r.event_id, effect: r.effect })),
      next: last && found.length === scan.limit ? { at: last.cursor_at, id: String(last.id) } : undefined,
    };
  }

  /** Rows of `status` whose window column is in the window, of the given effects: what a scan reads. */
  private inWindow(status: WindowStatus, scan: Omit<WindowScan, 'after' | 'limit'>) {
    const column = WINDOW_COLUMN[status];
    const query = this.table()
      .where('status', status)
      .andWhere(column, '>=', new Date(scan.since))
      .andWhere(column, '<', new Date(scan.until ?? Date.now()));
    if (scan.effects?.length) query.whereIn('effect', scan.effects);
    return query;
  }

  /** Those of `effects` that have pending rows: one index probe per effect, whatever the ledger's size. */
  async effectsWithPending(effects: readonly string[]): Promise<string[]> {
    if (effects.length === 0) return [];
    const { rows } = (await this.db.raw(
      `select e.effect from unnest(?::text[]) as e(effect)
        where exists (select 1 from ??.ledger l where l.effect = e.effect and l.status = 'pending')`,
      [effects as string[], this.schema],
    )) as { rows: Array<{ effect: string }> };
    return rows.map((r) => r.effect);
  }

  /** Rows per effect and status, for `effects status`. */
  async countByEffect(): Promise<EffectCounts[]> {
    const rows = (await this.table()
      .select('effect', 'status')
      .count<Array<{ effect: string; status: LedgerStatus; count: string }>>('* as count')
      .groupBy('effect', 'status')) as Array<{ effect: string; status: LedgerStatus; count: string }>;
    const byEffect = new Map<string, EffectCounts>();
    for (const row of rows) {
      const counts =
        byEffect.get(row.effect) ?? { effect: row.effect, pending: 0, done: 0, failed: 0, discarded: 0 };
      counts[row.status] = Number(row.count);
      byEffect.set(row.effect, counts);
    }
    return [...byEffect.values()].sort((a, b) => a.effect.localeCompare(b.effect));
  }
}
