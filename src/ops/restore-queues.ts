import type { Runtime } from '../core/runtime.js';
import { QueueSettings } from '../ledger/queue-settings.js';
import { SETTINGS_APPLIED_FIELD, redisKeys } from '../queue/keys.js';
import { applyLimits } from '../queue/limits.js';
import { RampStore } from '../ramp/store.js';
import { discoverQueues } from '../queue/discover.js';
import { queueConfigOf, type QueueConfig } from '../queue/queues.js';

export interface RestoredQueue {
  queue: string;
  /** The operator had left it paused (queue_settings), so it was paused again. */
  paused: boolean;
  /** Configured fleet-wide limits put back; null when the effect has none or a ramp owns them. */
  globalConcurrency: number | null;
  rateLimit: { max: number; durationMs: number } | null;
}

/**
 * Puts back what a Redis wipe loses and only the config and the ledger database remember: each
 * configured queue's global limits (without a config file, those the workers last started with,
 * for the queues still in use) and the paused state an operator left it in. Also what a new queue
 * never had: the worker's start and every rebuild call this. A queue whose meta hash still
 * carries SETTINGS_APPLIED_FIELD is left alone, so a running system is never overridden: not what an
 * operator set since, and not by a process with another config (a rolling deploy, a laptop). A queue
 * is never resumed by this, and a queue in the active ramp gets its limits from the ramp.
 */
export async function restoreQueueSettings(
  runtime: Runtime,
  options: { queues?: string[]; dryRun?: boolean; configs?: Map<string, QueueConfig> } = {},
): Promise<RestoredQueue[]> {
  const keys = redisKeys(runtime.settings.prefix);
  const stored = new QueueSettings(runtime.db, runtime.settings.schema);
  const [paused, configs] = await Promise.all([
    stored.listPaused().then((names) => new Set(names)),
    options.configs ?? queueConfigs(runtime),
  ]);
  const wanted = options.queues ? new Set(options.queues) : undefined;
  const candidates = [...new Set([...(await queuesToRestore(runtime, configs)), ...paused])]
    .filter((q) => !wanted || wanted.has(q))
    .sort();
  const missing = await queuesWithoutSettings(runtime, candidates);
  // Every queue still has its settings: the usual case at a worker's start and a rebuild's.
  if (missing.length === 0) return [];
  // A plan this version cannot read (written by a newer effects) owns every queue's limits: a worker
  // must still start, and must not fight the ramp.
  const ramp = await new RampStore(runtime.redis, runtime.settings.prefix).read().catch(() => 'unreadable' as const);
  const isRamped = (queue: string) => ramp === 'unreadable' || Boolean(ramp?.queues.some((q) => q.name === queue));

  const restored: RestoredQueue[] = [];
  for (const queue of missing) {
    const config = configs.get(queue);
    const limits = config && !isRamped(queue) ? config : undefined;
    const entry: RestoredQueue = {
      queue,
      paused: paused.has(queue),
      globalConcurrency: limits?.globalConcurrency ?? null,
      rateLimit: limits?.rateLimit ?? null,
    };
    if (!options.dryRun) {
      // Paused first, so nothing enqueued afterwards can start on a queue that should be held.
      if (entry.paused) await runtime.queues.get(queue).pause();
      if (limits) {
        await applyLimits(runtime.queues, queue, { concurrency: limits.globalConcurrency ?? null, rateLimit: limits.rateLimit ?? null });
      }
      await runtime.redis.hset(keys.queue(queue, 'meta'), SETTINGS_APPLIED_FIELD, String(Date.now()));
    }
    if (entry.paused || entry.globalConcurrency || entry.rateLimit) restored.push(entry);
  }
  return restored;
}

/**
 * Those of `queues` whose meta hash lacks SETTINGS_APPLIED_FIELD: new queues, and every queue after
 * Redis lost its data. One round trip, and Redis only.
 */
export async function queuesWithoutSettings(runtime: Runtime, queues: readonly string[]): Promise<string[]> {
  if (queues.length === 0) return [];
  const keys = redisKeys(runtime.settings.prefix);
  const pipeline = runtime.redis.pipeline();
  for (const queue of queues) pipeline.hexists(keys.queue(queue, 'meta'), SETTINGS_APPLIED_FIELD);
  const replies = (await pipeline.exec()) ?? [];
  return queues.filter((_queue, i) => {
    const [error, reply] = replies[i] ?? [];
    if (error) throw error;
    return Number(reply) !== 1;
  });
}

/**
 * The config of every queue this process knows: its config file's effects, and for the others what
 * the workers recorded when they last started (`QueueSettings.recordConfigs`).
 */
export async function queueConfigs(runtime: Runtime): Promise<Map<string, QueueConfig>> {
  const recorded = await new QueueSettings(runtime.db, runtime.settings.schema).configs();
  return new Map([...recorded, ...configuredQueueConfigs(runtime)]);
}

/** The config file's queues and their configs, without the database. */
export function configuredQueueConfigs(runtime: Runtime): Map<string, QueueConfig> {
  return new Map([...runtime.effectsByName].map(([name, effect]) => [name, queueConfigOf(effect, runtime.settings)]));
}

/**
 * The queues whose limits a restore considers: the config file's; without one, the recorded queues
 * that are still in use (pending ledger rows, or jobs in Redis), so that the record of an effect
 * long removed does not bring its queue back.
 */
async function queuesToRestore(runtime: Runtime, configs: Map<string, QueueConfig>): Promise<string[]> {
  if (runtime.effectsByName.size > 0) return [...runtime.effectsByName.keys()];
  const recorded = [...configs.keys()];
  if (recorded.length === 0) return [];
  const [owed, inRedis] = await Promise.all([
    runtime.ledger.effectsWithPending(recorded),
    discoverQueues(runtime.redis, runtime.settings.prefix),
  ]);
  return recorded.filter((queue) => owed.includes(queue) || inRedis.includes(queue));
}
