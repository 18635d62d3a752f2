import { describe, expect, it } from 'vitest';
import { brakeVerdict } from '../src/ops/brake.js';
import { PlanCounter } from '../src/ops/bulk.js';
import type { MatchedJob } from '../src/ops/job-filter.js';

describe('brakeVerdict', () => {
  const counts = (failed: number, succeeded: number, pending: number) => ({
    size: failed + succeeded + pending,
    failed,
    succeeded,
    pending,
  });

  it('trips when more than the threshold of the sample failed again', () => {
    expect(brakeVerdict(counts(11, 0, 9), 0.5)).toBe('tripped');
    expect(brakeVerdict(counts(3, 1, 0), 0.5)).toBe('tripped');
  });

  it('does not trip at exactly the threshold', () => {
    expect(brakeVerdict(counts(10, 10, 0), 0.5)).toBe('passed');
  });

  it('passes as soon as the failures can no longer exceed the threshold', () => {
    expect(brakeVerdict(counts(2, 11, 7), 0.5)).toBe('passed');
    expect(brakeVerdict(counts(0, 20, 0), 0.5)).toBe('passed');
  });

  it('keeps watching while the pending jobs could still tip it', () => {
    expect(brakeVerdict(counts(0, 0, 20), 0.5)).toBe('watching');
    expect(brakeVerdict(counts(5, 5, 10), 0.5)).toBe('watching');
  });

  it('follows the threshold it is given', () => {
    expect(brakeVerdict(counts(3, 17, 0), 0.1)).toBe('tripped');
    expect(brakeVerdict(counts(15, 5, 0), 0.9)).toBe('passed');
  });
});

describe('PlanCounter', () => {
  const job = (queue: string, name: string, errorGroup: string, error: string) =>
    ({ queue, name, errorGroup, error }) as MatchedJob;

  it('counts by queue, job name and error group, largest first, with an ETA at the rate', () => {
    const counter = new PlanCounter();
    for (let i = 0; i < 3; i++) counter.add(job('crm', 'order_placed', 'aaaaaaaa', 'timeout'));
    counter.add(job('crm', 'order_paid', 'bbbbbbbb', 'HTTP <n>'));
    counter.add(job('email', 'order_placed', 'cccccccc', 'timeout'));
    const plan = counter.plan(2);
    expect(plan.matched).toBe(5);
    expect(plan.byQueue).toEqual([
      { queue: 'crm', count: 4 },
      { queue: 'email', count: 1 },
    ]);
    expect(plan.byName[0]).toEqual({ queue: 'crm', name: 'order_placed', count: 3 });
    expect(plan.byName).toHaveLength(3);
    expect(plan.byError[0]).toEqual({ queue: 'crm', id: 'aaaaaaaa', error: 'timeout', count: 3 });
    expect(plan.etaMs).toBe(2500);
    expect(counter.plan(undefined).etaMs).toBeNull();
  });
});
