import DataLoader from 'dataloader';
import type { LedgerHotPath } from '../ledger/hot-path.js';
import type { Ledger, FailureRecord, LedgerCheck } from '../ledger/ledger.js';
import { isTransientDbError, withDbRetry } from '../ledger/retry.js';
import { asError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

const MAX_BATCH = 500;
/**
 * Statements of the hot path in flight at once. One: everything that arrives while it runs joins the
 * next, so the batch grows with the load and the statement count does not. In paired runs on a
 * 2-core machine two in flight made smaller batches, more CPU per job and lower throughput
 * (`npm run bench -- worker-throughput`).
 */
const MAX_IN_FLIGHT = 1;

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

/**
 * The worker's ledger traffic, batched. Every job in flight asks for its row before it runs and
 * reports "done" after; both kinds of request go out together as one statement
 * (`LedgerHotPath.markDoneAndFind`). While a statement is in flight, new requests wait and join the next
 * one, so the batch grows with the load instead of the number of statements: a round trip to
 * PostgreSQL costs far more than one more id in it. A job's done-mark is committed before its
 * promise resolves, so BullMQ completes a job only after the ledger says done.
 *
 * Failures are rare; they keep their own statement (one per event-loop turn).
 */
export class LedgerBatcher {
  private reads = new Map<string, Waiter<LedgerCheck | null>[]>();
  private doneMarks = new Map<string, Waiter<true>[]>();
  private inFlight = 0;
  private scheduled = false;
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

  load(id: string): Promise<LedgerCheck | null> {
    return this.enqueue(this.reads, id);
  }

  markDone(id: string): Promise<true> {
    return this.enqueue(this.doneMarks, id);
  }

  recordFailure(record: FailureRecord): Promise<true> {
    return this.failures.load(record);
  }

  /** Closes the hot path's connection; call once no job is left to ask. */
  close(): Promise<void> {
    return this.hotPath.close();
  }

  private enqueue<T>(queue: Map<string, Waiter<T>[]>, id: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const waiters = queue.get(id);
      if (waiters) waiters.push({ resolve, reject });
      else queue.set(id, [{ resolve, reject }]);
      this.schedule();
    });
  }

  /** Flushes on the next turn (so requests of this turn join), unless enough statements are out. */
  private schedule(): void {
    if (this.scheduled || this.inFlight >= MAX_IN_FLIGHT) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    const reads = take(this.reads, MAX_BATCH);
    const doneMarks = take(this.doneMarks, MAX_BATCH);
    if (reads.size === 0 && doneMarks.size === 0) return;
    this.inFlight += 1;
    try {
      const found = await withDbRetry(
        () => this.hotPath.markDoneAndFind([...doneMarks.keys()], [...reads.keys()]),
        this.log,
        'read and done-mark',
      );
      for (const waiters of doneMarks.values()) for (const w of waiters) w.resolve(true);
      for (const [id, waiters] of reads) for (const w of waiters) w.resolve(found.get(id) ?? null);
    } catch (error) {
      for (const waiters of [...doneMarks.values(), ...reads.values()]) for (const w of waiters) w.reject(error);
    } finally {
      this.inFlight -= 1;
      if (this.reads.size > 0 || this.doneMarks.size > 0) this.schedule();
    }
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
