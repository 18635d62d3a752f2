/**
 * Ramp plans, pure: no Redis, no clock. The limit in force at time t is a function of the plan and t
 * only, so every process that applies a plan (the CLI while it waits, any number of schedulers) sets
 * the same values, and a closed terminal or a crashed scheduler loses nothing.
 *
 * Holding (`--hold-on-errors`) stops the plan's clock: the plan records when it held, and the clock
 * at t is the wall time since the start minus the time held before t. So the function stays pure
 * for past t too, which is what draws the curve so far.
 */
import { UsageError } from '../core/errors.js';
import type { QueueLimits } from '../queue/limits.js';

export const RAMP_CURVES = ['linear', 'exponential'] as const;
export type RampCurve = (typeof RAMP_CURVES)[number];

/**
 * The rate-limit window a ramp works in. BullMQ counts jobs in fixed windows that start with the
 * first job taken; a short window keeps completions close to a rising curve (a one-second window lets
 * a whole second of the old rate through at once) and keeps rate-limited workers, which sleep until
 * the window ends, at most this long behind a raised limit.
 */
export const RAMP_WINDOW_MS = 200;

/** Held intervals kept per plan; older ones are merged, which only blurs the far past of the chart. */
const MAX_HOLDS = 200;

export type { QueueLimits };

export interface RampQueue {
  name: string;
  /** When this queue starts, in plan time after the plan starts: its place in the stagger. */
  offsetMs: number;
  /** Jobs per second at the end of this queue's ramp. */
  to: number;
  /** Global concurrency at the end of the ramp, scaled down with the rate before it; null leaves none. */
  concurrency: number | null;
  /** What is put in force when this queue's ramp ends: its configured limits, or those before the ramp. */
  after: QueueLimits;
  afterSource: 'config' | 'previous';
  /** When an applier unpaused the queue (epoch ms); null until its turn. */
  startedAt: number | null;
  /** When an applier put `after` in force; null until then. */
  finishedAt: number | null;
  /**
   * This queue's own start rate and ramp length, where they are not the plan's: a queue carried over
   * from a replaced ramp goes on from its rate of the moment over what was left of its ramp.
   */
  from?: number;
  durationMs?: number;
}

export interface HoldInterval {
  start: number;
  /** null while holding. */
  end: number | null;
  reason: string;
}

/** What the last failure-rate check saw, for `ramp status`. */
export interface FailureCheck {
  at: number;
  /** Failed attempts in the window. */
  failed: number;
  /** Finished attempts (completed + failed) in the window. */
  finished: number;
  windowMs: number;
}

export interface RampPlan {
  version: 1;
  id: string;
  createdAt: number;
  createdBy: string;
  /** Wall time the plan starts (epoch ms). */
  startAt: number;
  /** Length of each queue's ramp, in plan time. */
  durationMs: number;
  /** Jobs per second per queue at the start. */
  from: number;
  curve: RampCurve;
  staggerMs: number;
  /** Failure rate (0..1) above which the ramp stops rising; null: never holds. */
  holdOnErrors: number | null;
  /** The window the failure rate is measured over. */
  holdWindowMs: number;
  /** Finished attempts a window needs before its failure rate counts. */
  holdMinSample: number;
  queues: RampQueue[];
  /** Queues an operator paused during the ramp, which took them out of it. */
  removed: string[];
  holds: HoldInterval[];
  lastCheck: FailureCheck | null;
  operationId: string | null;
  /** Set when the plan ended; an ended plan is kept under another key for `ramp status`. */
  endedAt: number | null;
  outcome: 'finished' | 'cancelled' | 'replaced' | null;
  /** Set on a plan cancelled with `--restore`: its queues' after-ramp limits were put in force. */
  restored?: boolean;
  /** The plan this one took over (its queues not named here go on in this one), if any. */
  replaces?: string;
}

export type RampPhase = 'pending' | 'ramping' | 'done';

/** What an applier sets for one queue at one moment. */
export interface QueueLimitAt {
  phase: RampPhase;
  /** Jobs per second; for a pending queue, the rate it will start at. */
  rate: number;
  rateLimit: { max: number; durationMs: number };
  concurrency: number | null;
}

/** Time held between the plan's start and t. */
export function heldMs(plan: RampPlan, t: number): number {
  let total = 0;
  for (const hold of plan.holds) {
    const start = Math.max(hold.start, plan.startAt);
    const end = Math.min(hold.end ?? t, t);
    if (end > start) total += end - start;
  }
  return total;
}

