import type { RedisClient } from './redis.js';
import { redisKeys } from './keys.js';

/**
 * Counts jobs in the failed and delayed sets whose attempts reached the threshold. Runs inside Redis
 * a page at a time, reading only the attempts field, so 100k failed jobs neither travel to the
 * client nor block Redis for long.
 */
const COUNT_SCRIPT = `
local zset, jobPrefix, start, stop, threshold = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGE', zset, start, stop)
local n = 0
for _, id in ipairs(ids) do
  local atm = redis.call('HGET', jobPrefix .. id, 'atm')
  if atm and tonumber(atm) >= threshold then n = n + 1 end
end
return {n, #ids}
`;

const PAGE = 5000;

export async function countPoison(redis: RedisClient, prefix: string, queue: string, threshold: number): Promise<number> {
  const keys = redisKeys(prefix);
  let total = 0;
  for (const set of ['failed', 'delayed']) {
    for (let start = 0; ; start += PAGE) {
      const [n, seen] = (await redis.eval(
        COUNT_SCRIPT,
        1,
        keys.queue(queue, set),
        keys.job(queue, ''),
        start,
        start + PAGE - 1,
        threshold,
      )) as [number, number];
      total += n;
      if (seen < PAGE) break;
    }
  }
  return total;
}
