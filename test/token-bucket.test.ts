import { describe, expect, it } from 'vitest';
import { TokenBucket, chunkSizeForRate } from '../src/core/token-bucket.js';

/** A fake clock: sleeping advances it, so the bucket's pace can be read off exactly. */
function fakeClock() {
  let t = 0;
  return {
    now: () => t,
    sleep: async (ms: number) => {
      t += Math.max(0, ms);
    },
    elapsed: () => t,
  };
}

describe('TokenBucket', () => {
  it('paces chunks so the long-run rate is the asked one', async () => {
    const clock = fakeClock();
    const bucket = new TokenBucket(200, clock);
    let taken = 0;
    while (taken < 10_000) {
      await bucket.take(7);
      taken += 7;
    }
    const rate = taken / (clock.elapsed() / 1000);
    // The first burst (a tenth of a second's worth) is free; the rest is paid for.
    expect(rate).toBeGreaterThan(199);
    expect(rate).toBeLessThan(203);
  });

  it('lets a chunk larger than the burst through and then waits off the debt', async () => {
    const clock = fakeClock();
    const bucket = new TokenBucket(10, { ...clock, burst: 1 });
    await bucket.take(1);
    expect(clock.elapsed()).toBe(0);
    await bucket.take(50);
    expect(clock.elapsed()).toBe(5000);
  });

  it('starts with `initial` tokens but catches up to `burst` after a pause', async () => {
    const clock = fakeClock();
    const bucket = new TokenBucket(100, { ...clock, burst: 50, initial: 10 });
    await bucket.take(10);
    expect(clock.elapsed()).toBe(0);
    await bucket.take(10);
    expect(clock.elapsed()).toBe(100);
    await clock.sleep(2000); // the caller was busy: 50 tokens at most have accrued
    const before = clock.elapsed();
    await bucket.take(50);
    expect(clock.elapsed()).toBe(before);
  });

  it('refuses a rate of zero', () => {
    expect(() => new TokenBucket(0)).toThrow(RangeError);
  });

  it('returns at once when aborted', async () => {
    const bucket = new TokenBucket(1, { burst: 1 });
    await bucket.take(1);
    const controller = new AbortController();
    const started = Date.now();
    const waiting = bucket.take(100, controller.signal);
    controller.abort();
    await waiting;
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe('chunkSizeForRate', () => {
  it('keeps about twenty chunks a second, between 1 and the maximum', () => {
    expect(chunkSizeForRate(undefined, 500)).toBe(500);
    expect(chunkSizeForRate(2, 500)).toBe(1);
    expect(chunkSizeForRate(1000, 500)).toBe(50);
    expect(chunkSizeForRate(1_000_000, 500)).toBe(500);
  });
});