/** Plan time at wall time t: ms since the start, not counting time held. Negative before the start. */
export function planClock(plan: RampPlan, t: number): number {
  return t - plan.startAt - heldMs(plan, t);
}

export const isHolding = (plan: RampPlan): boolean => plan.holds.at(-1)?.end === null;

/** How long a queue's ramp lasts, in plan time. */
const rampMs = (plan: RampPlan, queue: RampQueue): number => queue.durationMs ?? plan.durationMs;

/** Where on the curve a queue is at plan time `clock`: 0 at its start, 1 at its end. */
function queueProgress(plan: RampPlan, queue: RampQueue, clock: number): number {
  const length = rampMs(plan, queue);
  if (length <= 0) return clock >= queue.offsetMs ? 1 : 0;
  return Math.min(1, Math.max(0, (clock - queue.offsetMs) / length));
}

/** The rate at progress p (0..1): linear, or exponential (slow start: equal ratios in equal times). */
export function curveRate(curve: RampCurve, from: number, to: number, p: number): number {
  const x = Math.min(1, Math.max(0, p));
  if (curve === 'exponential') return from * (to / from) ** x;
  return from + (to - from) * x;
}

export function queuePhase(plan: RampPlan, queue: RampQueue, t: number): RampPhase {
  const elapsed = planClock(plan, t) - queue.offsetMs;
  if (elapsed < 0) return 'pending';
  return elapsed >= rampMs(plan, queue) ? 'done' : 'ramping';
}

/**
 * Jobs per second for a queue at wall time t (`from` before its start, `to` after its end). A queue
 * whose end rate is below the plan's `from` (the default `from` only) starts at its end rate.
 */
export function rateAt(plan: RampPlan, queue: RampQueue, t: number): number {
  const from = Math.min(queue.from ?? plan.from, queue.to);
  return curveRate(plan.curve, from, queue.to, queueProgress(plan, queue, planClock(plan, t)));
}

/**
 * BullMQ's rate limit is `max` jobs per `durationMs` window, both integers. For a rate, pick the
 * count that fills a window of about `targetMs` and then the window that makes the rate exact,
 * so 12.5/s becomes 3 per 240 ms, not 2 or 3 per 200 ms.
 */
export function rateWindow(rate: number, targetMs = RAMP_WINDOW_MS): { max: number; durationMs: number } {
  const max = Math.max(1, Math.round((rate * targetMs) / 1000));
  return { max, durationMs: Math.max(1, Math.round((max * 1000) / rate)) };
}

/** The effective rate of a BullMQ limit, in jobs per second. */
export const limitRate = (limit: { max: number; durationMs: number }) => (limit.max * 1000) / limit.durationMs;

/**
 * What to set for a queue at wall time t. `leadMs` evaluates the rate a little ahead: an applier
 * that sets a value every tick, read by windows that run after it, should set the rate of the middle
 * of what comes next, not of what has passed. The phase is always that of t itself.
 */
export function limitAt(plan: RampPlan, queue: RampQueue, t: number, leadMs = 0): QueueLimitAt {
  const phase = queuePhase(plan, queue, t);
  const rate = phase === 'done' ? queue.to : rateAt(plan, queue, t + leadMs);
  const concurrency =
    queue.concurrency === null ? null : Math.max(1, Math.ceil((queue.concurrency * rate) / queue.to));
  return { phase, rate, rateLimit: rateWindow(rate), concurrency };
}

/** Plan time from the start until the last queue's ramp ends. */
export const planLengthMs = (plan: RampPlan): number =>
  plan.queues.length ? Math.max(...plan.queues.map((q) => q.offsetMs + rampMs(plan, q))) : plan.durationMs;

/** Wall time the plan ends, if it does not hold again after t (while holding, it moves with t). */
export function endsAt(plan: RampPlan, t: number): number {
  return plan.startAt + heldMs(plan, t) + planLengthMs(plan);
}

/** Wall time a queue starts (or started), if the plan does not hold again after t. */
export const queueStartsAt = (plan: RampPlan, queue: RampQueue, t: number): number =>
  wallTimeAt(plan, queue.offsetMs, t);

/** Wall time a queue's ramp ends (or ended), if the plan does not hold again after t. */
export const queueEndsAt = (plan: RampPlan, queue: RampQueue, t: number): number =>
  wallTimeAt(plan, queue.offsetMs + rampMs(plan, queue), t);

