import { describe, expect, it } from 'vitest';
import { UsageError } from '../src/core/errors.js';
import { parseRatio } from '../src/core/duration.js';
import {
  buildPlan,
  carryOver,
  takeOver,
  endsAt,
  isHolding,
  limitAt,
  limitRate,
  planProgress,
  queuePhase,
  queueStartsAt,
  rateAt,
  rateWindow,
  sampleTotalRate,
  withFailureCheck,
  type PlanInput,
  type RampPlan,
} from '../src/ramp/plan.js';

const T0 = Date.UTC(2026, 0, 1);
const none = { rateLimit: null, concurrency: null };

function plan(overrides: Partial<PlanInput> = {}): RampPlan {
  return buildPlan({
    id: 'r1',
    now: T0,
    createdBy: 'test',
    durationMs: 10_000,
    from: 10,
    queues: [{ name: 'a', to: 110, concurrency: null, after: none, afterSource: 'previous' }],
    ...overrides,
  });
}

const queue = (p: RampPlan, i = 0) => p.queues[i];

describe('ramp curves', () => {
  it('without --from, starts each queue at 1/s, or at its end rate when that is lower', () => {
    const p = plan({
      from: undefined,
      queues: [
        { name: 'fast', to: 100, concurrency: null, after: none, afterSource: 'config' },
        { name: 'slow', to: 0.5, concurrency: null, after: none, afterSource: 'config' },
      ],
    });
    expect(p.from).toBe(1);
    expect(rateAt(p, queue(p, 0), T0)).toBe(1);
    expect(rateAt(p, queue(p, 0), T0 + 10_000)).toBe(100);
    expect(rateAt(p, queue(p, 1), T0)).toBe(0.5);
    expect(rateAt(p, queue(p, 1), T0 + 5_000)).toBe(0.5);
    // A --from given above a queue's end rate is still an error.
    expect(() => plan({ from: 1, queues: [{ name: 'slow', to: 0.5, concurrency: null, after: none, afterSource: 'config' }] })).toThrow(
      /--from 1\/s is above queue slow's target of 0\.5\/s/,
    );
  });


  it('linear: from at the start, to at the end, halfway in the middle', () => {
    const p = plan();
    expect(rateAt(p, queue(p), T0)).toBe(10);
    expect(rateAt(p, queue(p), T0 + 5_000)).toBe(60);
    expect(rateAt(p, queue(p), T0 + 10_000)).toBe(110);
  });

  it('exponential starts slowly: equal ratios in equal times, far below linear at first', () => {
    const p = plan({ curve: 'exponential', from: 1, queues: [{ name: 'a', to: 100, concurrency: null, after: none, afterSource: 'previous' }] });
    expect(rateAt(p, queue(p), T0)).toBeCloseTo(1);
    expect(rateAt(p, queue(p), T0 + 5_000)).toBeCloseTo(10);
    expect(rateAt(p, queue(p), T0 + 10_000)).toBeCloseTo(100);
    const linear = plan({ from: 1, queues: [{ name: 'a', to: 100, concurrency: null, after: none, afterSource: 'previous' }] });
    expect(rateAt(p, queue(p), T0 + 2_500)).toBeLessThan(rateAt(linear, queue(linear), T0 + 2_500) / 5);
  });

  it('is pending before the start, ramping during, done after the end (and stays at `to`)', () => {
    const p = plan();
    expect(queuePhase(p, queue(p), T0 - 1)).toBe('pending');
    expect(rateAt(p, queue(p), T0 - 60_000)).toBe(10);
    expect(queuePhase(p, queue(p), T0)).toBe('ramping');
    expect(queuePhase(p, queue(p), T0 + 9_999)).toBe('ramping');
    expect(queuePhase(p, queue(p), T0 + 10_000)).toBe('done');
    expect(limitAt(p, queue(p), T0 + 3_600_000).rate).toBe(110);
    expect(planProgress(p, T0 + 5_000)).toBe(0.5);
    expect(endsAt(p, T0)).toBe(T0 + 10_000);
  });

  it('is a pure function of plan and time: same inputs, same limits', () => {
    const p = plan({ curve: 'exponential' });
    const copy = JSON.parse(JSON.stringify(p)) as RampPlan;
    for (const t of [T0, T0 + 1234, T0 + 9_999]) expect(limitAt(copy, queue(copy), t, 225)).toEqual(limitAt(p, queue(p), t, 225));
  });

  it('evaluates the rate ahead by leadMs but keeps the phase of t', () => {
    const p = plan();
    const at = limitAt(p, queue(p), T0 + 9_990, 200);
    expect(at.phase).toBe('ramping');
    expect(at.rate).toBe(110);
    expect(limitAt(p, queue(p), T0 + 1_000, 1_000).rate).toBe(rateAt(p, queue(p), T0 + 2_000));
  });
});

