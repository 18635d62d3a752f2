import type { RedisClient } from './redis.js';
import { redisKeys } from './keys.js';

/**
 * BullMQ does not wake workers when a queue's limits change. An idle worker sits in BZPOPMIN on the
 * queue's `marker` sorted set (up to its drain delay, 5 s by default) and only a marker wakes it; a
 * worker that hit the rate limit sleeps in-process until the limiter key's TTL runs out, which no
 * Redis write can interrupt. So after raising a limit:
 * - a limiter window longer than the new one is cut to it, so the next window starts on time;
 * - a marker with score 0 is added, exactly as BullMQ's scripts do when a job becomes available
 *   (`ZADD marker 0 "0"` in addBaseMarkerIfNeeded.lua), so blocked workers fetch at once. Each
 *   worker that gets a job adds the marker again, which wakes the next one.
 * A paused queue gets no marker: BullMQ deletes it on pause and adds it back on resume.
 */
const WAKE_SCRIPT = `
if ARGV[1] ~= '' then
  local ttl = redis.call('PTTL', KEYS[3])
  if ttl > tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[3], ARGV[1]) end
end
if redis.call('HEXISTS', KEYS[1], 'paused') == 1 then return 0 end
redis.call('ZADD', KEYS[2], 0, '0')
return 1
`;

/** Wakes a queue's idle workers; returns false when the queue is paused (nothing to wake for). */
export async function wakeWorkers(redis: RedisClient, prefix: string, queue: string, windowMs?: number): Promise<boolean> {
  const keys = redisKeys(prefix);
  const woke = await redis.eval(
    WAKE_SCRIPT,
    3,
    keys.queue(queue, 'meta'),
    keys.queue(queue, 'marker'),
    keys.queue(queue, 'limiter'),
    windowMs === undefined ? '' : String(Math.max(1, Math.round(windowMs))),
  );
  return Number(woke) === 1;
}
