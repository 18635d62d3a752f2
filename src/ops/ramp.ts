import { randomUUID } from 'node:crypto';
import type { Runtime } from '../core/runtime.js';
import { EffectsError, UsageError } from '../core/errors.js';
import { formatDuration } from '../core/duration.js';
import { QueueSettings } from '../ledger/queue-settings.js';
import { applyLimits, isPaused, readLimits, type QueueLimits } from '../queue/limits.js';
import { redisTime } from '../queue/redis.js';
import { applyRamp } from '../ramp/apply.js';
import {
  buildPlan,
  endsAt,
  failureRate,
  DEFAULT_RAMP_FROM,
  isHolding,
  limitAt,
  limitRate,
  planProgress,
  queuePhase,
  queueEndsAt,
  queueStartsAt,
  takeOver,
  type RampCurve,
  type RampPhase,
  type RampPlan,
} from '../ramp/plan.js';
import { RampStore } from '../ramp/store.js';
import { auditedIfReachable, auditUnavailable, defaultActor } from './audit.js';
import { configuredQueueConfigs, queueConfigs } from './restore-queues.js';
import { selectQueues, type QueueSelection } from './select-queues.js';

export interface StartRampOptions extends QueueSelection {
  /** Length of each queue's ramp, ms. */
  durationMs: number;
  /**
   * Jobs per second per queue at the start. @defaultValue `DEFAULT_RAMP_FROM` (1/s); a queue whose
   * end rate is lower starts at its end rate
   */
  from?: number;
  /** Jobs per second per queue at the end. @defaultValue each queue's configured rate limit */
  to?: number;
  /** @defaultValue `'linear'` */
  curve?: RampCurve;
  /** Delay between one queue's start and the next's, in the order given. @defaultValue 0 */
  staggerMs?: number;
  /** Stop rising while the failure rate of the ramped queues is above this (0..1). @defaultValue never */
  holdOnErrors?: number;
  /** Window the failure rate is measured over. @defaultValue a tenth of the ramp, within 5 s..60 s */
  holdWindowMs?: number;
  /** Finished attempts a window needs before its failure rate counts. @defaultValue 20 */
  holdMinSample?: number;
  /** Replace an active ramp instead of refusing. @defaultValue false */
  replace?: boolean;
  actor?: string;
  reason?: string;
  /** @defaultValue Redis's clock (`redisTime`) */
  now?: number;
}

export interface StartRampResult {
  plan: RampPlan;
  /** The ramp this one replaced (with --replace, or joined: its queues go on in this one), or null. */
  replaced: RampPlan | null;
  /**
   * Queues of the replaced ramp that this one did not name and that were still ramping or waiting
   * for their turn: they go on in this plan, from their rate of the moment over what was left of
   * their ramp, or keeping their place in the stagger (`carryOver`).
   */
  carriedOver: string[];
  /** Queues of the replaced ramp that this one did not name and whose ramp had ended: they keep their after-ramp limits. */
  leftRunning: string[];
  /** Always empty: queues whose turn had not come are carried over. Kept for scripts that read it. */
  leftPaused: string[];
  /** Things the operator should know, such as a --to above a configured limit. */
  warnings: string[];
  operationId: string | null;
  auditSkipped: string | null;
}

/**
 * Resumes queues under a ramp plan. The queues are paused and given the starting limit before the
 * plan is stored, so no worker ever sees them unpaused at the old limits; the first queue starts at
 * once, the others at their turn, by whichever applier (this process, the CLI that waits, any
 * scheduler) gets there first.
 */
