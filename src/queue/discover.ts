import { serverFor, type RedisClient } from './redis.js';
import { isInternalQueue, redisKeys } from './keys.js';

/**
 * Finds every BullMQ queue under a prefix by its `meta` hash, so operator commands work on queues
 * this project did not create. SCAN, not KEYS: it never blocks Redis. On a cluster, SCAN runs on the
 * master of the prefix's hash-tag slot, where every key under the prefix lives.
 */
export async function discoverQueues(redis: RedisClient, prefix: string): Promise<string[]> {
  const found = new Set<string>();
  const pattern = redisKeys(prefix).metaPattern;
  const server = await serverFor(redis, prefix);
  let cursor = '0';
  do {
    // Large steps: the keyspace holds a hash per job, and each round trip costs more than the step.
    const [next, keys] = await server.scan(cursor, 'MATCH', pattern, 'COUNT', 10_000);
    cursor = next;
    for (const key of keys) {
      const name = key.slice(prefix.length + 1, -':meta'.length);
      // A ':' left in the name means a deeper key that merely ends in ':meta'.
      if (name && !name.includes(':') && !isInternalQueue(name)) found.add(name);
    }
  } while (cursor !== '0');
  return [...found].sort();
}
