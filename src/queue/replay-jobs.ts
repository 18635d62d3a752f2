import type { Redis } from 'ioredis';
import { redisKeys } from './keys.js';

/**
 * Moves many failed jobs back to waiting in one script call: what BullMQ's
 * `job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true })` does (its
 * reprocessJob script), for a page of jobs instead of one round trip each. Per job, atomically:
 * only if it is still in the failed set; clear finishedOn, processedOn, failedReason and the
 * attempt counters; push to wait (or prioritized) the way BullMQ would, honouring `lifo`, a paused
 * queue and global concurrency; give a child back to its parent's dependencies; emit the `waiting`
 * event with `prev: failed`; count the replay. Workers see nothing they would not see after retry().
 *
 * Returns, per job id, its new replay count, or 0 when it was skipped (gone, or no longer failed).
 */
const REPLAY_JOBS = `
local failedKey, waitKey, metaKey, activeKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local markerKey, prioritizedKey, pcKey, eventsKey, replaysKey = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local jobPrefix = ARGV[1]
local rcall = redis.call

local function isPausedOrMaxed()
  local meta = rcall('HMGET', metaKey, 'paused', 'concurrency')
  if meta[1] then return true end
  if meta[2] then return rcall('LLEN', activeKey) >= tonumber(meta[2]) end
  return false
end

local maxEvents = rcall('HGET', metaKey, 'opts.maxLenEvents')
if not maxEvents then
  maxEvents = 10000
  rcall('HSET', metaKey, 'opts.maxLenEvents', maxEvents)
end

local pausedOrMaxed = isPausedOrMaxed()
local added = false
local out = {}
for i = 2, #ARGV do
  local jobId = ARGV[i]
  local jobKey = jobPrefix .. jobId
  if rcall('EXISTS', jobKey) == 1 and rcall('ZREM', failedKey, jobId) == 1 then
    rcall('HDEL', jobKey, 'finishedOn', 'processedOn', 'failedReason', 'atm', 'ats')
    local fields = rcall('HMGET', jobKey, 'priority', 'opts', 'parentKey')
    local priority = tonumber(fields[1]) or 0
    if priority == 0 then
      local lifo = fields[2] and string.find(fields[2], '"lifo":true', 1, true)
      rcall(lifo and 'RPUSH' or 'LPUSH', waitKey, jobId)
    else
      local counter = rcall('INCR', pcKey)
      rcall('ZADD', prioritizedKey, priority * 0x100000000 + counter % 0x100000000, jobId)
    end
    added = true
    local parentKey = fields[3]
    if parentKey and rcall('EXISTS', parentKey) == 1 then
      if rcall('ZREM', parentKey .. ':unsuccessful', jobKey) == 1 or rcall('HDEL', parentKey .. ':failed', jobKey) == 1 then
        rcall('SADD', parentKey .. ':dependencies', jobKey)
      end
    end
    rcall('XADD', eventsKey, 'MAXLEN', '~', maxEvents, '*', 'event', 'waiting', 'jobId', jobId, 'prev', 'failed')
    out[#out + 1] = rcall('HINCRBY', replaysKey, jobId, 1)
  else
    out[#out + 1] = 0
  end
end
if added and not pausedOrMaxed then rcall('ZADD', markerKey, 0, '0') end
return out
`;

export interface ReplayedJobs {
  /** Replayed job ids with their replay count after this replay. */
  replayed: Array<{ id: string; replayCount: number }>;
  /** Ids that were no longer in the failed set (replayed, removed or retried by someone else). */
  skipped: string[];
}

/** Moves these failed jobs of `queue` back to waiting, attempts reset. See REPLAY_JOBS. */
export async function replayFailedJobs(
  redis: Redis,
  prefix: string,
  queue: string,
  ids: readonly string[],
): Promise<ReplayedJobs> {
  const result: ReplayedJobs = { replayed: [], skipped: [] };
  if (ids.length === 0) return result;
  const keys = redisKeys(prefix);
  const k = (suffix: string) => keys.queue(queue, suffix);
  const counts = (await redis.eval(
    REPLAY_JOBS,
    9,
    k('failed'),
    k('wait'),
    k('meta'),
    k('active'),
    k('marker'),
    k('prioritized'),
    k('pc'),
    k('events'),
    keys.replayCount(queue),
    keys.job(queue, ''),
    ...ids,
  )) as number[];
  ids.forEach((id, i) => {
    if (counts[i] > 0) result.replayed.push({ id, replayCount: counts[i] });
    else result.skipped.push(id);
  });
  return result;
}
