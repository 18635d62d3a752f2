import DataLoader from 'dataloader';
import type { LedgerHotPath } from '../ledger/hot-path.js';
import type { Ledger, FailureRecord, LedgerCheck, PendingRef } from '../ledger/ledger.js';
import { isTransientDbError, withDbRetry } from '../ledger/retry.js';
import { asError } from '../core/errors.js';
import { sleep } from '../core/sleep.js';
import { errorSummary, type Logger } from '../core/logger.js';

const MAX_BATCH = 500;
/**
 * Reads out at once. Reads have one connection, so the second waits in the driver's queue and goes
 * to the server the moment the first returns: PostgreSQL reads the next batch while the worker
 * runs the jobs of the last one, instead of waiting for them to be handed out first. Everything that
 * arrives meanwhile joins the batch after, so the batch still grows with the load. Two against one,
 * interleaved in one worker process on a 2-core machine: 2-9% more jobs/s and 5-11% less worker CPU
 * per job in five runs out of five. A second read that waits in the driver's queue longer than the
 * pool's 3 s (behind a first one stuck on a lock) is rejected there, and retried as transient.
 */
const READS_IN_FLIGHT = 2;
/**
 * How long a done-mark waits for others to join it. Each done-mark statement is a commit with its
 * index updates: written every few milliseconds with the reads, they cost the worker and
 * PostgreSQL a quarter of the worker's throughput on a 2-core machine; every 20 ms they come in
 * batches of hundreds at full load.
 */
const DONE_MARK_DELAY_MS = 20;
/** After a done-mark statement failed for good (retries included), wait this long before the next. */
const DONE_MARK_RETRY_MS = 1000;
/**
 * Done-marks held beyond this make the next job wait for a write: a worker whose database is slow or
 * refuses the marks goes at the ledger's pace instead of holding marks without bound.
 */
const MAX_HELD_MARKS = 10 * MAX_BATCH;

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

/**
 * The worker's ledger traffic, batched. Every job in flight asks for its row before it runs; while
 * reads are out (`READS_IN_FLIGHT`), new requests wait and join the next one, so the batch grows
 * with the load instead of the number of statements: a round trip to PostgreSQL costs far more than
 * one more id.
 *
 * Done-marks are written behind: a job completes as soon as its effect has run, and its row is
 * marked done with the others of the next `DONE_MARK_DELAY_MS`. Until the mark is committed this
 * batcher answers reads of that row as done, so a duplicate job in this process is skipped. What a
 * crash loses is the marks of the last moments: those rows stay pending although their jobs
 * completed, and the next rebuild (the scheduler's, hourly by default) marks them done from BullMQ's
 * completed jobs without running them again. `close()` writes what is left.
 *
 * Failures are rare; they keep their own statement (one per event-loop turn), awaited by the job,
 * so that the ledger has the attempt before BullMQ retries it.
 */
export class LedgerBatcher {
  private reads = new Map<string, Waiter<LedgerCheck | null>[]>();
  private readsInFlight = 0;
  private readScheduled = false;
  /** Done-marks waiting for the next statement, and those of the statement in flight. */
  private doneMarks = new Map<string, PendingRef>();
  private writing = new Map<string, PendingRef>();
  private doneMarkTimer: NodeJS.Timeout | undefined;
  private doneMarkWrite: Promise<boolean> | undefined;
  private closed = false;
  /** Stops the retries of a done-mark statement when close() runs out of time. */
  private readonly stopRetrying = new AbortController();
  private readonly failures: DataLoader<FailureRecord, true>;

  constructor(
    ledger: Ledger,
    private readonly hotPath: LedgerHotPath,
    private readonly log: Logger,
  ) {
    const record = (batch: readonly FailureRecord[]) => withDbRetry(() => ledger.recordFailures(batch), log, 'failure record');
    /**
     * A record the database refuses for good (a trigger, a constraint, text it cannot store) is
     * written again without its error text: a final failure left pending would be re-driven by every
     * rebuild, and attempts and status matter more than the message, which the job keeps anyway.
     */
    const recordWithoutText = (one: FailureRecord, refusal: unknown) => {
      const code = (refusal as { code?: string }).code ?? 'unknown';
      return record([{ ...one, error: `the error text could not be recorded (SQLSTATE ${code}); the job's failedReason has it` }]);
    };
    const recordOne = (one: FailureRecord) =>
      record([one])
        .catch((refusal: unknown) => {
          if (isTransientDbError(refusal)) throw refusal;
          return recordWithoutText(one, refusal);
        })
        .then(() => true as const, asError);
    this.failures = new DataLoader(
      async (records) => {
        try {
          await record(records);
          return records.map(() => true as const);
        } catch (error) {
          // A database that stayed away fails them all; one record it refuses must not fail the others.
          if (isTransientDbError(error)) return records.map(() => asError(error));
          return Promise.all(records.map(recordOne));
        }
      },
      { cache: false, maxBatchSize: MAX_BATCH, batchScheduleFn: (callback) => setImmediate(callback) },
    );
  }

  /** The row of ledger id `id`, or null when there is none. */
  load(id: string): Promise<LedgerCheck | null> {
    const marked = this.doneMarks.get(id) ?? this.writing.get(id);
    if (marked) return Promise.resolve({ ...marked, status: 'done' });
    return new Promise((resolve, reject) => {
      const waiters = this.reads.get(id);
      if (waiters) waiters.push({ resolve, reject });
      else this.reads.set(id, [{ resolve, reject }]);
      this.scheduleRead();
    });
  }

