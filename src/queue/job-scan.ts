import type { RedisClient } from './redis.js';
import { redisKeys } from './keys.js';
import { SKIP_SEEN_LUA, nextCursor, type SetCursor } from './set-cursor.js';

/** The sorted sets a scan can walk. `failed` is scored by finishedOn; `delayed` by due time. */
export type ScannedSet = 'failed' | 'delayed';

/** The fields of a job the operator commands need, and nothing more (no stack traces, no opts). */
export interface ScannedJob {
  id: string;
  queue: string;
  /** Which set the job was found in. */
  state: ScannedSet;
  /** Empty after a lean scan until filled in with completeJobs. */
  name: string;
  /** The job's data as BullMQ stores it: a JSON string, parsed only when shown. `null` after a lean scan. */
  rawData: string;
  attemptsMade: number;
  failedReason: string | null;
  /** Not read by scans of the failed set (completeJobs fills it in). */
  timestamp: number | null;
  finishedOn: number | null;
  processedOn: number | null;
  /** How many times an operator replayed this job. */
  replayCount: number;
}

export interface ScanOptions {
  /** Only jobs with at least this many attempts come back (the rest are only stepped over). @defaultValue 0 */
  minAttempts?: number;
  /** Lowest score, inclusive: for `failed`, the earliest finishedOn in epoch ms. @defaultValue -inf */
  minScore?: number;
  /** Highest score, inclusive. @defaultValue +inf */
  maxScore?: number;
  /** Set members read per round trip. @defaultValue 1000 */
  pageSize?: number;
  /**
   * Leave out the job name and data, the biggest fields, for callers that need neither of every job
   * (a listing fills them in for the few jobs it shows). @defaultValue false
   */
  lean?: boolean;
  /**
   * Ask for the next page before the caller works on this one, so Redis and the caller work at the
   * same time. Safe when the caller removes jobs: each page's skip count is taken inside Redis,
   * atomically with the page. @defaultValue false
   */
  prefetch?: boolean;
}

/**
 * One page of a sorted set, in score order, with only the fields we show, read inside Redis so a
 * page is one round trip and Redis is never blocked for long. Paged with a SetCursor, so it stays
 * right when the caller removes jobs between pages (replay, discard) and when many jobs share one
 * finishedOn.
 */
const SCAN_PAGE = `${SKIP_SEEN_LUA}
local zset, replays = KEYS[1], KEYS[2]
local jobPrefix, cursor, maxScore = ARGV[1], ARGV[2], ARGV[3]
local pageSize, minAttempts, lean, delayed = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1', ARGV[7] == 'delayed'
local skip = skipSeen(zset, cursor, 8)
local items = redis.call('ZRANGEBYSCORE', zset, cursor, maxScore, 'WITHSCORES', 'LIMIT', skip, pageSize)
if #items == 0 then return {} end
local ids = {}
for i = 1, #items, 2 do ids[#ids + 1] = items[i] end
local counts = redis.call('HMGET', replays, unpack(ids))
-- A flat reply, STRIDE values per member: cheaper to build and to parse than nested ones. A member
-- below minAttempts, or whose hash is gone, comes back with nil fields.
local out = {}
local n = 0
for k, id in ipairs(ids) do
  -- Only what filtering and grouping need: for the failed set the score is finishedOn, and name and
  -- data (the biggest fields) only when asked for.
  local timestamp, atm, failedReason, processedOn, name, data
  if delayed and lean then
    atm, failedReason, timestamp, processedOn = unpack(redis.call('HMGET', jobPrefix .. id, 'atm', 'failedReason', 'timestamp', 'processedOn'))
  elseif delayed then
    atm, failedReason, timestamp, processedOn, name, data = unpack(redis.call('HMGET', jobPrefix .. id, 'atm', 'failedReason', 'timestamp', 'processedOn', 'name', 'data'))
  elseif lean then
    atm, failedReason = unpack(redis.call('HMGET', jobPrefix .. id, 'atm', 'failedReason'))
  else
    atm, failedReason, name, data = unpack(redis.call('HMGET', jobPrefix .. id, 'atm', 'failedReason', 'name', 'data'))
  end
  out[n + 1] = id
  out[n + 2] = items[2 * k]
  -- A hash without attempts and error is gone (or is no job of ours): step over it.
  if (atm or failedReason or timestamp) and (tonumber(atm) or 0) >= minAttempts then
    out[n + 3] = timestamp or false
    out[n + 4] = atm or '0'
    out[n + 5] = failedReason or false
    out[n + 6] = false
    out[n + 7] = processedOn or false
    out[n + 8] = counts[k] or '0'
    out[n + 9] = name or false
    out[n + 10] = data or false
  else
    for j = 3, 10 do out[n + j] = false end
  end
  n = n + 10
end
return out
`;
/** Values per member in a page reply: id, score, timestamp, atm, failedReason, finishedOn, processedOn, replays, name, data. */
const STRIDE = 10;

const num = (value: string | null | undefined) => (value === null || value === undefined ? null : Number(value));

/**
 * Walks one of a queue's sorted sets a page at a time, yielding the jobs that reached `minAttempts`.
 * Memory holds one page (two with prefetch); the caller may remove yielded jobs from the set.
 */
