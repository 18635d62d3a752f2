import { describe, expect, it } from 'vitest';
import { WriteBehind } from '../src/ops/write-behind.js';

const later = <T>(ms: number, value?: T, fail?: Error) =>
  new Promise<T>((resolve, reject) => setTimeout(() => (fail ? reject(fail) : resolve(value as T)), ms));

describe('WriteBehind', () => {
  it('runs at most maxInFlight writes at once and waits for all of them on drain', async () => {
    const writes = new WriteBehind(2);
    let running = 0;
    let peak = 0;
    let done = 0;
    const write = async () => {
      running += 1;
      peak = Math.max(peak, running);
      await later(10);
      running -= 1;
      done += 1;
    };
    for (let i = 0; i < 6; i++) await writes.add(write);
    await writes.drain();
    expect(done).toBe(6);
    expect(peak).toBe(2);
  });

  it('throws the first failure from drain, and from the next add', async () => {
    const writes = new WriteBehind(1);
    await writes.add(() => later(5, undefined, new Error('ledger down')));
    await expect(writes.add(() => later(1))).rejects.toThrow('ledger down');
    await expect(writes.drain()).rejects.toThrow('ledger down');
  });
});
