import type { Runtime } from '../core/runtime.js';
import { ConnectionError, NotMigratedError } from '../core/errors.js';
import { TokenBucket, chunkSizeForRate } from '../core/token-bucket.js';
import { assertMigrated } from '../ledger/migrate.js';
import { FingerprintCache } from './fingerprint.js';
import { matchingJobs, type CompiledFilter, type JobFilter, type MatchedJob } from './job-filter.js';

/**
 * What replay and discard share: the options, the plan (what matches, counted by queue, job name
 * and error group, with an ETA), the guard on the ledger database, and the paced batch loop.
 */
export interface BulkOptions extends JobFilter {
  /** Act on at most this many jobs. @defaultValue all that match */
  limit?: number;
  /** At most this many jobs per second (a token bucket). @defaultValue unlimited */
  rate?: number;
  /** Compute the plan and change nothing. @defaultValue false */
  dryRun?: boolean;
  /**
   * Act on jobs that last failed before this time (epoch ms), within the filter's window: the moment
   * an operator was shown the count they confirmed. Not part of the audited filter, which keeps what
   * the operator gave. @defaultValue when the run starts
   */
  asOf?: number;
  /**
   * Use the ledger database: write the audit record and update the jobs' ledger rows. Turn off only
   * for BullMQ queues that have no effects ledger. @defaultValue true
   */
  useLedger?: boolean;
  /** Who acts, for the audit trail. @defaultValue `EFFECTS_ACTOR` or the OS user */
  actor?: string;
  /** Why, for the audit trail. @defaultValue none */
  reason?: string;
  /** Jobs read per Redis round trip. @defaultValue 1000 */
  pageSize?: number;
  /** Stops the run between batches; the result says what was done. */
  signal?: AbortSignal;
  /** Called after every batch. */
  onProgress?(progress: BulkProgress): void;
}

export interface BulkProgress {
  matched: number;
  /** Replayed or discarded so far. */
  done: number;
  skipped: number;
}

export interface BulkPlan {
  matched: number;
  byQueue: Array<{ queue: string; count: number }>;
  byName: Array<{ queue: string; name: string; count: number }>;
  byError: Array<{ queue: string; id: string; error: string; count: number }>;
  /** How long applying would take at `rate`, in ms; null when there is no rate. */
  etaMs: number | null;
  rate: number | null;
  /** Matched jobs that have been replayed before: a task replayed again and again deserves a look first. */
  replayedBefore: number;
  /** With a list of ids (`--ids`): those that match no failed job of the queues (mistyped, or no longer failed). */
  unmatchedIds?: string[];
}

/** Pure: counts matched jobs into a plan. */
export class PlanCounter {
  private matched = 0;
  private replayedBefore = 0;
  private readonly queues = new Map<string, number>();
  private readonly names = new Map<string, { queue: string; name: string; count: number }>();
  private readonly errors = new Map<string, { queue: string; id: string; error: string; count: number }>();

  add(job: MatchedJob): void {
    this.matched += 1;
    if (job.replayCount > 0) this.replayedBefore += 1;
    this.queues.set(job.queue, (this.queues.get(job.queue) ?? 0) + 1);
    const nameKey = `${job.queue}\0${job.name}`;
    const name = this.names.get(nameKey) ?? { queue: job.queue, name: job.name, count: 0 };
    name.count += 1;
    this.names.set(nameKey, name);
    const error = this.errors.get(job.errorGroup) ?? { queue: job.queue, id: job.errorGroup, error: job.error, count: 0 };
    error.count += 1;
    this.errors.set(job.errorGroup, error);
  }

  plan(rate: number | undefined): BulkPlan {
    const byCount = <T extends { count: number }>(a: T, b: T) => b.count - a.count;
    return {
      matched: this.matched,
      byQueue: [...this.queues].map(([queue, count]) => ({ queue, count })).sort(byCount),
      byName: [...this.names.values()].sort(byCount),
      byError: [...this.errors.values()].sort(byCount),
      etaMs: rate ? Math.round((this.matched / rate) * 1000) : null,
      rate: rate ?? null,
      replayedBefore: this.replayedBefore,
    };
  }
}