export async function startRamp(runtime: Runtime, options: StartRampOptions): Promise<StartRampResult> {
  await runtime.assertReachable({ redis: true });
  const names = await selectQueues(runtime, options);
  const store = new RampStore(runtime.redis, runtime.settings.prefix);
  const active = await store.read();
  // Queues that are not in the active ramp join it; those that are are ramped anew only when asked.
  const inActive = names.filter((n) => active?.queues.some((q) => q.name === n));
  if (active && inActive.length && !options.replace) {
    throw new UsageError(
      `A ramp is already active (${active.id}, by ${active.createdBy}, ${describeEnd(active, Date.now())}) and holds ${inActive.join(', ')}.`,
      'Pass --replace to ramp them anew (the other queues of the active ramp go on from where they are), see it with `effects ramp status`, or stop it with `effects ramp cancel`.',
    );
  }

  // For queues the config file does not define, the limits the workers last started with, when the
  // ledger database answers: a ramp needs only Redis, and must work with the database down.
  const unconfigured = names.some((name) => !runtime.effectsByName.has(name));
  const dbUnavailable = unconfigured ? await auditUnavailable(runtime) : null;
  const configs = unconfigured && !dbUnavailable ? await queueConfigs(runtime) : configuredQueueConfigs(runtime);
  const missingTo = names.filter((n) => options.to === undefined && !configs.get(n)?.rateLimit);
  if (missingTo.length) {
    throw new UsageError(
      `--to is needed: queue(s) ${missingTo.join(', ')} have no configured rate limit to ramp to.`,
      dbUnavailable
        ? `Pass --to N (jobs per second per queue at the end of the ramp), or --config: for queues the config file does not define, the rate limits come from the ledger database, which is unreachable (${dbUnavailable}).`
        : 'Pass --to N (jobs per second per queue at the end of the ramp).',
    );
  }

  const warnings: string[] = [];
  const queues = await Promise.all(
    names.map(async (name) => {
      const effect = configs.get(name);
      const configuredRate = effect?.rateLimit ? limitRate(effect.rateLimit) : undefined;
      const to = options.to ?? configuredRate!;
      if (configuredRate !== undefined && to > configuredRate) {
        warnings.push(
          `Queue ${name} ramps to ${round(to)}/s, above its configured ${round(configuredRate)}/s, which is back in force when its ramp ends.`,
        );
      }
      if (effect) {
        const after: QueueLimits = { rateLimit: effect.rateLimit ?? null, concurrency: effect.globalConcurrency ?? null };
        return { name, to, concurrency: after.concurrency, after, afterSource: 'config' as const };
      }
      // A queue we have no config for gets back what it had before the ramp; during a replaced ramp,
      // "before" is what that ramp would have put back.
      const previous = active?.queues.find((q) => q.name === name)?.after ?? (await readLimits(runtime.redis, runtime.settings.prefix, name));
      return { name, to, concurrency: previous.concurrency, after: previous, afterSource: 'previous' as const };
    }),
  );
  const now = options.now ?? (await redisTime(runtime.redis));
  const actor = options.actor ?? defaultActor();
  const id = `ramp-${randomUUID().slice(0, 8)}`;
  // The queues the new plan takes over from the active one keep its brake unless this one sets its own.
  const hold =
    options.holdOnErrors === undefined && active?.holdOnErrors != null
      ? { holdOnErrors: active.holdOnErrors, holdWindowMs: active.holdWindowMs, holdMinSample: active.holdMinSample }
      : { holdOnErrors: options.holdOnErrors ?? null, holdWindowMs: options.holdWindowMs, holdMinSample: options.holdMinSample };
  const input = {
    id,
    now,
    createdBy: actor,
    durationMs: options.durationMs,
    from: options.from,
    curve: options.curve,
    staggerMs: options.staggerMs,
    ...hold,
    queues,
  };
  buildPlan(input); // every usage error before anything changes

  return auditedIfReachable(
    runtime,
    {
      command: 'resume --ramp',
      actor,
      reason: options.reason,
      filter: {
        queues: names,
        durationMs: options.durationMs,
        from: options.from ?? DEFAULT_RAMP_FROM,
        to: options.to ?? 'configured',
        curve: options.curve ?? 'linear',
        staggerMs: options.staggerMs ?? 0,
        holdOnErrors: hold.holdOnErrors,
        replace: Boolean(options.replace),
        ...(active ? { after: active.id } : {}),
      },
    },
    async (operationId, dbAvailable) => {
      const built = buildPlan({ ...input, operationId });
      // Held and at the starting limit before any applier can see the plan; the queues carried over
      // go on as they are, and the first tick sets their limits.
      for (const queue of built.queues) {
        await runtime.queues.get(queue.name).pause();
        const limit = limitAt(built, queue, now);
        await applyLimits(runtime.queues, queue.name, { rateLimit: limit.rateLimit, concurrency: limit.concurrency });
      }
      const created = await store.create((current) => takeOver(built, current, now), active?.id ?? null);
      if (!created.ok) {
        throw new EffectsError(
          `Another ramp (${created.active?.id ?? 'unknown'}) was stored at the same moment; the queues are paused at the starting limit.`,
          'See it with `effects ramp status`; run this again with --replace to put this plan in force.',
        );
      }
      const { plan, replaced } = created;
      if (dbAvailable) await new QueueSettings(runtime.db, runtime.settings.schema).setPaused(names, false, actor);
      await applyRamp(runtime, { now });
      const carriedOver = plan.queues.filter((q) => !names.includes(q.name)).map((q) => q.name);
      const left = (replaced?.queues ?? []).filter((q) => !names.includes(q.name) && !carriedOver.includes(q.name));
      for (const queue of left) await applyLimits(runtime.queues, queue.name, queue.after);
      return {
        plan: (await store.read()) ?? plan,
        replaced,
        carriedOver,
        leftRunning: left.map((q) => q.name),
        leftPaused: [],
        warnings,
      };
    },
    { counts: () => ({ queues: names.length }), unavailable: dbUnavailable ?? undefined },
  );
}

