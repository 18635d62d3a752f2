import type { Redis } from 'ioredis';

export type JobLiveness = 'missing' | 'alive' | 'finished';

/**
 * One status character per job key, computed inside Redis: `0` no such job, `1` alive (waiting,
 * delayed, active, paused), `2` finished (completed or failed: BullMQ sets `finishedOn` then and
 * clears it whenever it moves the job back to wait). One command per page instead of one per job
 * keeps the client's share of a rebuild small.
 */
const LIVENESS_SCRIPT = `
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'timestamp', 'finishedOn')
  if not v[1] then out[i] = '0' elseif v[2] then out[i] = '2' else out[i] = '1' end
end
return table.concat(out)
`;

const STATUS: Record<string, JobLiveness> = { '0': 'missing', '1': 'alive', '2': 'finished' };

/** The liveness of each job hash key, in order. All keys must share a slot on Redis Cluster (a hash-tag prefix). */
export async function jobLiveness(redis: Redis, jobKeys: readonly string[]): Promise<JobLiveness[]> {
  if (jobKeys.length === 0) return [];
  const codes = (await redis.eval(LIVENESS_SCRIPT, jobKeys.length, ...jobKeys)) as string;
  return Array.from(codes, (c) => STATUS[c]);
}
