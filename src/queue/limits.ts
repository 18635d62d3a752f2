import type { RedisClient } from './redis.js';
import { redisKeys } from './keys.js';
import type { QueueRegistry } from './queues.js';
import { wakeWorkers } from './wake.js';

/** Fleet-wide limits of one queue, as they live in its BullMQ meta hash. null is "none". */
export interface QueueLimits {
  rateLimit: { max: number; durationMs: number } | null;
  concurrency: number | null;
}

/** The limits in a queue's meta hash now. */
export async function readLimits(redis: RedisClient, prefix: string, queue: string): Promise<QueueLimits> {
  const [concurrency, max, duration] = await redis.hmget(redisKeys(prefix).queue(queue, 'meta'), 'concurrency', 'max', 'duration');
  return {
    rateLimit: max && duration ? { max: Number(max), durationMs: Number(duration) } : null,
    concurrency: concurrency ? Number(concurrency) : null,
  };
}

/**
 * Whether a queue is paused, by BullMQ's own mark in its meta hash, read without opening a BullMQ
 * Queue (which writes the meta hash, creating it for a queue that does not exist).
 */
export async function isPaused(redis: RedisClient, prefix: string, queue: string): Promise<boolean> {
  return (await redis.hexists(redisKeys(prefix).queue(queue, 'meta'), 'paused')) === 1;
}

/** Puts `limits` in force on a queue (null removes a limit), then wakes idle workers if they were raised. */
export async function applyLimits(
  queues: QueueRegistry,
  name: string,
  limits: QueueLimits,
  current?: QueueLimits,
): Promise<{ changed: boolean; raised: boolean }> {
  const before = current ?? (await readLimits(queues.connection, queues.prefix, name));
  const queue = queues.get(name);
  const sameRate =
    before.rateLimit?.max === limits.rateLimit?.max && before.rateLimit?.durationMs === limits.rateLimit?.durationMs;
  if (!sameRate) {
    await (limits.rateLimit
      ? queue.setGlobalRateLimit(limits.rateLimit.max, limits.rateLimit.durationMs)
      : queue.removeGlobalRateLimit());
  }
  if (before.concurrency !== limits.concurrency) {
    await (limits.concurrency ? queue.setGlobalConcurrency(limits.concurrency) : queue.removeGlobalConcurrency());
  }
  const raised = isRaised(before, limits);
  if (raised) await wakeWorkers(queues.connection, queues.prefix, name, limits.rateLimit?.durationMs);
  return { changed: !sameRate || before.concurrency !== limits.concurrency, raised };
}

const rateOf = (limit: QueueLimits['rateLimit']) => (limit ? (limit.max * 1000) / limit.durationMs : Infinity);

/** Whether `next` lets more through than `before`, by rate or by concurrency (null is unlimited). */
export function isRaised(before: QueueLimits, next: QueueLimits): boolean {
  return rateOf(next.rateLimit) > rateOf(before.rateLimit) || (next.concurrency ?? Infinity) > (before.concurrency ?? Infinity);
}
