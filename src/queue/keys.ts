/**
 * Every Redis key and job id this project builds, in one place. BullMQ owns `${prefix}:${queue}:*`;
 * our own keys live under `${prefix}:__effects:*` so they share a Redis Cluster hash tag with the
 * queues when the prefix is one (`{effects}`).
 */

/** Queues whose names start with this are the project's own (the scheduler's), not effects. */
export const INTERNAL_QUEUE_PREFIX = '__effects';
export const SCHEDULER_QUEUE = '__effects_scheduler';

const LEDGER_JOB_ID = /^ledger-(\d+)$/;

/** The job id of a ledger row: deterministic, so a push or rebuild never duplicates a live job. */
export function jobIdForRow(rowId: string): string {
  // BullMQ refuses integer-string ids and ids with ':'.
  return `ledger-${rowId}`;
}

/** The ledger row a job belongs to, or undefined for jobs not created from the ledger. */
export function rowIdFromJobId(jobId: string | undefined): string | undefined {
  return jobId ? LEDGER_JOB_ID.exec(jobId)?.[1] : undefined;
}

export const isInternalQueue = (name: string) => name.startsWith(INTERNAL_QUEUE_PREFIX);

export const redisKeys = (prefix: string) => ({
  queue: (queue: string, suffix: string) => `${prefix}:${queue}:${suffix}`,
  job: (queue: string, jobId: string) => `${prefix}:${queue}:${jobId}`,
  /** `meta` hashes mark every BullMQ queue; discovery scans for them. */
  metaPattern: `${prefix}:*:meta`,
  ramp: `${prefix}:${INTERNAL_QUEUE_PREFIX}:ramp`,
  alerted: (queue: string, jobId: string) => `${prefix}:${INTERNAL_QUEUE_PREFIX}:alerted:${queue}:${jobId}`,
  replayCount: (queue: string) => `${prefix}:${INTERNAL_QUEUE_PREFIX}:replays:${queue}`,
  queueSettings: `${prefix}:${INTERNAL_QUEUE_PREFIX}:queue-settings`,
});