/** Wall time the plan's clock reaches (or reached) `clock`, seen from t. */
function wallTimeAt(plan: RampPlan, clock: number, t: number): number {
  const now = planClock(plan, t);
  if (now >= clock) return wallTimeOf(plan, clock);
  return Math.max(t, plan.startAt) + (clock - Math.max(0, now));
}

/** Wall time at which plan time reached `clock` (for clock already reached). */
function wallTimeOf(plan: RampPlan, clock: number): number {
  let wall = plan.startAt + clock;
  // Walk the holds in order: each one that began before that moment pushes it later.
  for (const hold of plan.holds) {
    if (hold.start >= wall) break;
    if (hold.end === null) return hold.start;
    wall += hold.end - Math.max(hold.start, plan.startAt);
  }
  return wall;
}

/** 0..1: how much of the plan's length has run. */
export function planProgress(plan: RampPlan, t: number): number {
  const length = planLengthMs(plan);
  return length === 0 ? 1 : Math.min(1, Math.max(0, planClock(plan, t) / length));
}

/** The summed rate of all queues at `points` evenly spaced wall times in [t0, t1], for charts. */
export function sampleTotalRate(plan: RampPlan, t0: number, t1: number, points: number): Array<{ t: number; rate: number }> {
  const step = points > 1 ? (t1 - t0) / (points - 1) : 0;
  return Array.from({ length: points }, (_, i) => {
    const t = t0 + i * step;
    const rate = plan.queues.reduce((sum, q) => (queuePhase(plan, q, t) === 'pending' ? sum : sum + rateAt(plan, q, t)), 0);
    return { t, rate };
  });
}

/**
 * Where a ramp starts when `--from` is not given: one job per second per queue, low enough for a
 * service that was just down; the curve takes it to the end rate within the ramp.
 */
export const DEFAULT_RAMP_FROM = 1;

export interface PlanInput {
  id: string;
  now: number;
  createdBy: string;
  durationMs: number;
  /** @defaultValue `DEFAULT_RAMP_FROM` */
  from?: number;
  curve?: RampCurve;
  staggerMs?: number;
  holdOnErrors?: number | null;
  holdWindowMs?: number;
  holdMinSample?: number;
  operationId?: string | null;
  /** In the order they start. */
  queues: Array<Pick<RampQueue, 'name' | 'to' | 'concurrency' | 'after' | 'afterSource'>>;
}

/**
 * Checks what the operator asked for and builds the plan. Every problem is a usage error naming
 * what was expected.
 */
export function buildPlan(input: PlanInput): RampPlan {
  const curve = input.curve ?? 'linear';
  const staggerMs = input.staggerMs ?? 0;
  if (!RAMP_CURVES.includes(curve)) {
    throw new UsageError(`Unknown curve "${curve}"; expected one of: ${RAMP_CURVES.join(', ')}.`);
  }
  if (!(input.durationMs > 0)) throw new UsageError('--ramp must be a positive duration, like 10m.');
  if (!(staggerMs >= 0)) throw new UsageError('--stagger must be a duration of 0 or more, like 30s.');
  const from = input.from ?? DEFAULT_RAMP_FROM;
  if (!(from > 0)) throw new UsageError('--from must be a positive rate (jobs per second per queue), like 5.');
  if (input.queues.length === 0) throw new UsageError('A ramp needs at least one queue; expected --queue Q or --all.');
  const hold = input.holdOnErrors ?? null;
  if (hold !== null && !(hold > 0 && hold < 1)) {
    throw new UsageError('--hold-on-errors must be a failure rate above 0 and below 1, like 10%.');
  }
  for (const queue of input.queues) {
    if (!(queue.to > 0)) throw new UsageError(`--to must be a positive rate; queue ${queue.name} would ramp to ${queue.to}.`);
    // The default start is lowered to a queue's end rate (rateAt); a --from given is checked.
    if (input.from !== undefined && input.from > queue.to) {
      throw new UsageError(
        `--from ${input.from}/s is above queue ${queue.name}'s target of ${round(queue.to)}/s; expected --from at most --to.`,
      );
    }
  }
  return {
    version: 1,
    id: input.id,
    createdAt: input.now,
    createdBy: input.createdBy,
    startAt: input.now,
    durationMs: input.durationMs,
    from,
    curve,
    staggerMs,
    holdOnErrors: hold,
    holdWindowMs: input.holdWindowMs ?? Math.min(60_000, Math.max(5_000, input.durationMs / 10)),
    holdMinSample: input.holdMinSample ?? 20,
    queues: input.queues.map((q, i) => ({ ...q, offsetMs: i * staggerMs, startedAt: null, finishedAt: null })),
    removed: [],
    holds: [],
    lastCheck: null,
    operationId: input.operationId ?? null,
    endedAt: null,
    outcome: null,
  };
}

