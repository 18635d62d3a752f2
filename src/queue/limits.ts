import type { ResolvedEffect } from '../config/settings.js';
import type { QueueRegistry } from './queues.js';

/**
 * Puts an effect's configured fleet-wide limits into its queue's meta hash. They live only in Redis,
 * so a wiped Redis loses them; the worker, rebuild and the end of a ramp call this to restore them.
 */
export async function applyConfiguredLimits(queues: QueueRegistry, effect: ResolvedEffect): Promise<void> {
  const queue = queues.get(effect.name);
  await (effect.globalConcurrency
    ? queue.setGlobalConcurrency(effect.globalConcurrency)
    : queue.removeGlobalConcurrency());
  await (effect.rateLimit
    ? queue.setGlobalRateLimit(effect.rateLimit.max, effect.rateLimit.durationMs)
    : queue.removeGlobalRateLimit());
}