describe('stagger', () => {
  const three = (staggerMs: number) =>
    plan({
      staggerMs,
      queues: ['a', 'b', 'c'].map((name) => ({ name, to: 110, concurrency: null, after: none, afterSource: 'previous' as const })),
    });

  it('starts queues one after another in the given order, each with the full ramp', () => {
    const p = three(4_000);
    expect(p.queues.map((q) => [q.name, q.offsetMs])).toEqual([['a', 0], ['b', 4_000], ['c', 8_000]]);
    expect(queuePhase(p, queue(p, 1), T0 + 3_999)).toBe('pending');
    expect(rateAt(p, queue(p, 1), T0 + 4_000)).toBe(10);
    expect(rateAt(p, queue(p, 2), T0 + 13_000)).toBe(60);
    expect(endsAt(p, T0)).toBe(T0 + 18_000);
    expect(queueStartsAt(p, queue(p, 2), T0)).toBe(T0 + 8_000);
  });

  it('sums only started queues in the chart series', () => {
    const p = three(5_000);
    const [first, , last] = sampleTotalRate(p, T0, T0 + 10_000, 3);
    expect(first.rate).toBe(10);
    expect(last.rate).toBe(110 + 60 + 10);
  });
});

describe('holding on errors', () => {
  const holdPlan = () => plan({ holdOnErrors: 0.1, holdMinSample: 20 });

  it('holds when the failure rate is above the threshold and stops the clock', () => {
    let p = holdPlan();
    p = withFailureCheck(p, { at: T0 + 2_000, failed: 30, finished: 100, windowMs: 5_000 });
    expect(isHolding(p)).toBe(true);
    expect(p.holds[0].reason).toMatch(/failure rate 30% .* above 10%/);
    const held = rateAt(p, queue(p), T0 + 2_000);
    expect(rateAt(p, queue(p), T0 + 7_000)).toBe(held);
    expect(endsAt(p, T0 + 7_000)).toBe(T0 + 15_000);
  });

  it('rises again from where it held once the rate falls, the end pushed by the time held', () => {
    let p = holdPlan();
    p = withFailureCheck(p, { at: T0 + 2_000, failed: 30, finished: 100, windowMs: 5_000 });
    p = withFailureCheck(p, { at: T0 + 5_000, failed: 5, finished: 100, windowMs: 5_000 });
    expect(isHolding(p)).toBe(false);
    expect(rateAt(p, queue(p), T0 + 5_000)).toBe(rateAt(p, queue(p), T0 + 2_000));
    expect(rateAt(p, queue(p), T0 + 6_000)).toBe(40);
    expect(endsAt(p, T0 + 6_000)).toBe(T0 + 13_000);
    // The past is still drawn as it happened: flat while held.
    expect(rateAt(p, queue(p), T0 + 3_000)).toBe(30);
    expect(queueStartsAt(p, queue(p), T0 + 6_000)).toBe(T0);
  });

  it('ignores a sample too small to mean anything, and plans without a threshold', () => {
    expect(isHolding(withFailureCheck(holdPlan(), { at: T0 + 1, failed: 5, finished: 5, windowMs: 5_000 }))).toBe(false);
    expect(isHolding(withFailureCheck(plan(), { at: T0 + 1, failed: 90, finished: 100, windowMs: 5_000 }))).toBe(false);
  });

  it('ends a hold once its queues go quiet, rather than holding for good', () => {
    let p = withFailureCheck(holdPlan(), { at: T0 + 2_000, failed: 30, finished: 100, windowMs: 5_000 });
    expect(isHolding(p)).toBe(true);
    p = withFailureCheck(p, { at: T0 + 9_000, failed: 0, finished: 0, windowMs: 5_000 });
    expect(isHolding(p)).toBe(false);
    expect(rateAt(p, queue(p), T0 + 9_000)).toBe(rateAt(p, queue(p), T0 + 2_000));
  });

  it('keeps the time held exact when old holds are merged', () => {
    let p = holdPlan();
    for (let i = 0; i < 250; i++) {
      p = withFailureCheck(p, { at: T0 + i * 20 + 1, failed: 50, finished: 100, windowMs: 5_000 });
      p = withFailureCheck(p, { at: T0 + i * 20 + 11, failed: 0, finished: 100, windowMs: 5_000 });
    }
    expect(p.holds.length).toBeLessThanOrEqual(200);
    // 250 holds of 10 ms each.
    expect(endsAt(p, T0 + 10_000)).toBe(T0 + 10_000 + 2_500);
  });
});

describe('rate windows', () => {
  it('turns a rate into an integer count per window with the rate kept exact', () => {
    expect(rateWindow(10)).toEqual({ max: 2, durationMs: 200 });
    expect(rateWindow(200)).toEqual({ max: 40, durationMs: 200 });
    expect(rateWindow(12.5)).toEqual({ max: 3, durationMs: 240 });
    expect(rateWindow(0.5)).toEqual({ max: 1, durationMs: 2000 });
    for (const rate of [1, 3, 7.3, 33, 150, 999]) {
      expect(Math.abs(limitRate(rateWindow(rate)) - rate) / rate).toBeLessThan(0.01);
    }
  });

  it('scales a configured global concurrency with the rate, never below 1', () => {
    const p = plan({ queues: [{ name: 'a', to: 110, concurrency: 22, after: none, afterSource: 'config' }] });
    expect(limitAt(p, queue(p), T0).concurrency).toBe(2);
    expect(limitAt(p, queue(p), T0 + 10_000).concurrency).toBe(22);
  });
});