export async function* scanJobSet(
  redis: RedisClient,
  prefix: string,
  queue: string,
  state: ScannedSet,
  options: ScanOptions = {},
): AsyncGenerator<ScannedJob[]> {
  const keys = redisKeys(prefix);
  const pageSize = options.pageSize ?? 1000;
  const max = options.maxScore === undefined ? '+inf' : String(options.maxScore);
  const page = (at: SetCursor) =>
    redis.eval(
      SCAN_PAGE,
      2,
      keys.queue(queue, state),
      keys.replayCount(queue),
      keys.job(queue, ''),
      at.score,
      max,
      pageSize,
      options.minAttempts ?? 0,
      options.lean ? '1' : '0',
      state,
      ...at.seen,
    ) as Promise<Array<string | null>>;

  let cursor: SetCursor = { score: options.minScore === undefined ? '-inf' : String(options.minScore), seen: [] };
  let pending = page(cursor);
  for (;;) {
    const reply = await pending;
    const full = reply.length / STRIDE === pageSize;
    if (full) {
      const lastScore = reply[reply.length - STRIDE + 1]!;
      const atLast: string[] = [];
      for (let at = 0; at < reply.length; at += STRIDE) if (reply[at + 1] === lastScore) atLast.push(reply[at]!);
      cursor = nextCursor(cursor, lastScore, atLast);
      if (options.prefetch) {
        pending = page(cursor);
        // Awaited on the next turn; until then a failure must not count as unhandled.
        pending.catch(() => undefined);
      }
    }
    const jobs: ScannedJob[] = [];
    for (let at = 0; at < reply.length; at += STRIDE) {
      if (reply[at + 3] !== null) jobs.push(toScannedJob(reply, at, queue, state));
    }
    if (jobs.length) yield jobs;
    if (!full) return;
    if (!options.prefetch) pending = page(cursor);
  }
}

function toScannedJob(reply: Array<string | null>, at: number, queue: string, state: ScannedSet): ScannedJob {
  return {
    id: reply[at]!,
    queue,
    state,
    name: reply[at + 8] ?? '',
    rawData: reply[at + 9] ?? 'null',
    attemptsMade: Number(reply[at + 3] ?? 0),
    failedReason: reply[at + 4],
    timestamp: num(reply[at + 2]),
    // The failed set is scored by finishedOn, so a scan has it without reading it.
    finishedOn: num(reply[at + 5]) ?? (state === 'failed' && reply[at + 1] !== null ? Number(reply[at + 1]) : null),
    processedOn: num(reply[at + 6]),
    replayCount: Number(reply[at + 7] ?? 0),
  };
}

/** Fills in what a lean scan left out (name, data, timestamps) for the few jobs shown: one pipeline. */
export async function completeJobs(redis: RedisClient, prefix: string, jobs: readonly ScannedJob[]): Promise<void> {
  if (jobs.length === 0) return;
  const keys = redisKeys(prefix);
  const pipeline = redis.pipeline();
  for (const job of jobs) pipeline.hmget(keys.job(job.queue, job.id), 'name', 'data', 'timestamp', 'finishedOn', 'processedOn');
  const replies = (await pipeline.exec()) ?? [];
  jobs.forEach((job, i) => {
    const [error, value] = replies[i] ?? [];
    if (error) throw error;
    const [name, data, timestamp, finishedOn, processedOn] = value as Array<string | null>;
    job.name = name ?? '';
    job.rawData = data ?? 'null';
    job.timestamp = num(timestamp);
    job.finishedOn = num(finishedOn);
    job.processedOn = num(processedOn);
  });
}

/**
 * The same fields for named jobs (`--ids`), with the set each is in; jobs in neither set, or with
 * fewer attempts, are left out. One pipeline for the whole list.
 */
export async function readJobs(
  redis: RedisClient,
  prefix: string,
  queue: string,
  ids: readonly string[],
  options: { states: readonly ScannedSet[]; minAttempts?: number },
): Promise<ScannedJob[]> {
  const keys = redisKeys(prefix);
  const pipeline = redis.pipeline();
  for (const id of ids) {
    pipeline.hmget(keys.job(queue, id), 'timestamp', 'atm', 'failedReason', 'finishedOn', 'processedOn');
    pipeline.hget(keys.replayCount(queue), id);
    pipeline.hmget(keys.job(queue, id), 'name', 'data');
    for (const state of options.states) pipeline.zscore(keys.queue(queue, state), id);
  }
  const replies = (await pipeline.exec()) ?? [];
  const stride = 3 + options.states.length;
  const jobs: ScannedJob[] = [];
  ids.forEach((id, i) => {
    const at = (k: number) => {
      const [error, value] = replies[i * stride + k] ?? [];
      if (error) throw error;
      return value;
    };
    const fields = at(0) as Array<string | null>;
    const state = options.states.find((_, s) => at(3 + s) !== null);
    if (fields[0] === null || !state || Number(fields[1] ?? 0) < (options.minAttempts ?? 0)) return;
    const row = [id, null, ...fields, (at(1) as string | null) ?? '0', ...(at(2) as Array<string | null>)];
    jobs.push(toScannedJob(row, 0, queue, state));
  });
  return jobs;
}
