import { Queue, type JobsOptions } from 'bullmq';
import type { RedisClient } from './redis.js';
import { DEFAULTS, resolveBackoff, type ResolvedEffect, type Settings } from '../config/settings.js';

/** One BullMQ Queue object per queue name, shared by everything in the process. */
export class QueueRegistry {
  private readonly queues = new Map<string, Queue>();

  constructor(
    readonly connection: RedisClient,
    readonly prefix: string,
  ) {}

  get(name: string): Queue {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new Queue(name, { connection: this.connection, prefix: this.prefix });
      queue.on('error', () => {});
      this.queues.set(name, queue);
    }
    return queue;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }
}

/**
 * What an effect's jobs and queue are made with: its job options and fleet-wide limits. Workers
 * record theirs in the ledger database at start (`QueueSettings.recordConfigs`), so that a process
 * without the app's config file (a rebuild from an operator's machine) makes jobs as the app would.
 */
export interface QueueConfig {
  attempts: number;
  backoff: ResolvedEffect['backoff'];
  retention: Settings['retention'];
  globalConcurrency?: number;
  rateLimit?: { max: number; durationMs: number };
}

/** `effect`'s queue config; with no effect, the defaults (an effect known only by its ledger rows). */
export function queueConfigOf(effect: ResolvedEffect | undefined, settings: Settings): QueueConfig {
  return {
    attempts: effect?.attempts ?? DEFAULTS.attempts,
    backoff: effect?.backoff ?? resolveBackoff(undefined),
    retention: settings.retention,
    ...(effect?.globalConcurrency ? { globalConcurrency: effect.globalConcurrency } : {}),
    ...(effect?.rateLimit ? { rateLimit: effect.rateLimit } : {}),
  };
}

/**
 * BullMQ options for an effect's jobs. Completed jobs are kept for a while so a repeated push of the
 * same job id stays a no-op; failed ones are kept long enough for people to look at them.
 */
export function jobOptionsFor(effect: ResolvedEffect | undefined, settings: Settings, jobId: string): JobsOptions {
  return jobOptionsFrom(queueConfigOf(effect, settings), jobId);
}

export function jobOptionsFrom(config: QueueConfig, jobId: string): JobsOptions {
  return {
    jobId,
    attempts: config.attempts,
    backoff: config.backoff,
    removeOnComplete: { age: Math.ceil(config.retention.completedAgeMs / 1000) },
    removeOnFail: { age: Math.ceil(config.retention.failedAgeMs / 1000) },
  };
}