/**
 * The queues of `old` that a new plan starting at t takes over, for those it does not name: one
 * that is ramping goes on from its rate at t over what is left of its ramp; one whose turn has not
 * come keeps its place in the stagger. Finished ones are left out: their after-ramp limits are in
 * force. Replacing a ramp for some queues thus neither stops the others where they are nor lets
 * them jump to their full rate.
 */
export function carryOver(old: RampPlan, named: readonly string[], t: number): RampQueue[] {
  const clock = planClock(old, t);
  const carried: RampQueue[] = [];
  for (const queue of old.queues) {
    if (named.includes(queue.name) || queue.finishedAt !== null) continue;
    const phase = queuePhase(old, queue, t);
    if (phase === 'done') continue;
    const elapsed = clock - queue.offsetMs;
    carried.push({
      ...queue,
      offsetMs: phase === 'pending' ? -elapsed : 0,
      from: phase === 'pending' ? Math.min(queue.from ?? old.from, queue.to) : rateAt(old, queue, t),
      durationMs: phase === 'pending' ? rampMs(old, queue) : rampMs(old, queue) - elapsed,
    });
  }
  return carried;
}

/**
 * The plan that takes over from `active` at t: the queues `built` names, as built, and the others
 * carried over (`carryOver`). What the active plan knew goes on too: the queues an operator paused
 * out of it stay out, and a hold in progress goes on (a join must not release the brake).
 */
export function takeOver(built: RampPlan, active: RampPlan | null, t: number): RampPlan {
  if (!active) return built;
  const named = built.queues.map((q) => q.name);
  const hold = isHolding(active) ? active.holds.at(-1)! : null;
  return {
    ...built,
    queues: [...built.queues, ...carryOver(active, named, t)],
    removed: active.removed.filter((name) => !named.includes(name)),
    holds: hold && built.holdOnErrors !== null ? [{ start: t, end: null, reason: hold.reason }] : [],
    lastCheck: active.lastCheck,
    replaces: active.id,
  };
}

/** The failure rate of a check, or null when too few attempts finished for it to mean anything. */
export function failureRate(plan: RampPlan, check: Pick<FailureCheck, 'failed' | 'finished'>): number | null {
  return check.finished >= plan.holdMinSample && check.finished > 0 ? check.failed / check.finished : null;
}

/**
 * The plan after a failure-rate check at t: holding starts when the rate is above the threshold,
 * and ends when it is at or below it again. Too small a sample starts no hold, and ends one: held
 * queues that went quiet (their backlog drained, or every job failed for good) would otherwise hold
 * the ramp for good, with its staggered queues still paused. Failures that come back hold it again.
 */
export function withFailureCheck(plan: RampPlan, check: FailureCheck): RampPlan {
  const next: RampPlan = { ...plan, lastCheck: check };
  if (plan.holdOnErrors === null) return next;
  const rate = failureRate(plan, check);
  const holding = isHolding(plan);
  if (!holding && rate !== null && rate > plan.holdOnErrors) {
    const reason = `failure rate ${percent(rate)} (${check.failed} of ${check.finished} attempts in the last ${Math.round(check.windowMs / 1000)}s) is above ${percent(plan.holdOnErrors)}`;
    next.holds = compactHolds([...plan.holds, { start: check.at, end: null, reason }]);
  } else if (holding && (rate === null || rate <= plan.holdOnErrors)) {
    next.holds = plan.holds.map((h, i) => (i === plan.holds.length - 1 ? { ...h, end: Math.max(h.start, check.at) } : h));
  }
  return next;
}

function compactHolds(holds: HoldInterval[]): HoldInterval[] {
  if (holds.length <= MAX_HOLDS) return holds;
  const [a, b, ...rest] = holds;
  // One hold as long as both, from the first's start: the time held (so the clock now) is unchanged,
  // only the far past of the chart blurs.
  const length = (a.end ?? a.start) - a.start + ((b.end ?? b.start) - b.start);
  return [{ start: a.start, end: a.start + length, reason: b.reason }, ...rest];
}

const percent = (x: number) => `${round(x * 100)}%`;
const round = (x: number) => Number(x.toFixed(2));
