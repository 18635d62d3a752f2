import type { Runtime } from '../core/runtime.js';
import { UsageError } from '../core/errors.js';
import { QueueSettings } from '../ledger/queue-settings.js';
import { applyLimits } from '../queue/limits.js';
import { redisTime } from '../queue/redis.js';
import type { RampQueue } from '../ramp/plan.js';
import { RampStore } from '../ramp/store.js';
import { auditedIfReachable, defaultActor } from './audit.js';
import { selectQueues, type QueueSelection } from './select-queues.js';

export interface PauseOptions extends QueueSelection {
  /** Who, for the audit trail. @defaultValue the OS user */
  actor?: string;
  /** Why, for the audit trail. @defaultValue none */
  reason?: string;
}

export interface PauseResult {
  paused: string[];
  alreadyPaused: string[];
  /**
   * Queues that were in the active ramp: a pause takes them out of it, so nothing resumes them, and
   * puts back the limits they would have had after it (not the ramp's rate of the moment).
   */
  removedFromRamp: string[];
  /** The ramp ended because its last queue was paused. */
  rampCancelled: boolean;
  operationId: string | null;
  /** Why no audit record (and no paused state in the database) was written, or null. */
  auditSkipped: string | null;
}

/**
 * Pauses queues: workers finish the jobs they hold and take no new ones. A pause always wins over a
 * ramp: paused queues leave the active ramp, so no scheduler unpauses them at their turn, with their
 * after-ramp limits, so that a later resume does not find them throttled at a ramp that is over.
 */
export async function pauseQueues(runtime: Runtime, options: PauseOptions): Promise<PauseResult> {
  await runtime.assertReachable({ redis: true });
  const names = await selectQueues(runtime, options);
  const actor = options.actor ?? defaultActor();
  return auditedIfReachable(
    runtime,
    { command: 'pause', actor, reason: options.reason, filter: { queues: names } },
    async (_operationId, dbAvailable) => {
      const { removed, cancelled, plans } = await leaveRamp(runtime, names, 'paused');
      const alreadyPaused: string[] = [];
      for (const name of names) {
        const queue = runtime.queues.get(name);
        if (await queue.isPaused()) alreadyPaused.push(name);
        else await queue.pause();
      }
      for (const left of plans) await applyLimits(runtime.queues, left.name, left.after);
      if (dbAvailable) await new QueueSettings(runtime.db, runtime.settings.schema).setPaused(names, true, actor);
      return {
        paused: names.filter((n) => !alreadyPaused.includes(n)),
        alreadyPaused,
        removedFromRamp: removed,
        rampCancelled: cancelled,
      };
    },
    { counts: (r) => ({ queues: names.length, paused: r.paused.length }) },
  );
}

export interface ResumeOptions extends QueueSelection {
  actor?: string;
  reason?: string;
  /** Take queues of the active ramp out of it and resume them at once. @defaultValue false */
  replace?: boolean;
}

export interface ResumeResult {
  resumed: string[];
  alreadyRunning: string[];
  /** Queues taken out of the active ramp (with --replace), with the limits they would have had after it. */
  removedFromRamp: string[];
  operationId: string | null;
  auditSkipped: string | null;
}

/**
 * Resumes queues at once, with whatever limits are in force: BullMQ's own resume, the stampede
 * after an outage. `startRamp` is the controlled way.
 */
export async function resumeQueues(runtime: Runtime, options: ResumeOptions): Promise<ResumeResult> {
  await runtime.assertReachable({ redis: true });
  const names = await selectQueues(runtime, options);
  const active = await new RampStore(runtime.redis, runtime.settings.prefix).read();
  const ramped = names.filter((n) => active?.queues.some((q) => q.name === n));
  if (ramped.length && !options.replace) {
    throw new UsageError(
      `Queue(s) ${ramped.join(', ')} are under the active ramp ${active!.id}; a plain resume would undo it.`,
      'Pass --replace to take them out of the ramp and resume them now, or `effects ramp cancel` first.',
    );
  }
  const actor = options.actor ?? defaultActor();
  return auditedIfReachable(
    runtime,
    { command: 'resume', actor, reason: options.reason, filter: { queues: names, replace: Boolean(options.replace) } },
    async (_operationId, dbAvailable) => {
      const { removed, plans } = await leaveRamp(runtime, ramped, 'resumed');
      // Resumed at once, as a plain resume: with the limits the ramp would have ended at.
      for (const left of plans) await applyLimits(runtime.queues, left.name, left.after);
      const alreadyRunning: string[] = [];
      for (const name of names) {
        const queue = runtime.queues.get(name);
        if (!(await queue.isPaused())) alreadyRunning.push(name);
        else await queue.resume();
      }
      if (dbAvailable) await new QueueSettings(runtime.db, runtime.settings.schema).setPaused(names, false, actor);
      return { resumed: names.filter((n) => !alreadyRunning.includes(n)), alreadyRunning, removedFromRamp: removed };
    },
    { counts: (r) => ({ queues: names.length, resumed: r.resumed.length }) },
  );
}

/**
 * Takes queues out of the active ramp; ends the ramp (cancelled) when none is left. Paused ones are
 * remembered in the plan, so an applier that resumed one at the same moment pauses it again.
 */
async function leaveRamp(
  runtime: Runtime,
  names: string[],
  why: 'paused' | 'resumed',
): Promise<{ removed: string[]; cancelled: boolean; plans: RampQueue[] }> {
  const store = new RampStore(runtime.redis, runtime.settings.prefix);
  const plan = await store.read();
  const plans = plan?.queues.filter((q) => names.includes(q.name)) ?? [];
  const removed = plans.map((q) => q.name);
  if (!plan || removed.length === 0) return { removed: [], cancelled: false, plans: [] };
  const without = (p: typeof plan) => ({
    ...p,
    queues: p.queues.filter((q) => !removed.includes(q.name)),
    removed: why === 'paused' ? [...new Set([...p.removed, ...removed])] : p.removed,
  });
  if (plan.queues.every((q) => removed.includes(q.name))) {
    return { removed, cancelled: Boolean(await store.end(plan.id, 'cancelled', await redisTime(runtime.redis), without)), plans };
  }
  await store.update(plan.id, without);
  return { removed, cancelled: false, plans };
}
