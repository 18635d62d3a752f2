import type { Redis } from 'ioredis';
import { redisKeys } from './keys.js';

/** The sorted sets a scan can walk. `failed` is scored by finishedOn; `delayed` by due time. */
export type ScannedSet = 'failed' | 'delayed';

/** The fields of a job the operator commands need, and nothing more (no stack traces, no opts). */
export interface ScannedJob {
  id: string;
  /** Which set the job was found in. */
  state: ScannedSet;
  name: string;
  /** The job's data as BullMQ stores it: a JSON string, parsed only when shown. */
  rawData: string;
  attemptsMade: number;
  failedReason: string | null;
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
}

/**
 * One page of a sorted set, in score order, with only the fields we show, read inside Redis so a
 * page is one round trip and Redis is never blocked for long. The cursor is (score, members already
 * seen at that score): the members seen at the cursor score that are still there are skipped, which
 * stays right when the caller removes jobs between pages (replay, discard) and when many jobs share
 * one finishedOn.
 */
const SCAN_PAGE = `
local zset, replays = KEYS[1], KEYS[2]
local jobPrefix, cursor, maxScore = ARGV[1], ARGV[2], ARGV[3]
local pageSize, minAttempts = tonumber(ARGV[4]), tonumber(ARGV[5])
local skip = 0
local cursorScore = tonumber(cursor)
for i = 6, #ARGV do
  local score = redis.call('ZSCORE', zset, ARGV[i])
  if score and tonumber(score) == cursorScore then skip = skip + 1 end
end
local items = redis.call('ZRANGEBYSCORE', zset, cursor, maxScore, 'WITHSCORES', 'LIMIT', skip, pageSize)
local out = {}
for i = 1, #items, 2 do
  local id = items[i]
  local f = redis.call('HMGET', jobPrefix .. id, 'name', 'atm', 'data', 'failedReason', 'timestamp', 'finishedOn', 'processedOn')
  if f[1] and (tonumber(f[2]) or 0) >= minAttempts then
    out[#out + 1] = {id, items[i + 1], f[1], f[2] or '0', f[3], f[4], f[5], f[6], f[7], redis.call('HGET', replays, id)}
  else
    out[#out + 1] = {id, items[i + 1]}
  end
end
return out
`;

type Reply = [string, string, ...Array<string | null>];

const num = (value: string | null | undefined) => (value === null || value === undefined ? null : Number(value));

/**
 * Walks one of a queue's sorted sets a page at a time, yielding the jobs that reached `minAttempts`.
 * Memory holds one page; the caller may remove yielded jobs from the set before asking for more.
 */
export async function* scanJobSet(
  redis: Redis,
  prefix: string,
  queue: string,
  state: ScannedSet,
  options: ScanOptions = {},
): AsyncGenerator<ScannedJob[]> {
  const keys = redisKeys(prefix);
  const pageSize = options.pageSize ?? 1000;
  const max = options.maxScore === undefined ? '+inf' : String(options.maxScore);
  let cursor = options.minScore === undefined ? '-inf' : String(options.minScore);
  let seenAtCursor: string[] = [];
  for (;;) {
    const reply = (await redis.eval(
      SCAN_PAGE,
      2,
      keys.queue(queue, state),
      keys.replayCount(queue),
      keys.job(queue, ''),
      cursor,
      max,
      pageSize,
      options.minAttempts ?? 0,
      ...seenAtCursor,
    )) as Reply[];
    if (reply.length === 0) return;
    const jobs: ScannedJob[] = [];
    for (const item of reply) {
      if (item.length > 2) jobs.push(toScannedJob(item, state));
    }
    if (jobs.length) yield jobs;
    if (reply.length < pageSize) return;

    const lastScore = reply[reply.length - 1][1];
    const atLast = reply.filter((r) => r[1] === lastScore).map((r) => r[0]);
    // A run of equal scores longer than a page: remember every member seen at that score.
    seenAtCursor = Number(lastScore) === Number(cursor) ? [...seenAtCursor, ...atLast] : atLast;
    cursor = lastScore;
  }
}

function toScannedJob(item: Reply, state: ScannedSet): ScannedJob {
  const [id, , name, atm, data, failedReason, timestamp, finishedOn, processedOn, replays] = item;
  return {
    id,
    state,
    name: name ?? '',
    rawData: data ?? 'null',
    attemptsMade: Number(atm ?? 0),
    failedReason: failedReason ?? null,
    timestamp: num(timestamp),
    finishedOn: num(finishedOn),
    processedOn: num(processedOn),
    replayCount: Number(replays ?? 0),
  };
}

/**
 * The same fields for named jobs (`--ids`), with the set each is in; jobs in neither set, or with
 * fewer attempts, are left out. One pipeline for the whole list.
 */
export async function readJobs(
  redis: Redis,
  prefix: string,
  queue: string,
  ids: readonly string[],
  options: { states: readonly ScannedSet[]; minAttempts?: number },
): Promise<ScannedJob[]> {
  const keys = redisKeys(prefix);
  const pipeline = redis.pipeline();
  for (const id of ids) {
    pipeline.hmget(keys.job(queue, id), 'name', 'atm', 'data', 'failedReason', 'timestamp', 'finishedOn', 'processedOn');
    pipeline.hget(keys.replayCount(queue), id);
    for (const state of options.states) pipeline.zscore(keys.queue(queue, state), id);
  }
  const replies = (await pipeline.exec()) ?? [];
  const stride = 2 + options.states.length;
  const jobs: ScannedJob[] = [];
  ids.forEach((id, i) => {
    const at = (k: number) => {
      const [error, value] = replies[i * stride + k] ?? [];
      if (error) throw error;
      return value;
    };
    const fields = at(0) as Array<string | null>;
    const state = options.states.find((_, s) => at(2 + s) !== null);
    if (!fields[0] || !state || Number(fields[1] ?? 0) < (options.minAttempts ?? 0)) return;
    jobs.push(toScannedJob([id, '', ...fields, at(1) as string | null], state));
  });
  return jobs;
}
