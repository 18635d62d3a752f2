import type { RedisClient } from './redis.js';
import { redisKeys } from './keys.js';

/** Fields read per HSCAN round trip. */
const PAGE = 500;

/**
 * Drops the replay counts of jobs that no longer exist. A replayed job that then completes is
 * removed by BullMQ's retention, but its count lives in a hash of ours that BullMQ does not know
 * about, and would stay there for good. Returns how many counts were dropped.
 */
export async function trimReplayCounts(redis: RedisClient, prefix: string, queues: readonly string[]): Promise<number> {
  const keys = redisKeys(prefix);
  let dropped = 0;
  for (const queue of queues) {
    const hash = keys.replayCount(queue);
    let cursor = '0';
    do {
      const [next, flat] = await redis.hscan(hash, cursor, 'COUNT', PAGE);
      cursor = next;
      const ids = flat.filter((_, i) => i % 2 === 0);
      if (ids.length === 0) continue;
      const pipeline = redis.pipeline();
      for (const id of ids) pipeline.exists(keys.job(queue, id));
      const exists = (await pipeline.exec()) ?? [];
      const gone = ids.filter((_, i) => exists[i]?.[1] === 0);
      // HSCAN may return a field more than once; HDEL of a missing field is harmless.
      if (gone.length) dropped += await redis.hdel(hash, ...gone);
    } while (cursor !== '0');
  }
  return dropped;
}
