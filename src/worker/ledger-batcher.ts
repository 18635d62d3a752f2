import DataLoader from 'dataloader';
import type { Ledger, FailureRecord } from '../ledger/ledger.js';
import type { LedgerRow } from '../ledger/rows.js';
import { withDbRetry } from '../ledger/retry.js';
import type { Logger } from '../core/logger.js';

const MAX_BATCH = 500;
/** Collect for one turn of the event loop: jobs finishing together share one statement. */
const nextTurn = (callback: () => void) => setImmediate(callback);

/**
 * The worker's ledger traffic, batched: every job in flight asks for its row and reports its outcome
 * individually, and each kind of request becomes one statement per event-loop turn. Without this a
 * per-job select + update caps throughput at a fraction of raw BullMQ.
 */
export class LedgerBatcher {
  private readonly rows: DataLoader<string, LedgerRow | null>;
  private readonly doneMarks: DataLoader<string, true>;
  private readonly failures: DataLoader<FailureRecord, true>;

  constructor(ledger: Ledger, log: Logger) {
    const options = { cache: false, maxBatchSize: MAX_BATCH, batchScheduleFn: nextTurn };
    this.rows = new DataLoader(async (ids) => {
      const found = await withDbRetry(() => ledger.findByIds(ids), log, 'read');
      return ids.map((id) => found.get(id) ?? null);
    }, options);
    this.doneMarks = new DataLoader(async (ids) => {
      await withDbRetry(() => ledger.markDone(ids), log, 'done-mark');
      return ids.map(() => true as const);
    }, options);
    this.failures = new DataLoader(async (records) => {
      await withDbRetry(() => ledger.recordFailures(records), log, 'failure record');
      return records.map(() => true as const);
    }, options);
  }

  load(id: string): Promise<LedgerRow | null> {
    return this.rows.load(id);
  }

  markDone(id: string): Promise<true> {
    return this.doneMarks.load(id);
  }

  recordFailure(record: FailureRecord): Promise<true> {
    return this.failures.load(record);
  }
}