export interface RampQueueStatus {
  name: string;
  phase: RampPhase;
  /** Jobs per second the plan gives this queue now. */
  rate: number;
  /** Jobs per second at the end of its ramp. */
  to: number;
  /** The limits in the queue's meta hash now, as an applier last set them. */
  applied: QueueLimits;
  paused: boolean;
  startsAt: number;
  endsAt: number;
  /** What is in force when its ramp ends, and where that comes from. */
  after: QueueLimits;
  afterSource: 'config' | 'previous';
}

export interface RampStatus {
  /** Whether a ramp is running; when not, `plan` is the last one that ended (kept a day) or null. */
  active: boolean;
  plan: RampPlan | null;
  now: number;
  /** 0..1 of the plan's length, not counting time held. */
  progress: number;
  endsAt: number | null;
  etaMs: number | null;
  /** Why the ramp is not rising, while it holds. */
  holding: { since: number; reason: string } | null;
  /** Failure rate of the last check (0..1), or null without --hold-on-errors or enough attempts. */
  failureRate: number | null;
  queues: RampQueueStatus[];
  /** A scheduler that applied ramps in the last few seconds (host:pid), or null. */
  applier: string | null;
}

/** The active ramp (or the last one), with where each queue stands and when it ends. */
export async function getRampStatus(runtime: Runtime, options: { now?: number } = {}): Promise<RampStatus> {
  await runtime.assertReachable({ redis: true });
  const store = new RampStore(runtime.redis, runtime.settings.prefix);
  const now = options.now ?? (await redisTime(runtime.redis));
  const [active, applier] = await Promise.all([store.read(), store.applier()]);
  const plan = active ?? (await store.readLast());
  if (!plan) {
    return { active: false, plan: null, now, progress: 0, endsAt: null, etaMs: null, holding: null, failureRate: null, queues: [], applier };
  }
  // An ended plan is shown as it stood when it ended.
  const at = active ? now : (plan.endedAt ?? now);
  const queues = await Promise.all(
    plan.queues.map(async (queue): Promise<RampQueueStatus> => {
      const limit = limitAt(plan, queue, at);
      const [applied, paused] = await Promise.all([
        readLimits(runtime.redis, runtime.settings.prefix, queue.name),
        isPaused(runtime.redis, runtime.settings.prefix, queue.name),
      ]);
      return {
        name: queue.name,
        phase: queuePhase(plan, queue, at),
        rate: limit.rate,
        to: queue.to,
        applied,
        paused,
        startsAt: queueStartsAt(plan, queue, at),
        endsAt: queueEndsAt(plan, queue, at),
        after: queue.after,
        afterSource: queue.afterSource,
      };
    }),
  );
  const end = endsAt(plan, at);
  return {
    active: Boolean(active),
    plan,
    now,
    progress: planProgress(plan, at),
    endsAt: end,
    etaMs: active ? Math.max(0, end - now) : 0,
    holding: holdingOf(plan),
    failureRate: plan.lastCheck ? failureRate(plan, plan.lastCheck) : null,
    queues,
    applier,
  };
}

/** What `effects status` shows of a ramp in progress. */
export interface RampSummary {
  /** 0..1 of the plan's length, not counting time held. */
  progress: number;
  endsAt: number;
  etaMs: number;
  /** Why it is not rising, while it holds. */
  holding: { since: number; reason: string } | null;
  /** Each ramped queue's jobs per second now, and at the end of its ramp. */
  queues: Array<{ name: string; rate: number; to: number }>;
}

/**
 * The active ramp as `effects status` summarises it, or null when none runs: read from the plan
 * alone, without getRampStatus's reads of every ramped queue's limits and paused state.
 */
export async function getRampSummary(runtime: Runtime, at?: number): Promise<RampSummary | null> {
  const plan = await new RampStore(runtime.redis, runtime.settings.prefix).read();
  if (!plan) return null;
  const now = at ?? (await redisTime(runtime.redis));
  const end = endsAt(plan, now);
  return {
    progress: planProgress(plan, now),
    endsAt: end,
    etaMs: Math.max(0, end - now),
    holding: holdingOf(plan),
    queues: plan.queues.map((queue) => ({ name: queue.name, rate: limitAt(plan, queue, now).rate, to: queue.to })),
  };
}

