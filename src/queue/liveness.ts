import type { RedisClient } from './redis.js';

export type JobLiveness =
  | { state: 'missing' }
  /** Waiting, delayed, active or paused. */
  | { state: 'alive' }
  | { state: 'failed' }
  /** `finishedOn`: epoch ms, from the clock of the worker that completed it. */
  | { state: 'completed'; finishedOn: number };

/**
 * One status per job key, computed inside Redis: `0` no such job, `1` alive, `f` failed, and
 * `c<finishedOn>` completed. BullMQ sets `finishedOn` with the job's `returnvalue` (completed) or
 * `failedReason` (failed), and clears both when it moves the job back to wait. One command per page
 * instead of one per job keeps the client's share of a rebuild small.
 */
const LIVENESS_SCRIPT = `
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'timestamp', 'finishedOn', 'returnvalue')
  if not v[1] then out[i] = '0'
  elseif not v[2] then out[i] = '1'
  elseif v[3] then out[i] = 'c' .. v[2]
  else out[i] = 'f' end
end
return out
`;

/** The liveness of each job hash key, in order. All keys must share a slot on Redis Cluster (a hash-tag prefix). */
export async function jobLiveness(redis: RedisClient, jobKeys: readonly string[]): Promise<JobLiveness[]> {
  if (jobKeys.length === 0) return [];
  const codes = (await redis.eval(LIVENESS_SCRIPT, jobKeys.length, ...jobKeys)) as string[];
  return codes.map((code): JobLiveness => {
    if (code === '0') return { state: 'missing' };
    if (code === '1') return { state: 'alive' };
    if (code === 'f') return { state: 'failed' };
    return { state: 'completed', finishedOn: Number(code.slice(1)) };
  });
}
