import type { Runtime } from '../core/runtime.js';
import { applyLimits } from '../queue/limits.js';
import { redisTime } from '../queue/redis.js';
import type { FailureMeter } from './failure-rate.js';
import { RAMP_WINDOW_MS, limitAt, withFailureCheck, type RampPlan, type RampQueue } from './plan.js';
import { RampStore } from './store.js';

/** How often the CLI and the scheduler apply an active plan. */
export const RAMP_TICK_MS = 250;
/**
 * A value set now is read by the rate-limit windows of the next tick: set the rate of the middle of
 * that stretch (half a tick, plus half a window), not of the moment just passed.
 */
export const RAMP_LEAD_MS = RAMP_TICK_MS / 2 + RAMP_WINDOW_MS / 2;
/** The failure rate is sampled at most this often, whatever the number of appliers. */
const CHECK_EVERY_MS = 1_000;

export interface ApplyRampOptions {
  /** @defaultValue Redis's clock (`redisTime`) */
  now?: number;
  /** @defaultValue RAMP_LEAD_MS */
  leadMs?: number;
  /** Measures failure rates for `--hold-on-errors`; without it this applier never holds or releases. */
  meter?: FailureMeter;
}

export interface RampTick {
  /** The active plan after this tick; null when there is none (or this tick ended it). */
  plan: RampPlan | null;
  /** The plan this tick finished, if it did. */
  ended: RampPlan | null;
  /** Queues this tick unpaused (their turn came). */
  started: string[];
  /** Queues whose ramp this tick ended, with their after-ramp limits put in force. */
  finished: string[];
}

/**
 * One step of applying the active ramp plan: sets each queue's limits for now, unpauses queues whose
 * turn came (limits first, so no burst at the old limits), puts the after-ramp limits in force where
 * a queue's ramp ended, and ends the plan when every queue's has. Idempotent: any number of
 * processes may call it at any time and they set the same values.
 */
export async function applyRamp(runtime: Runtime, options: ApplyRampOptions = {}): Promise<RampTick> {
  const store = new RampStore(runtime.redis, runtime.settings.prefix);
  const tick: RampTick = { plan: await store.read(), ended: null, started: [], finished: [] };
  if (!tick.plan) return tick;
  const now = options.now ?? (await redisTime(runtime.redis));
  let plan: RampPlan = tick.plan;

  if (plan.holdOnErrors !== null && options.meter && (!plan.lastCheck || now - plan.lastCheck.at >= CHECK_EVERY_MS)) {
    const measured = plan.queues.filter((q) => q.startedAt !== null && q.finishedAt === null).map((q) => q.name);
    if (measured.length) {
      const check = await options.meter.sample(measured, now, plan.holdWindowMs);
      const updated = await store.update(plan.id, (p) => withFailureCheck(p, check));
      if (!updated) return { ...tick, plan: await store.read() };
      plan = updated;
    }
  }

  /** Queues this tick set ramping limits on, as the plan it read had them. */
  const ramped: RampQueue[] = [];
  try {
    return await applyPlan(runtime, store, tick, plan, now, options, ramped);
  } finally {
    if (ramped.length) await undoLateLimits(runtime, store, plan.id, ramped);
  }
}

/** The per-queue steps of one tick on the plan it read; `ramped` collects the queues it ramps. */
async function applyPlan(
  runtime: Runtime,
  store: RampStore,
  tick: RampTick,
  read: RampPlan,
  now: number,
  options: ApplyRampOptions,
  ramped: RampQueue[],
): Promise<RampTick> {
  let plan = read;
  for (const queue of plan.queues) {
    const limit = limitAt(plan, queue, now, options.leadMs ?? RAMP_LEAD_MS);
    if (limit.phase === 'pending' || queue.finishedAt !== null) continue;
    if (limit.phase === 'ramping') {
      ramped.push(queue);
      await applyLimits(runtime.queues, queue.name, { rateLimit: limit.rateLimit, concurrency: limit.concurrency });
    } else {
      await applyLimits(runtime.queues, queue.name, queue.after);
    }
    if (queue.startedAt === null) {
      const { plan: next, started } = await startQueue(runtime, store, plan, queue, now);
      if (!next) return { ...tick, plan: await store.read() };
      plan = next;
      if (started) tick.started.push(queue.name);
    } else if (await runtime.queues.get(queue.name).isPaused()) {
      // Its start is recorded but its resume never happened: Redis failed in between, or the
      // applier that marked it died. Every tick checks, so the queue does not stay paused for good.
      await resumeUnlessUndone(runtime, store, plan.id, queue.name);
    }
    if (limit.phase === 'done') {
      const next = await store.update(plan.id, (p) => markQueue(p, queue.name, 'finishedAt', now));
      if (!next) return { ...tick, plan: await store.read() };
      plan = next;
      tick.finished.push(queue.name);
    }
  }

  if (plan.queues.every((q) => q.finishedAt !== null)) {
    tick.ended = await store.end(plan.id, 'finished', now);
    return { ...tick, plan: tick.ended ? null : await store.read() };
  }
  return { ...tick, plan };
}

