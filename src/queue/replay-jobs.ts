import type { RedisClient } from './redis.js';
import { redisKeys } from './keys.js';
import { SKIP_SEEN_LUA, nextCursor, type SetCursor } from './set-cursor.js';

/**
 * Moving failed jobs back to waiting, many per script call: what BullMQ's
 * `job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true })` does (its
 * reprocessJob script), for a page of jobs instead of a round trip each. Per job, atomically:
 * only if it is still in the failed set (a member whose hash is gone is dropped from the set and
 * counted as skipped); clear finishedOn, processedOn, failedReason and the attempt counters; push
 * to wait (or prioritized) the way BullMQ would, honouring `lifo`, a paused queue and global
 * concurrency; give a child back to its parent's dependencies; emit the `waiting` event with
 * `prev: failed`; count the replay. Workers see nothing they would not see after retry().
 *
 * KEYS: failed, wait, meta, active, marker, prioritized, pc, events, replay counts. ARGV[1]: the
 * job key prefix.
 */
const PRELUDE = `
local failedKey, waitKey, metaKey, activeKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local markerKey, prioritizedKey, pcKey, eventsKey, replaysKey = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local jobPrefix = ARGV[1]
local rcall = redis.call

local maxEvents = rcall('HGET', metaKey, 'opts.maxLenEvents')
if not maxEvents then
  maxEvents = 10000
  rcall('HSET', metaKey, 'opts.maxLenEvents', maxEvents)
end
local pausedOrMaxed = false
do
  local meta = rcall('HMGET', metaKey, 'paused', 'concurrency')
  if meta[1] then pausedOrMaxed = true
  elseif meta[2] then pausedOrMaxed = rcall('LLEN', activeKey) >= tonumber(meta[2]) end
end
local added = false

-- Replays one job whose fields (priority, opts, parentKey) were read; returns its replay count.
local function replay(jobId, fields)
  local jobKey = jobPrefix .. jobId
  rcall('HDEL', jobKey, 'finishedOn', 'processedOn', 'failedReason', 'atm', 'ats')
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
  return rcall('HINCRBY', replaysKey, jobId, 1)
end

local function readFields(jobId)
  return rcall('HMGET', jobPrefix .. jobId, 'priority', 'opts', 'parentKey', 'timestamp', 'atm')
end

local function finish()
  if added and not pausedOrMaxed then rcall('ZADD', markerKey, 0, '0') end
end
`;

/** Named jobs (ARGV[2..]). Returns per id its new replay count, or 0 when it was skipped. */
const REPLAY_JOBS = `${PRELUDE}
local out = {}
for i = 2, #ARGV do
  local jobId = ARGV[i]
  local fields = readFields(jobId)
  if rcall('ZREM', failedKey, jobId) == 1 and fields[4] then
    out[#out + 1] = replay(jobId, fields)
  else
    out[#out + 1] = 0
  end
end
finish()
return out
`;

/**
 * A page of the failed set, read and replayed in one call: for filters Redis can decide alone (a
 * finishedOn window and a minimum of attempts), the jobs never travel to the client. The page
 * cursor is a SetCursor. ARGV: prefix, cursor, max score, page size, most jobs to replay,
 * min attempts, members already seen at the cursor score.
 * Returns { examined, matched, more, last score, #ties, ties..., id, count, id, count, ... }, where
 * `more` says whether the window holds members past those examined.
 */
const REPLAY_PAGE = `${PRELUDE}${SKIP_SEEN_LUA}
local cursor, maxScore, pageSize = ARGV[2], ARGV[3], tonumber(ARGV[4])
local maxReplays, minAttempts = tonumber(ARGV[5]), tonumber(ARGV[6])
local skip = skipSeen(failedKey, cursor, 7)
local items = rcall('ZRANGEBYSCORE', failedKey, cursor, maxScore, 'WITHSCORES', 'LIMIT', skip, pageSize)
local replayed = {}
local examined, matched = 0, 0
for i = 1, #items, 2 do
  if matched >= maxReplays then break end
  local jobId = items[i]
  local fields = readFields(jobId)
  examined = examined + 1
  if not fields[4] then
    rcall('ZREM', failedKey, jobId)
  elseif (tonumber(fields[5]) or 0) >= minAttempts then
    matched = matched + 1
    rcall('ZREM', failedKey, jobId)
    replayed[#replayed + 1] = jobId
    replayed[#replayed + 1] = replay(jobId, fields)
  end
end
finish()
local more = (examined < #items / 2 or #items / 2 == pageSize) and 1 or 0
local out = {examined, matched, more, false, 0}
if examined > 0 then
  local lastScore = items[2 * examined]
  out[4] = lastScore
  local ties = {}
  for k = examined, 1, -1 do
    if items[2 * k] ~= lastScore then break end
    ties[#ties + 1] = items[2 * k - 1]
  end
  out[5] = #ties
  for _, id in ipairs(ties) do out[#out + 1] = id end
end
for _, v in ipairs(replayed) do out[#out + 1] = v end
return out
`;