  /**
   * Marks the row done, behind: the mark is written with the next batch, and the promise resolves at
   * once unless `MAX_HELD_MARKS` are waiting to be written (then after the next write).
   */
  markDone(row: PendingRef): Promise<void> {
    this.doneMarks.set(row.id, row);
    if (this.doneMarks.size < MAX_BATCH) {
      this.scheduleDoneMarks(DONE_MARK_DELAY_MS);
      return Promise.resolve();
    }
    const write = this.writeDoneMarks();
    return this.heldDoneMarks >= MAX_HELD_MARKS ? write.then(() => undefined) : Promise.resolve();
  }

  /** Done-marks not yet committed: waiting for the next statement, or in the one in flight. */
  get heldDoneMarks(): number {
    return this.doneMarks.size + this.writing.size;
  }

  recordFailure(record: FailureRecord): Promise<true> {
    return this.failures.load(record);
  }

  /**
   * Writes the done-marks still held, waiting at most `timeoutMs` for the database, then closes the
   * hot path's connections (in the background when the deadline has passed). Call once no job is
   * left to run. Returns how many marks were not written.
   */
  async close({ timeoutMs = 5000 }: { timeoutMs?: number } = {}): Promise<{ unwritten: number }> {
    this.closed = true;
    clearTimeout(this.doneMarkTimer);
    const { signal } = this.stopRetrying;
    const deadline = setTimeout(() => this.stopRetrying.abort(), timeoutMs);
    // A statement in flight (stuck on a lock, say) is not waited for past the deadline: it may run
    // until the statement timeout, and shutdown must keep its deadline.
    const expired = new Promise<false>((resolve) => signal.addEventListener('abort', () => resolve(false), { once: true }));
    try {
      while ((this.doneMarkWrite || this.doneMarks.size > 0) && !signal.aborted) {
        const written = await Promise.race([this.writeDoneMarks(), expired]);
        if (!written) await sleep(DONE_MARK_RETRY_MS, signal);
      }
    } finally {
      clearTimeout(deadline);
    }
    // The marks of a statement still in flight count as unwritten: whether it commits is not known.
    const unwritten = new Set([...this.doneMarks.keys(), ...this.writing.keys()]).size;
    if (unwritten > 0) {
      this.log.warn(
        { rows: unwritten, timeoutMs },
        'done-marks not written before shutdown: these rows stay pending until a rebuild marks them done from their completed jobs',
      );
    }
    // The pool ends once a statement in flight returns, within the statement timeout.
    const ended = this.hotPath.close();
    if (signal.aborted) ended.catch(() => {});
    else await ended;
    return { unwritten };
  }

  /** Reads on the next turn (so requests of this turn join), unless enough reads are out. */
  private scheduleRead(): void {
    if (this.readScheduled || this.readsInFlight >= READS_IN_FLIGHT) return;
    this.readScheduled = true;
    setImmediate(() => {
      this.readScheduled = false;
      void this.read();
    });
  }

  private async read(): Promise<void> {
    const reads = take(this.reads, MAX_BATCH);
    if (reads.size === 0) return;
    this.readsInFlight += 1;
    try {
      const found = await withDbRetry(() => this.hotPath.find([...reads.keys()]), this.log, 'read');
      for (const [id, waiters] of reads) for (const w of waiters) w.resolve(found.get(id) ?? null);
    } catch (error) {
      for (const waiters of reads.values()) for (const w of waiters) w.reject(error);
    } finally {
      this.readsInFlight -= 1;
      if (this.reads.size > 0) this.scheduleRead();
    }
  }

  private scheduleDoneMarks(delayMs: number): void {
    if (this.closed || this.doneMarkTimer || this.doneMarkWrite) return;
    this.doneMarkTimer = setTimeout(() => void this.writeDoneMarks(), delayMs);
  }

  /**
   * Writes one batch of done-marks, one statement at a time (a call meanwhile waits for it).
   * Resolves to whether it was written.
   */
  private writeDoneMarks(): Promise<boolean> {
    clearTimeout(this.doneMarkTimer);
    this.doneMarkTimer = undefined;
    if (this.doneMarkWrite) return this.doneMarkWrite;
    if (this.doneMarks.size === 0) return Promise.resolve(true);
    this.writing = take(this.doneMarks, MAX_BATCH);
    const ids = [...this.writing.keys()];
    this.doneMarkWrite = withDbRetry(() => this.hotPath.markDone(ids), this.log, 'done-mark', this.stopRetrying.signal)
      .then(
        () => true,
        (error: unknown) => {
          // Kept for the next statement: a mark is given up only at shutdown.
          for (const [id, row] of this.writing) if (!this.doneMarks.has(id)) this.doneMarks.set(id, row);
          this.log.error(
            { rows: ids.length, willRetry: !this.closed, err: errorSummary(asError(error)) },
            'could not write done-marks',
          );
          return false;
        },
      )
      .then((written) => {
        this.writing = new Map();
        this.doneMarkWrite = undefined;
        if (this.doneMarks.size >= MAX_BATCH && written && !this.closed) void this.writeDoneMarks();
        else if (this.doneMarks.size > 0) this.scheduleDoneMarks(written ? DONE_MARK_DELAY_MS : DONE_MARK_RETRY_MS);
        return written;
      });
    return this.doneMarkWrite;
  }
}

/** Removes and returns up to `max` entries, oldest first. */
function take<T>(queue: Map<string, T>, max: number): Map<string, T> {
  const taken = new Map<string, T>();
  for (const [key, value] of queue) {
    if (taken.size >= max) break;
    taken.set(key, value);
    queue.delete(key);
  }
  return taken;
}
