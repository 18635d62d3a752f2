import type { RedisClient } from '../queue/redis.js';
import { redisKeys } from '../queue/keys.js';
import { errorFingerprint } from './fingerprint.js';
import { sleep } from '../core/sleep.js';

/**
 * The replay brake. Replaying a failure whose cause is not fixed pushes the whole bug back through
 * the system; so a replay first replays a small sample, watches what becomes of those jobs, and
 * stops when most of them fail again.
 */
export interface BrakeOptions {
  /** Jobs replayed first and watched. @defaultValue 20 */
  sample?: number;
  /** The brake trips when more than this share of the sample fails again. @defaultValue 0.5 */
  threshold?: number;
  /** How long to wait for the sample's verdict before going on without one, ms. @defaultValue 30000 */
  waitMs?: number;
  /** How often the sample is looked at while waiting, ms. @defaultValue 250 */
  pollMs?: number;
}

export const BRAKE_DEFAULTS = { sample: 20, threshold: 0.5, waitMs: 30_000, pollMs: 250 } as const;

/** What became of the sample so far. */
export interface SampleCounts {
  /** Jobs in the sample. */
  size: number;
  /** Failed at least one attempt after the replay. */
  failed: number;
  /** Completed (or removed on completion). */
  succeeded: number;
  /** Not run yet, or running. */
  pending: number;
}

export type BrakeVerdict = 'tripped' | 'passed' | 'watching';

/**
 * Pure: trips when more than `threshold` of the sample failed again; passes as soon as that can no
 * longer happen; otherwise keeps watching.
 */
export function brakeVerdict(counts: SampleCounts, threshold: number): BrakeVerdict {
  const limit = threshold * counts.size;
  if (counts.size > 0 && counts.failed > limit) return 'tripped';
  if (counts.failed + counts.pending <= limit) return 'passed';
  return 'watching';
}

/** What the brake saw, for the operator and the audit trail. */
export interface BrakeReport extends SampleCounts {
  /** The sample size asked for. */
  sampleTarget: number;
  threshold: number;
  /**
   * `tripped`: the replay stopped. `passed`: the sample mostly succeeded. `undecided`: too few of
   * the sample finished within the wait (are workers running?); the replay went on and kept
   * watching. `all-in-sample`: every match was in the sample, so there was nothing to hold back.
   */
  verdict: 'tripped' | 'passed' | 'undecided' | 'all-in-sample';
  /** How long the replay waited for the verdict, ms. */
  waitedMs: number;
  /** The most common error fingerprint among the sample's new failures. */
  topError: string | null;
}

/** Watches the first replayed jobs by reading their job hashes (attempts, finishedOn, error). */
export class Brake {
  readonly sampleTarget: number;
  readonly threshold: number;
  private readonly waitMs: number;
  private readonly pollMs: number;
  private readonly sample: Array<{ queue: string; id: string }> = [];
  private counts: SampleCounts = { size: 0, failed: 0, succeeded: 0, pending: 0 };
  private topError: string | null = null;
  private waitedMs = 0;
  private state: 'sampling' | 'tripped' | 'passed' | 'undecided' = 'sampling';
  private lastLook = 0;

  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    options: BrakeOptions = {},
  ) {
    this.sampleTarget = options.sample ?? BRAKE_DEFAULTS.sample;
    this.threshold = options.threshold ?? BRAKE_DEFAULTS.threshold;
    this.waitMs = options.waitMs ?? BRAKE_DEFAULTS.waitMs;
    this.pollMs = options.pollMs ?? BRAKE_DEFAULTS.pollMs;
  }

  /** How many of the next jobs still belong to the sample. */
  get sampleRoom(): number {
    return Math.max(0, this.sampleTarget - this.sample.length);
  }

  /** The sample is full and no verdict was reached yet: the replay must wait for one. */
  get needsVerdict(): boolean {
    return this.state === 'sampling' && this.sample.length >= this.sampleTarget;
  }

  get isTripped(): boolean {
    return this.state === 'tripped';
  }

  /** Records replayed jobs; only the first `sample` are watched. */
  record(queue: string, ids: readonly string[]): void {
    for (const id of ids.slice(0, this.sampleRoom)) this.sample.push({ queue, id });
  }

  /**
   * Waits (up to waitMs) until the sample shows a verdict. Returns true when the brake trips.
   * Returns at once on abort.
   */
  async awaitVerdict(signal?: AbortSignal): Promise<boolean> {
    const started = Date.now();
    try {
      for (;;) {
        const verdict = await this.look();
        if (verdict !== 'watching') {
          this.state = verdict;
          return verdict === 'tripped';
        }
        if (signal?.aborted) return false;
        if (Date.now() - started >= this.waitMs) {
          this.state = 'undecided';
          return false;
        }
        await sleep(this.pollMs, signal);
      }
    } finally {
      this.waitedMs += Date.now() - started;
    }
  }

  /**
   * A look between batches while the replay goes on without a verdict (after an undecided wait):
   * late failures still trip the brake. At most one look per pollMs, so a fast replay does not spend
   * its time watching.
   */
  async tripped(): Promise<boolean> {
    if (this.state !== 'undecided') return false;
    if (Date.now() - this.lastLook < this.pollMs) return false;
    if ((await this.look()) === 'tripped') this.state = 'tripped';
    return this.isTripped;
  }

  /** What the brake saw, after one last look at the sample. `complete`: every match was handled. */
  async report(complete: boolean): Promise<BrakeReport> {
    if (this.sample.length) await this.look();
    const verdict = this.state === 'sampling' ? (complete ? 'all-in-sample' : 'undecided') : this.state;
    return {
      ...this.counts,
      sampleTarget: this.sampleTarget,
      threshold: this.threshold,
      verdict,
      waitedMs: this.waitedMs,
      topError: this.topError,
    };
  }

  private async look(): Promise<BrakeVerdict> {
    this.lastLook = Date.now();
    const keys = redisKeys(this.prefix);
    const pipeline = this.redis.pipeline();
    for (const { queue, id } of this.sample) {
      pipeline.hmget(keys.job(queue, id), 'timestamp', 'finishedOn', 'failedReason');
      pipeline.zscore(keys.queue(queue, 'failed'), id);
    }
    const replies = (await pipeline.exec()) ?? [];
    const counts: SampleCounts = { size: this.sample.length, failed: 0, succeeded: 0, pending: 0 };
    const errors = new Map<string, number>();
    for (let i = 0; i < replies.length; i += 2) {
      const [hashError, fields] = replies[i];
      const [setError, failedScore] = replies[i + 1];
      if (hashError || setError) throw hashError ?? setError;
      const [timestamp, finishedOn, failedReason] = fields as Array<string | null>;
      // The replay cleared finishedOn and failedReason, so either one set again is news. BullMQ
      // raises attemptsMade on completion too, so attempts alone tell nothing.
      let failed = false;
      if (timestamp === null) counts.succeeded += 1; // removed on completion; a failure would be kept
      else if (finishedOn !== null) failed = failedScore !== null;
      else failed = failedReason !== null; // waiting for another retry after a failure
      if (failed) {
        counts.failed += 1;
        const fingerprint = errorFingerprint(failedReason);
        errors.set(fingerprint, (errors.get(fingerprint) ?? 0) + 1);
      } else if (timestamp !== null) {
        if (finishedOn !== null) counts.succeeded += 1;
        else counts.pending += 1;
      }
    }
    this.counts = counts;
    this.topError = [...errors].sort((a, b) => b[1] - a[1])[0]?.[0] ?? null;
    return brakeVerdict(counts, this.threshold);
  }
}
