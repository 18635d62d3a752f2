import type { Runtime } from '../core/runtime.js';
import { QueueSettings } from '../ledger/queue-settings.js';
import { SETTINGS_APPLIED_FIELD, redisKeys } from '../queue/keys.js';
import type { ResolvedEffect } from '../config/settings.js';
import { applyLimits } from '../queue/limits.js';

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
 * configured queue's global limits and the paused state an operator left it in. A queue whose meta
 * hash still carries SETTINGS_APPLIED_FIELD is not restored, so a running system is never overridden
 * (a queue is never resumed by this, and limits are left to a ramp while one is stored); the field
 * records which configured limits were applied, so a deploy that changes them applies the new ones
 * (limits only) without touching anything else.
 */
export async function restoreQueueSettings(
  runtime: Runtime,
  options: { queues?: string[]; dryRun?: boolean } = {},
): Promise<RestoredQueue[]> {
  const keys = redisKeys(runtime.settings.prefix);
  const paused = new Set(await new QueueSettings(runtime.db, runtime.settings.schema).listPaused());
  const wanted = options.queues ? new Set(options.queues) : undefined;
  const candidates = [...new Set([...runtime.effectsByName.keys(), ...paused])]
    .filter((q) => !wanted || wanted.has(q))
    .sort();
  if (candidates.length === 0) return [];

  const pipeline = runtime.redis.pipeline();
  for (const queue of candidates) pipeline.hget(keys.queue(queue, 'meta'), SETTINGS_APPLIED_FIELD);
  pipeline.exists(keys.ramp);
  const replies = (await pipeline.exec()) ?? [];
  const rampActive = Number(replies.at(-1)?.[1]) === 1;

  const restored: RestoredQueue[] = [];
  for (const [i, queue] of candidates.entries()) {
    const applied = replies[i]?.[1] as string | null;
    const effect = runtime.effectsByName.get(queue);
    const limits = effect && !rampActive ? effect : undefined;
    const wiped = applied === null;
    // Settings in place and the configured limits unchanged since they were applied: nothing to do.
    if (!wiped && (!limits || applied === limitsFingerprint(limits))) continue;
    const entry: RestoredQueue = {
      queue,
      paused: wiped && paused.has(queue),
      globalConcurrency: limits?.globalConcurrency ?? null,
      rateLimit: limits?.rateLimit ?? null,
    };
    if (!options.dryRun) {
      // Paused first, so nothing enqueued afterwards can start on a queue that should be held.
      if (entry.paused) await runtime.queues.get(queue).pause();
      if (limits) {
        const configured = { concurrency: limits.globalConcurrency ?? null, rateLimit: limits.rateLimit ?? null };
        await applyLimits(runtime.queues, queue, configured);
      }
      // Under a ramp the limits wait for its end; the next run compares them again.
      const marker = limits ? limitsFingerprint(limits) : (applied ?? 'restored');
      await runtime.redis.hset(keys.queue(queue, 'meta'), SETTINGS_APPLIED_FIELD, marker);
    }
    if (entry.paused || entry.globalConcurrency || entry.rateLimit || (!wiped && limits)) restored.push(entry);
  }
  return restored;
}

/** Which configured fleet-wide limits were put in force, as the queue's meta hash records it. */
function limitsFingerprint(effect: ResolvedEffect): string {
  const rate = effect.rateLimit ? `${effect.rateLimit.max}/${effect.rateLimit.durationMs}ms` : 'none';
  return `concurrency=${effect.globalConcurrency ?? 'none'};rate=${rate}`;
}
