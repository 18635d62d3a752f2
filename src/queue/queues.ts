import { Queue, type JobsOptions } from 'bullmq';
import type { RedisClient } from './redis.js';
import type { ResolvedEffect, Settings } from '../config/settings.js';

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
 * BullMQ options for an effect's jobs. Completed jobs are kept for a while so a repeated push of the
 * same job id stays a no-op; failed ones are kept long enough for people to look at them.
 */
export function jobOptionsFor(effect: ResolvedEffect | undefined, settings: Settings, jobId: string): JobsOptions {
  const attempts = effect?.attempts ?? 10;
  const backoff = effect?.backoff ?? { type: 'exponential', delay: 1000, jitter: 0.5 };
  return {
    jobId,
    attempts,
    backoff,
    removeOnComplete: { age: Math.ceil(settings.retention.completedAgeMs / 1000) },
    removeOnFail: { age: Math.ceil(settings.retention.failedAgeMs / 1000) },
  };
}