export interface ReplayedJobs {
  /** Replayed job ids with their replay count after this replay. */
  replayed: Array<{ id: string; replayCount: number }>;
  /** Ids that were no longer in the failed set (replayed, removed or retried by someone else). */
  skipped: string[];
}

function scriptKeys(prefix: string, queue: string): string[] {
  const keys = redisKeys(prefix);
  const k = (suffix: string) => keys.queue(queue, suffix);
  return [k('failed'), k('wait'), k('meta'), k('active'), k('marker'), k('prioritized'), k('pc'), k('events'), keys.replayCount(queue)];
}

/** Moves these failed jobs of `queue` back to waiting, attempts reset. */
export async function replayFailedJobs(
  redis: RedisClient,
  prefix: string,
  queue: string,
  ids: readonly string[],
): Promise<ReplayedJobs> {
  const result: ReplayedJobs = { replayed: [], skipped: [] };
  if (ids.length === 0) return result;
  const keys = scriptKeys(prefix, queue);
  const counts = (await redis.eval(REPLAY_JOBS, keys.length, ...keys, redisKeys(prefix).job(queue, ''), ...ids)) as number[];
  ids.forEach((id, i) => {
    if (counts[i] > 0) result.replayed.push({ id, replayCount: counts[i] });
    else result.skipped.push(id);
  });
  return result;
}

export interface ReplayPagesOptions {
  /** Earliest finishedOn, inclusive. @defaultValue -inf */
  minScore?: number;
  /** Latest finishedOn, inclusive. @defaultValue +inf */
  maxScore?: number;
  /** Only jobs with at least this many attempts. @defaultValue 0 */
  minAttempts?: number;
  /** Failed-set members looked at per call. @defaultValue 1000 */
  pageSize?: number;
}

export interface ReplayedPage extends ReplayedJobs {
  /** Jobs that matched (all of them replayed: the page was read and moved atomically). */
  matched: number;
  /** The window holds failed jobs past this page. */
  more: boolean;
}

/**
 * Walks the failed set of `queue`, replaying every job in the window with enough attempts, a page
 * per call. `room()` caps the next page's replays (a limit, the brake's sample); the walk ends when
 * the window is done or `room()` is 0.
 */
export async function* replayFailedPages(
  redis: RedisClient,
  prefix: string,
  queue: string,
  options: ReplayPagesOptions,
  room: () => number,
): AsyncGenerator<ReplayedPage> {
  const keys = scriptKeys(prefix, queue);
  const pageSize = options.pageSize ?? 1000;
  let cursor: SetCursor = { score: options.minScore === undefined ? '-inf' : String(options.minScore), seen: [] };
  const max = options.maxScore === undefined ? '+inf' : String(options.maxScore);
  for (;;) {
    const maxReplays = room();
    if (maxReplays <= 0) return;
    const reply = (await redis.eval(
      REPLAY_PAGE,
      keys.length,
      ...keys,
      redisKeys(prefix).job(queue, ''),
      cursor.score,
      max,
      pageSize,
      Number.isFinite(maxReplays) ? maxReplays : pageSize,
      options.minAttempts ?? 0,
      ...cursor.seen,
    )) as Array<string | number | null>;
    const [examined, matched, more, lastScore, tieCount] = reply as [number, number, number, string | null, number];
    const ties = reply.slice(5, 5 + tieCount) as string[];
    const page: ReplayedPage = { matched, more: more === 1, replayed: [], skipped: [] };
    for (let at = 5 + tieCount; at < reply.length; at += 2) {
      page.replayed.push({ id: String(reply[at]), replayCount: Number(reply[at + 1]) });
    }
    if (examined > 0) yield page;
    if (!page.more || lastScore === null) return;
    cursor = nextCursor(cursor, lastScore, ties);
  }
}