function holdingOf(plan: RampPlan): RampSummary['holding'] {
  const hold = isHolding(plan) ? plan.holds.at(-1)! : null;
  return hold ? { since: hold.start, reason: hold.reason } : null;
}

export interface CancelRampOptions {
  /** Put the configured limits (or those before the ramp) back, instead of keeping the current ones. @defaultValue false */
  restore?: boolean;
  actor?: string;
  reason?: string;
}

export interface CancelRampResult {
  /** False when no ramp was active. */
  cancelled: boolean;
  plan: RampPlan | null;
  restored: boolean;
  /** Each queue of the plan as the cancel left it. */
  queues: Array<{ name: string; limits: QueueLimits; paused: boolean; started: boolean }>;
  operationId: string | null;
  auditSkipped: string | null;
}

/**
 * Stops the active ramp. Its queues keep the limits in force now, or with `restore` get their
 * configured ones (those before the ramp, for queues without config). Queues whose turn had not
 * come stay paused either way: resuming them is the operator's call.
 */
export async function cancelRamp(runtime: Runtime, options: CancelRampOptions = {}): Promise<CancelRampResult> {
  await runtime.assertReachable({ redis: true });
  const store = new RampStore(runtime.redis, runtime.settings.prefix);
  const active = await store.read();
  if (!active) {
    const last = options.restore ? await store.readLast() : null;
    if (last?.outcome === 'cancelled' && !last.restored) return restoreCancelled(runtime, store, last, options);
    return { cancelled: false, plan: null, restored: false, queues: [], operationId: null, auditSkipped: null };
  }
  return auditedIfReachable(
    runtime,
    {
      command: 'ramp cancel',
      actor: options.actor ?? defaultActor(),
      reason: options.reason,
      filter: { ramp: active.id, restore: Boolean(options.restore) },
    },
    async () => {
      const ended = await store.end(active.id, 'cancelled', await redisTime(runtime.redis), (plan) => ({ ...plan, restored: Boolean(options.restore) }));
      if (!ended) throw new EffectsError(`The ramp ${active.id} ended or was replaced while cancelling it.`, 'See `effects ramp status`.');
      const queues = await leaveQueues(runtime, ended, Boolean(options.restore));
      return { cancelled: true, plan: ended, restored: Boolean(options.restore), queues };
    },
    { counts: (r) => ({ queues: r.queues.length }) },
  );
}

/**
 * `cancel --restore` after a plain cancel: the cancelled plan's queues get their after-ramp limits
 * then, rather than staying at the rate of the moment the ramp stopped, with no ramp to raise it.
 */
async function restoreCancelled(
  runtime: Runtime,
  store: RampStore,
  last: RampPlan,
  options: CancelRampOptions,
): Promise<CancelRampResult> {
  return auditedIfReachable(
    runtime,
    {
      command: 'ramp cancel',
      actor: options.actor ?? defaultActor(),
      reason: options.reason,
      filter: { ramp: last.id, restore: true, cancelledBefore: true },
    },
    async () => {
      const queues = await leaveQueues(runtime, last, true);
      const plan = (await store.updateLast((p) => ({ ...p, restored: true }))) ?? last;
      return { cancelled: false, plan, restored: true, queues };
    },
    { counts: (r) => ({ queues: r.queues.length }) },
  );
}

/** Each queue of a cancelled plan as the cancel leaves it; with `restore`, at its after-ramp limits. */
async function leaveQueues(runtime: Runtime, plan: RampPlan, restore: boolean): Promise<CancelRampResult['queues']> {
  const queues: CancelRampResult['queues'] = [];
  for (const queue of plan.queues) {
    if (restore) await applyLimits(runtime.queues, queue.name, queue.after);
    queues.push({
      name: queue.name,
      limits: await readLimits(runtime.redis, runtime.settings.prefix, queue.name),
      paused: await isPaused(runtime.redis, runtime.settings.prefix, queue.name),
      started: queue.startedAt !== null,
    });
  }
  return queues;
}

function describeEnd(plan: RampPlan, now: number): string {
  const end = endsAt(plan, now);
  return isHolding(plan) ? 'holding' : `ends in ${formatDuration(Math.max(0, end - now))}`;
}

const round = (x: number) => Number(x.toFixed(2));
