/**
 * Every Redis key and job id this project builds, in one place. BullMQ owns `${prefix}:${queue}:*`;
 * our own keys live under `${prefix}:__effects:*` so they share a Redis Cluster hash tag with the
 * queues when the prefix is one (`{effects}`).
 */

/** Queues whose names start with this are the project's own (the scheduler's), not effects. */
export const INTERNAL_QUEUE_PREFIX = '__effects';
export const SCHEDULER_QUEUE = '__effects_scheduler';

const LEDGER_JOB_ID = /^ledger-([1-9]\d*)$/;

/** The job id of a ledger row: deterministic, so a push or rebuild never duplicates a live job. */
export function jobIdForRow(rowId: string): string {
  // BullMQ refuses integer-string ids and ids with ':'.
  return `ledger-${rowId}`;
}

/** PostgreSQL's largest bigint, the ledger's id type. */
const MAX_ROW_ID = 2n ** 63n - 1n;

/** The ledger row a job belongs to, or undefined for jobs not created from the ledger. */
export function rowIdFromJobId(jobId: string | undefined): string | undefined {
  const id = jobId ? LEDGER_JOB_ID.exec(jobId)?.[1] : undefined;
  // Foreign code can queue "ledger-<any digits>": an id no bigint holds names no row, and passed to
  // PostgreSQL it would fail the whole batched statement it shares with other jobs.
  return id !== undefined && id.length <= 19 && BigInt(id) <= MAX_ROW_ID ? id : undefined;
}

export const isInternalQueue = (name: string) => name.startsWith(INTERNAL_QUEUE_PREFIX);

/**
 * A field we set in a queue's BullMQ `meta` hash once its configured limits and paused state are in
 * place. It lives and dies with the meta hash, so its absence means Redis lost them (a wipe).
 */
export const SETTINGS_APPLIED_FIELD = '__effects_settings_applied';

export const redisKeys = (prefix: string) => ({
  queue: (queue: string, suffix: string) => `${prefix}:${queue}:${suffix}`,
  job: (queue: string, jobId: string) => `${prefix}:${queue}:${jobId}`,
  /** `meta` hashes mark every BullMQ queue; discovery scans for them. */
  metaPattern: `${prefix}:*:meta`,
  /** The active ramp plan (JSON); absent when no ramp is active. */
  ramp: `${prefix}:${INTERNAL_QUEUE_PREFIX}:ramp`,
  /** The last ramp that ended (finished, cancelled or replaced), kept a day for `ramp status`. */
  rampLast: `${prefix}:${INTERNAL_QUEUE_PREFIX}:ramp-last`,
  /** Set with a short expiry by every scheduler applying ramps, so `--detach` can say whether one runs. */
  rampApplier: `${prefix}:${INTERNAL_QUEUE_PREFIX}:ramp-applier`,
  alerted: (queue: string, jobId: string) => `${prefix}:${INTERNAL_QUEUE_PREFIX}:alerted:${queue}:${jobId}`,
  replayCount: (queue: string) => `${prefix}:${INTERNAL_QUEUE_PREFIX}:replays:${queue}`,
  queueSettings: `${prefix}:${INTERNAL_QUEUE_PREFIX}:queue-settings`,
  /** Set by a rebuild when it starts and checked when it ends: gone, Redis lost its data meanwhile. */
  rebuildRun: (runId: string) => `${prefix}:${INTERNAL_QUEUE_PREFIX}:rebuild-run:${runId}`,
});