/** The plan of a bulk action on failed jobs: a read-only scan. */
export async function planBulk(runtime: Runtime, filter: CompiledFilter, options: Pick<BulkOptions, 'limit' | 'rate' | 'pageSize'>): Promise<BulkPlan> {
  const counter = new PlanCounter();
  let matched = 0;
  const limit = options.limit ?? Infinity;
  const seen = new Set<string>();
  scan: for await (const page of matchingJobs(runtime, filter, ['failed'], { pageSize: options.pageSize, prefetch: true })) {
    for (const job of page) {
      if (matched >= limit) break scan;
      counter.add(job);
      if (filter.ids) seen.add(job.id);
      matched += 1;
    }
  }
  const plan = counter.plan(options.rate);
  // Past the limit the scan stopped early: what it did not reach is not known to be missing.
  if (filter.ids && matched < limit) plan.unmatchedIds = filter.ids.filter((id) => !seen.has(id));
  return plan;
}

/**
 * A bulk action writes its audit record and updates ledger rows, so it needs a reachable, migrated
 * ledger database; the hint says how to go on without one for plain BullMQ queues.
 */
export async function requireLedger(runtime: Runtime, command: string): Promise<void> {
  const hint = `Fix the database connection (--db), run \`effects migrate\`, or pass --no-ledger to ${command} without an audit record and without ledger updates (for BullMQ queues that have no effects ledger).`;
  try {
    await runtime.assertReachable({ db: true });
    await assertMigrated(runtime.db, runtime.settings.schema);
  } catch (error) {
    if (error instanceof ConnectionError) throw new ConnectionError(error.message, hint);
    if (error instanceof NotMigratedError) throw new NotMigratedError(error.message, hint);
    throw error;
  }
}

export type BatchOutcome = 'continue' | 'stop';

export interface BatchLoopResult {
  matched: number;
  /** Why the loop ended early: `interrupted` by the signal, `stopped` by the handler. */
  ended: 'complete' | 'interrupted' | 'stopped';
}

/**
 * Feeds matching failed jobs to `handle` in batches, at most `rate` per second, at most `limit` in
 * all. `maxBatch` may shrink the next batch (the brake's sample). Memory holds one page.
 */
export async function forEachBatch(
  runtime: Runtime,
  filter: CompiledFilter,
  options: Pick<BulkOptions, 'limit' | 'rate' | 'pageSize' | 'signal'>,
  handle: (queue: string, batch: MatchedJob[]) => Promise<BatchOutcome>,
  maxBatch: () => number = () => Infinity,
): Promise<BatchLoopResult> {
  const pageSize = options.pageSize ?? 1000;
  const bucket = options.rate ? new TokenBucket(options.rate) : undefined;
  const chunk = chunkSizeForRate(options.rate, pageSize);
  const limit = options.limit ?? Infinity;
  let matched = 0;
  // Prefetching stays right while batches remove jobs: each page's skip count is taken inside Redis,
  // atomically with the page it skips into.
  const pages = matchingJobs(runtime, filter, ['failed'], { pageSize, fingerprints: new FingerprintCache(), lean: true, prefetch: true });
  for await (const page of pages) {
    let at = 0;
    while (at < page.length) {
      if (options.signal?.aborted) return { matched, ended: 'interrupted' };
      if (matched >= limit) return { matched, ended: 'complete' };
      const size = Math.max(1, Math.min(chunk, maxBatch(), limit - matched, page.length - at));
      const batch = page.slice(at, at + size);
      at += size;
      await bucket?.take(batch.length, options.signal);
      if (options.signal?.aborted) return { matched, ended: 'interrupted' };
      matched += batch.length;
      if ((await handle(batch[0].queue, batch)) === 'stop') return { matched, ended: 'stopped' };
    }
  }
  return { matched, ended: 'complete' };
}

/** The filter as the audit trail stores it: what the operator asked for, no secrets. */
export function describeFilter(options: BulkOptions): Record<string, unknown> {
  const entries = {
    queues: options.queues,
    grep: options.grep === undefined ? undefined : String(options.grep),
    since: options.since === undefined ? undefined : new Date(options.since).toISOString(),
    until: options.until === undefined ? undefined : new Date(options.until).toISOString(),
    ids: options.ids,
    minAttempts: options.minAttempts,
    errorGroup: options.errorGroup,
    limit: options.limit,
    rate: options.rate,
  };
  return Object.fromEntries(Object.entries(entries).filter(([, v]) => v !== undefined));
}

/**
 * Where a run's window of last failures ends: the `--until` given, but never past `asOf` (when the
 * operator was shown the count) nor past the run's start.
 */
export function windowEnd(options: Pick<BulkOptions, 'until' | 'asOf'>, startedAt: number): number {
  const asOf = Math.min(options.asOf ?? startedAt, startedAt);
  return Math.min(options.until ?? asOf, asOf);
}