describe('bad input', () => {
  const expectUsage = (fn: () => unknown, message: RegExp) => {
    expect(fn).toThrow(UsageError);
    expect(fn).toThrow(message);
  };
  it('refuses --from above --to, zero rates, zero durations and odd thresholds', () => {
    expectUsage(() => plan({ from: 200 }), /--from 200\/s is above queue a's target of 110\/s/);
    expectUsage(() => plan({ from: 0 }), /--from must be a positive rate/);
    expectUsage(() => plan({ queues: [{ name: 'a', to: 0, concurrency: null, after: none, afterSource: 'previous' }] }), /--to must be a positive rate/);
    expectUsage(() => plan({ durationMs: 0 }), /--ramp must be a positive duration/);
    expectUsage(() => plan({ queues: [] }), /at least one queue/);
    expectUsage(() => plan({ holdOnErrors: 1.5 }), /--hold-on-errors/);
  });
  it('parses failure rates as percentages or fractions', () => {
    expect(parseRatio('10%')).toBeCloseTo(0.1);
    expect(parseRatio('0.25')).toBe(0.25);
    expect(() => parseRatio('0')).toThrow(UsageError);
    expect(() => parseRatio('150%')).toThrow(/expected a share above 0 and below 1/);
  });
});

describe('carrying queues over into a replacing plan', () => {
  it('goes on from the rate of the moment over what was left, or keeps its turn; finished queues stay out', () => {
    const old = plan({
      staggerMs: 20_000,
      queues: ['mid', 'later', 'named'].map((name) => ({ name, to: 110, concurrency: null, after: none, afterSource: 'previous' as const })),
    });
    old.queues[0].startedAt = T0;
    const t = T0 + 5_000; // mid is halfway (60/s); later starts at 20 s
    const carried = carryOver(old, ['named'], t);
    expect(carried.map((q) => q.name)).toEqual(['mid', 'later']);
    expect(carried[0]).toMatchObject({ offsetMs: 0, durationMs: 5_000, from: 60, startedAt: T0 });
    expect(carried[1]).toMatchObject({ offsetMs: 15_000, durationMs: 10_000, from: 10, startedAt: null });

    // In the new plan (another duration and start rate), each goes on as it would have in the old one.
    const next = { ...plan({ id: 'r2', now: t, durationMs: 60_000, from: 1 }), queues: carried };
    for (const dt of [0, 2_500, 5_000, 16_000, 25_000]) {
      expect(rateAt(next, next.queues[0], t + dt)).toBeCloseTo(rateAt(old, old.queues[0], t + dt), 6);
      expect(queuePhase(next, next.queues[1], t + dt)).toBe(queuePhase(old, old.queues[1], t + dt));
    }
    expect(rateAt(next, next.queues[1], t + 20_000)).toBeCloseTo(rateAt(old, old.queues[1], t + 20_000), 6);
    expect(endsAt(next, t)).toBe(T0 + 30_000); // when `later` ends, as in the old plan

    expect(carryOver(old, [], T0 + 15_000).map((q) => q.name)).toEqual(['later', 'named']);
  });
});

describe('taking over an active plan', () => {
  it('keeps out the queues an operator paused out of it, goes on holding, and names the plan it replaces', () => {
    const active = plan({
      holdOnErrors: 0.1,
      queues: ['a', 'b'].map((name) => ({ name, to: 110, concurrency: null, after: none, afterSource: 'previous' as const })),
    });
    active.queues[0].startedAt = T0;
    active.removed = ['paused-out'];
    active.holds = [{ start: T0 + 2_000, end: null, reason: 'failure rate 50% is above 10%' }];
    const t = T0 + 4_000;
    const built = plan({ id: 'r2', now: t, holdOnErrors: 0.1, queues: [{ name: 'joiner', to: 50, concurrency: null, after: none, afterSource: 'previous' }] });
    const next = takeOver(built, active, t);
    expect(next.replaces).toBe(active.id);
    expect(next.queues.map((q) => q.name)).toEqual(['joiner', 'a', 'b']);
    expect(next.removed).toEqual(['paused-out']);
    // Held when it starts: the carried queue stays at its held rate (the old plan's clock stood at 2 s).
    expect(isHolding(next)).toBe(true);
    expect(rateAt(next, next.queues[1], t + 60_000)).toBeCloseTo(rateAt(active, active.queues[0], t), 6);
    expect(rateAt(active, active.queues[0], t)).toBeCloseTo(30, 6);
    // Naming a queue paused out of the ramp brings it back in.
    expect(takeOver({ ...built, queues: [{ ...built.queues[0], name: 'paused-out' }] }, active, t).removed).toEqual([]);
    expect(takeOver(built, null, t)).toBe(built);
  });
});
