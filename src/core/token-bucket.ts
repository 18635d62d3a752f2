import { sleep } from './sleep.js';

/**
 * The pace of every `--rate` (replay, rebuild): a token bucket that refills at `ratePerSecond`.
 * `take(n)` may overdraw the bucket and then waits until the debt is paid back, so a caller can take
 * a whole chunk at once and the long-run rate is still exactly the asked one.
 */
export interface TokenBucketOptions {
  /** Tokens a caller may take at once without waiting. @defaultValue a tenth of a second's worth, at least 1 */
  burst?: number;
  /**
   * Tokens at the start. Less than `burst` keeps a short run from going faster than the rate while
   * still letting a long one catch up after a slow moment. @defaultValue burst
   */
  initial?: number;
  /** Clock in ms, for tests. @defaultValue performance.now */
  now?: () => number;
  /** Sleeper, for tests. @defaultValue setTimeout */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export class TokenBucket {
  readonly burst: number;
  private tokens: number;
  private last: number;
  private readonly now: () => number;
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;

  constructor(
    readonly ratePerSecond: number,
    options: TokenBucketOptions = {},
  ) {
    if (!(ratePerSecond > 0)) throw new RangeError(`rate must be positive, got ${ratePerSecond}`);
    this.burst = options.burst ?? Math.max(1, ratePerSecond / 10);
    this.now = options.now ?? (() => performance.now());
    this.sleep = options.sleep ?? sleep;
    this.tokens = Math.min(this.burst, options.initial ?? this.burst);
    this.last = this.now();
  }

  /** Takes `n` tokens, waiting as long as the rate requires. Returns early (without waiting) on abort. */
  async take(n: number, signal?: AbortSignal): Promise<void> {
    this.refill();
    this.tokens -= n;
    if (this.tokens >= 0) return;
    await this.sleep((-this.tokens / this.ratePerSecond) * 1000, signal);
  }

  /** How long `n` more tokens would take at this rate from an empty bucket, in ms (for an ETA). */
  etaMs(n: number): number {
    return (n / this.ratePerSecond) * 1000;
  }

  private refill(): void {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.ratePerSecond);
    this.last = now;
  }
}

/**
 * A chunk size that keeps a paced loop smooth: about 20 chunks a second at the asked rate, never more
 * than `max` (and the whole `max` when there is no rate).
 */
export function chunkSizeForRate(ratePerSecond: number | undefined, max: number): number {
  if (!ratePerSecond) return max;
  return Math.max(1, Math.min(max, Math.floor(ratePerSecond / 20)));
}
