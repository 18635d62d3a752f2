import { Queue, Worker, type Job, type JobsOptions } from 'bullmq';
import { Redis } from 'ioredis';
import type { RedisClient } from '../src/queue/redis.js';
import { REDIS_URL, waitFor } from './helpers.js';

/**
 * Poison pills made the way production makes them: jobs added by plain BullMQ code and failed by a
 * plain BullMQ Worker (no effects code involved), so the operator commands are tested against the
 * exact hashes and sets BullMQ writes.
 */
export interface JobSpec {
  name?: string;
  data: Record<string, unknown>;
  opts?: JobsOptions;
}

/**
 * Adds `jobs` to `queue` and runs a worker whose processor throws what `fail` returns (or
 * completes when it returns null), until every job has settled as failed, completed or (with a
 * long custom backoff) delayed. Resolves with the ids of the added jobs, in order.
 */
export async function settleJobs(
  prefix: string,
  queueName: string,
  jobs: JobSpec[],
  fail: (job: Job) => Error | null,
  options: { attempts?: number; settledStates?: Array<'failed' | 'completed' | 'delayed'>; backoff?: (attemptsMade: number) => number } = {},
): Promise<string[]> {
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue(queueName, { connection, prefix });
  const added = await queue.addBulk(
    jobs.map((j) => ({
      name: j.name ?? 'task',
      data: j.data,
      opts: {
        attempts: options.attempts ?? 1,
        backoff: options.backoff ? { type: 'custom' } : { type: 'fixed', delay: 1 },
        ...j.opts,
      },
    })),
  );
  const worker = new Worker(
    queueName,
    async (job) => {
      const error = fail(job);
      if (error) throw error;
      return 'ok';
    },
    {
      connection: new Redis(REDIS_URL, { maxRetriesPerRequest: null }),
      prefix,
      concurrency: 20,
      settings: options.backoff ? { backoffStrategy: options.backoff } : undefined,
    },
  );
  const states = options.settledStates ?? ['failed', 'completed'];
  try {
    await waitFor(async () => {
      const counts = await queue.getJobCounts(...states);
      return states.reduce((sum, s) => sum + (counts[s] ?? 0), 0) >= jobs.length;
    }, 20_000);
  } finally {
    await worker.close();
    await queue.close();
    connection.disconnect();
  }
  return added.map((j) => String(j.id));
}

/** Sets the failed-set score (finishedOn order) of every failed job to one value: ties across pages. */
export async function tieFailedScores(redis: RedisClient, prefix: string, queue: string, score: number): Promise<void> {
  const key = `${prefix}:${queue}:failed`;
  const ids = await redis.zrange(key, 0, -1);
  if (ids.length) await redis.zadd(key, 'XX', ...ids.flatMap((id) => [score, id]));
}
