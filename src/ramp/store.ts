import type { RedisClient } from '../queue/redis.js';
import { redisKeys } from '../queue/keys.js';
import type { RampPlan } from './plan.js';

/** How long an ended plan stays readable by `ramp status`. */
const LAST_PLAN_TTL_S = 86_400;

/**
 * Compare-and-set on the plan's JSON text: several processes (the CLI, schedulers, `pause`) change
 * the same plan, and each change must be made against the version it read. An empty expected value
 * means "no plan"; an empty new value deletes it; a third value is stored as the last ended plan.
 */
const CAS_SCRIPT = `
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4]) end
return 1
`;

interface Versioned {
  plan: RampPlan;
  raw: string;
}

/** The active ramp plan in Redis, and the last one that ended. */
export class RampStore {
  private readonly keys;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
  ) {
    this.keys = redisKeys(prefix);
  }

  async read(): Promise<RampPlan | null> {
    return (await this.readVersioned())?.plan ?? null;
  }

  /** The last plan that ended (finished, cancelled, replaced), for a day. */
  async readLast(): Promise<RampPlan | null> {
    const raw = await this.redis.get(this.keys.rampLast);
    return raw ? parse(raw) : null;
  }

  /** Rewrites the last ended plan (keeping its expiry); null when there is none. */
  async updateLast(mutate: (plan: RampPlan) => RampPlan): Promise<RampPlan | null> {
    const last = await this.readLast();
    if (!last) return null;
    const next = mutate(last);
    await this.redis.set(this.keys.rampLast, JSON.stringify(next), 'KEEPTTL');
    return next;
  }

  /**
   * Stores the plan `build` makes from the active one, which must be plan `replaces` (none when
   * null); that one is ended as `replaced` in the same step. `build` runs again on every concurrent
   * change of the active plan (a tick, a pause), so what it carries over is never stale; it must be
   * pure. Fails (returns the active plan) when another plan took the place of `replaces`.
   */
  async create(
    build: (active: RampPlan | null) => RampPlan,
    replaces: string | null,
  ): Promise<{ ok: true; plan: RampPlan; replaced: RampPlan | null } | { ok: false; active: RampPlan | null }> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const current = await this.readVersioned();
      if ((current?.plan.id ?? null) !== replaces) return { ok: false, active: current?.plan ?? null };
      const plan = build(current?.plan ?? null);
      const ended = current ? JSON.stringify(endedPlan(current.plan, 'replaced', plan.createdAt)) : '';
      if (await this.cas(current?.raw ?? '', JSON.stringify(plan), ended)) return { ok: true, plan, replaced: current?.plan ?? null };
    }
    return { ok: false, active: await this.read() };
  }

  /**
   * Changes the active plan `id` with `mutate`, retrying on concurrent changes. Returns the stored
   * plan, or null when the plan is gone or another one took its place. `mutate` may return the
   * plan unchanged (nothing written) and must be pure: it can run more than once.
   */
  async update(id: string, mutate: (plan: RampPlan) => RampPlan): Promise<RampPlan | null> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const current = await this.readVersioned();
      if (!current || current.plan.id !== id) return null;
      const next = mutate(current.plan);
      const raw = JSON.stringify(next);
      if (raw === current.raw) return current.plan;
      if (await this.cas(current.raw, raw, '')) return next;
    }
    return null;
  }

  /** Ends the active plan `id` (it moves to the last-plan key). Returns it, or null if it was not active. */
  async end(id: string, outcome: 'finished' | 'cancelled', at: number, mutate?: (plan: RampPlan) => RampPlan): Promise<RampPlan | null> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const current = await this.readVersioned();
      if (!current || current.plan.id !== id) return null;
      const last = endedPlan(mutate ? mutate(current.plan) : current.plan, outcome, at);
      if (await this.cas(current.raw, '', JSON.stringify(last))) return last;
    }
    return null;
  }

  /** Marks this process as applying ramps, for `everyMs` plus some slack. */
  async heartbeat(applier: string, everyMs: number): Promise<void> {
    await this.redis.set(this.keys.rampApplier, applier, 'PX', Math.max(3_000, everyMs * 4));
  }

  /** Who applied ramps recently (a scheduler), or null. */
  async applier(): Promise<string | null> {
    return this.redis.get(this.keys.rampApplier);
  }

  private async readVersioned(): Promise<Versioned | null> {
    const raw = await this.redis.get(this.keys.ramp);
    return raw ? { plan: parse(raw), raw } : null;
  }

  private async cas(expected: string, next: string, last: string): Promise<boolean> {
    const ok = await this.redis.eval(CAS_SCRIPT, 2, this.keys.ramp, this.keys.rampLast, expected, next, last, LAST_PLAN_TTL_S);
    return Number(ok) === 1;
  }
}

const endedPlan = (plan: RampPlan, outcome: NonNullable<RampPlan['outcome']>, at: number): RampPlan => ({
  ...plan,
  // An open hold ends with the plan.
  holds: plan.holds.map((h) => (h.end === null ? { ...h, end: at } : h)),
  endedAt: at,
  outcome,
});

function parse(raw: string): RampPlan {
  const plan = JSON.parse(raw) as RampPlan;
  if (plan.version !== 1) {
    throw new Error(`The stored ramp plan has version ${String(plan.version)}; this effects understands version 1.`);
  }
  return plan;
}