/**
 * Appliers tick concurrently with each other and with operators: one that read the plan just
 * before another finished a queue, ended the plan or cancelled it with `--restore`, or before an
 * operator took the queue out of the ramp (`pause`, `resume --replace`, a replacing ramp that leaves
 * it), can write its ramping limits after the after-ramp ones, and no later tick would correct them.
 * Read again after writing: where the queue's ramp is over, or it is no longer in the ramp, put its
 * after-ramp limits back. A queue in a replacing plan gets its limits from that plan's appliers.
 */
async function undoLateLimits(runtime: Runtime, store: RampStore, id: string, ramped: RampQueue[]): Promise<void> {
  const active = await store.read();
  const last = active?.id === id ? null : await store.readLast();
  const current = active?.id === id ? active : last?.id === id ? last : null;
  if (!current) return;
  for (const queue of ramped) {
    if (current.outcome === 'replaced') {
      if (!active?.queues.some((q) => q.name === queue.name)) await applyLimits(runtime.queues, queue.name, queue.after);
      continue;
    }
    const inPlan = current.queues.find((q) => q.name === queue.name);
    const over =
      !inPlan || inPlan.finishedAt !== null || current.outcome === 'finished' || (current.outcome === 'cancelled' && current.restored === true);
    if (over) await applyLimits(runtime.queues, queue.name, inPlan?.after ?? queue.after);
  }
}

/**
 * Unpauses a queue whose turn came. The plan is marked first (so one applier resumes it); if an
 * operator paused the queue meanwhile (which takes it out of the plan) or a newer plan holds it back,
 * the resume is undone, so every order of those steps ends with the operator's choice in force.
 * Returns the plan after marking, and whether this call resumed the queue.
 */
async function startQueue(
  runtime: Runtime,
  store: RampStore,
  plan: RampPlan,
  queue: RampQueue,
  now: number,
): Promise<{ plan: RampPlan | null; started: boolean }> {
  const marked = await store.update(plan.id, (p) => markQueue(p, queue.name, 'startedAt', now));
  const ours = marked?.queues.find((q) => q.name === queue.name);
  if (!marked || ours?.startedAt !== now) return { plan: marked, started: false };
  await resumeUnlessUndone(runtime, store, plan.id, queue.name);
  return { plan: marked, started: true };
}

/** Resumes a queue of plan `id`, and pauses it again if an operator or a newer plan took it meanwhile. */
async function resumeUnlessUndone(runtime: Runtime, store: RampStore, id: string, name: string): Promise<void> {
  await runtime.queues.get(name).resume();
  if (await undoneMeanwhile(store, id, name)) await runtime.queues.get(name).pause();
}

/** Whether, since this applier read it, the queue left plan `id` by a pause or a newer plan holds it. */
async function undoneMeanwhile(store: RampStore, id: string, name: string): Promise<boolean> {
  const active = await store.read();
  if (active?.id === id) return active.removed.includes(name);
  if (active) return active.queues.some((q) => q.name === name && q.startedAt === null);
  const last = await store.readLast();
  return last?.id === id && last.removed.includes(name);
}

/** Sets a queue's startedAt or finishedAt once: the first applier's time is the one kept. */
function markQueue(plan: RampPlan, name: string, field: 'startedAt' | 'finishedAt', at: number): RampPlan {
  const queue = plan.queues.find((q) => q.name === name);
  if (!queue || queue[field] !== null) return plan;
  return { ...plan, queues: plan.queues.map((q) => (q.name === name ? { ...q, [field]: at } : q)) };
}
