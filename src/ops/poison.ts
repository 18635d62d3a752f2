import type { Runtime } from '../core/runtime.js';
import { NotFoundError } from '../core/errors.js';
import type { LedgerRow } from '../ledger/rows.js';
import { jobIdForRow, redisKeys, rowIdFromJobId } from '../queue/keys.js';
import { completeJobs, type ScannedSet } from '../queue/job-scan.js';
import { FingerprintCache } from './fingerprint.js';
import { compileFilter, lastFailedAt, matchingJobs, resolveQueues, type JobFilter, type MatchedJob } from './job-filter.js';

/** Poison pills are failed for good, or delayed for yet another retry. */
const POISON_STATES: readonly ScannedSet[] = ['failed', 'delayed'];

export interface PoisonListOptions extends JobFilter {
  /** Attempts that make a job a poison pill; `minAttempts` overrides it. @defaultValue the config's `poison.threshold` (5) */
  threshold?: number;
  /** Jobs returned, newest failure first; `total` counts every match. @defaultValue 100 */
  limit?: number;
  /** Group the matches by queue and error fingerprint. @defaultValue false */
  byError?: boolean;
  /** Job ids kept per error group, the most recent. @defaultValue 5 */
  samplesPerGroup?: number;
  /** Jobs read per Redis round trip. @defaultValue 1000 */
  pageSize?: number;
  /** Called after every page with the number of matches so far (for a progress display). */
  onProgress?(matched: number): void;
}

/** One poison pill, in the `poison list --json` shape of DESIGN.md plus its replay count and error group. */
export interface PoisonJob {
  queue: string;
  id: string;
  name: string;
  /** The job's data; over `MAX_LISTED_DATA` characters of JSON, its first ones as a string instead. */
  data: unknown;
  /** Present (true) when `data` was cut; `poison show` has all of it. */
  dataTruncated?: true;
  attemptsMade: number;
  failedReason: string | null;
  state: ScannedSet;
  timestamp: number | null;
  finishedOn: number | null;
  /** When it last failed: finishedOn, or for a job waiting to retry, when its last attempt started. */
  lastFailedAt: number | null;
  /** How many times an operator replayed this job. */
  replayCount: number;
  /** The id of its error group, for `--error-group`. */
  errorGroup: string;
}

/** Poison pills of one queue that share an error fingerprint. */
export interface ErrorGroup {
  /** Short id to scope `poison list`, `replay` or `discard` to this group (`--error-group`). */
  id: string;
  queue: string;
  /** The error fingerprint: the message with numbers, ids and quoted values normalised. */
  error: string;
  count: number;
  /** Epoch ms of the earliest and latest failure in the group. */
  firstSeen: number | null;
  lastSeen: number | null;
  /** Ids of the most recent jobs in the group. */
  sampleIds: string[];
  /** One real message of the group, to read the details the fingerprint hides. */
  sampleMessage: string | null;
}

export interface PoisonList {
  /** Every match, however many `jobs` holds. */
  total: number;
  /** The attempts that made a job count. */
  threshold: number;
  /** The queues that were scanned. */
  queues: string[];
  jobs: PoisonJob[];
  /** With `byError`: groups, largest first. */
  groups?: ErrorGroup[];
  /**
   * With no match and no filter but queues and the threshold: the failed jobs of those queues, which
   * all failed for good below the threshold (an UnrecoverableError, or fewer `attempts` than the
   * threshold). The worker alerts on them; `--min-attempts 1` lists them.
   */
  failedBelowThreshold?: number;
}

/**
 * The poison pills under the prefix: jobs whose attempts reached the threshold, failed or delayed
 * for a retry, on any BullMQ queue. Streams through the failed and delayed sets a page at a time,
 * keeping only the newest `limit` jobs and the group counts, so memory stays flat however many match.
 */
export async function listPoison(runtime: Runtime, options: PoisonListOptions = {}): Promise<PoisonList> {
  await runtime.assertReachable({ redis: true });
  const threshold = options.threshold ?? runtime.settings.poisonThreshold;
  const filter = await compileFilter(runtime, options, { defaultMinAttempts: threshold });
  const limit = options.limit ?? 100;
  const samples = options.samplesPerGroup ?? 5;
  const newest = new NewestJobs(limit);
  const groups = new Map<string, ErrorGroup>();
  let total = 0;

  // Names and data of every job are not needed, only of the few shown: read those at the end.
  const pages = matchingJobs(runtime, filter, POISON_STATES, {
    pageSize: options.pageSize,
    fingerprints: new FingerprintCache(),
    lean: true,
    prefetch: true,
  });
  for await (const page of pages) {
    total += page.length;
    for (const job of page) {
      newest.offer(job);
      if (options.byError) addToGroup(groups, job, samples);
    }
    options.onProgress?.(total);
  }

  const shown = newest.take();
  await completeJobs(runtime.redis, runtime.settings.prefix, shown);
  const unfiltered = [options.grep, options.since, options.until, options.ids, options.minAttempts, options.errorGroup].every(
    (value) => value === undefined,
  );
  const failedBelowThreshold =
    total === 0 && unfiltered ? await countFailed(runtime, filter.queues) : undefined;
  return {
    total,
    ...(failedBelowThreshold ? { failedBelowThreshold } : {}),
    jobs: shown.map(toPoisonJob),
    ...(options.byError ? { groups: [...groups.values()].sort((a, b) => b.count - a.count || a.queue.localeCompare(b.queue)) } : {}),
    threshold: filter.minAttempts,
    queues: filter.queues,
  };
}

function addToGroup(groups: Map<string, ErrorGroup>, job: MatchedJob, samples: number): void {
  const at = lastFailedAt(job);
  let group = groups.get(job.errorGroup);
  if (!group) {
    group = {
      id: job.errorGroup,
      queue: job.queue,
      error: job.error,
      count: 0,
      firstSeen: at,
      lastSeen: at,
      sampleIds: [],
      sampleMessage: job.failedReason,
    };
    groups.set(job.errorGroup, group);
  }
  group.count += 1;
  if (at !== null) {
    group.firstSeen = group.firstSeen === null ? at : Math.min(group.firstSeen, at);
    if (group.lastSeen === null || at >= group.lastSeen) {
      group.lastSeen = at;
      group.sampleMessage = job.failedReason;
    }
  }
  group.sampleIds.push(job.id);
  if (group.sampleIds.length > samples) group.sampleIds.shift();
}

/** Keeps the `limit` most recently failed jobs seen so far, without holding the rest. */
class NewestJobs {
  private jobs: MatchedJob[] = [];

  constructor(private readonly limit: number) {}

  offer(job: MatchedJob): void {
    if (this.limit <= 0) return;
    this.jobs.push(job);
    // Sorting only when twice full keeps this O(n log limit) overall.
    if (this.jobs.length >= this.limit * 2) this.trim();
  }

  take(): MatchedJob[] {
    this.trim();
    return this.jobs;
  }

  private trim(): void {
    this.jobs.sort((a, b) => (lastFailedAt(b) ?? 0) - (lastFailedAt(a) ?? 0) || a.queue.localeCompare(b.queue));
    this.jobs.length = Math.min(this.jobs.length, this.limit);
  }
}

export function parseJobData(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/**
 * Longest job data a list shows. Thin tasks are a few dozen characters; a job written by other code
 * can carry megabytes, and a list of a few hundred such jobs should not flood a terminal or a pipe.
 */
export const MAX_LISTED_DATA = 2000;

function toPoisonJob(job: MatchedJob): PoisonJob {
  const truncated = job.rawData.length > MAX_LISTED_DATA;
  return {
    queue: job.queue,
    id: job.id,
    name: job.name,
    data: truncated ? `${job.rawData.slice(0, MAX_LISTED_DATA)}...` : parseJobData(job.rawData),
    ...(truncated ? { dataTruncated: true as const } : {}),
    attemptsMade: job.attemptsMade,
    failedReason: job.failedReason,
    state: job.state,
    timestamp: job.timestamp,
    finishedOn: job.finishedOn,
    lastFailedAt: lastFailedAt(job),
    replayCount: job.replayCount,
    errorGroup: job.errorGroup,
  };
}

/** One recorded failure: BullMQ keeps the stack of each failed attempt, oldest first. */
export interface RecordedError {
  message: string;
  stack: string;
}

export interface PoisonDetail {
  queue: string;
  id: string;
  name: string;
  data: unknown;
  /** BullMQ's state: failed, delayed, waiting, active, completed, ... */
  state: string;
  attemptsMade: number;
  attemptsStarted: number;
  /** The job's own attempts limit. */
  maxAttempts: number;
  /** Whether attemptsMade reached the poison threshold. */
  poison: boolean;
  threshold: number;
  failedReason: string | null;
  /** Every error BullMQ kept (up to the job's stackTraceLimit), oldest first. */
  errors: RecordedError[];
  timestamp: number;
  processedOn: number | null;
  finishedOn: number | null;
  /** For a job delayed for a retry: when it is due, epoch ms. */
  retryAt: number | null;
  replayCount: number;
  /** Lines the task wrote with `job.log`, oldest first (at most 50). */
  logs: string[];
  /** The ledger row this job runs, when it has one and the database answered; times in epoch ms. */
  ledger: LedgerRowView | null;
  /** Why `ledger` is null. */
  ledgerNote: string | null;
  opts: Record<string, unknown>;
}

/** A ledger row as the operator API and `--json` give it: every time in epoch ms, as BullMQ's. */
export type LedgerRowView = { [K in keyof LedgerRow]: EpochMs<LedgerRow[K]> };
type EpochMs<T> = T extends Date ? number : T;

const ledgerRowView = (row: LedgerRow): LedgerRowView =>
  Object.fromEntries(Object.entries(row).map(([key, value]) => [key, value instanceof Date ? value.getTime() : value])) as LedgerRowView;

/** Everything about one job. An unknown queue is a usage error; an unknown job id a NotFoundError (exit 1). */
export async function showPoison(
  runtime: Runtime,
  queueName: string,
  jobId: string,
  options: { threshold?: number } = {},
): Promise<PoisonDetail> {
  await runtime.assertReachable({ redis: true });
  await resolveQueues(runtime, [queueName]);
  const keys = redisKeys(runtime.settings.prefix);
  // Asked before opening the queue: a BullMQ Queue object writes the meta hash of a queue that does not exist.
  const exists = (await runtime.redis.exists(keys.job(queueName, jobId))) === 1;
  const queue = exists ? runtime.queues.get(queueName) : undefined;
  const job = queue ? await queue.getJob(jobId) : undefined;
  if (!queue || !job) {
    // A ledger row id given for a job id: the job of row 1330 is ledger-1330.
    const ledgerJob = /^\d+$/.test(jobId) && (await runtime.redis.exists(keys.job(queueName, jobIdForRow(jobId)))) === 1;
    throw new NotFoundError(
      `No job "${jobId}" in queue "${queueName}" (it may have been removed by retention, a discard, or never existed).`,
      ledgerJob
        ? `Did you mean ${jobIdForRow(jobId)}, the job of ledger row ${jobId}? \`effects poison show ${queueName} ${jobIdForRow(jobId)}\``
        : `List poison pills with \`effects poison list --queue ${queueName}\`.`,
    );
  }
  const [state, logs, replays, delayedScore] = await Promise.all([
    job.getState(),
    queue.getJobLogs(jobId, 0, 49),
    runtime.redis.hget(keys.replayCount(queueName), jobId),
    runtime.redis.zscore(keys.queue(queueName, 'delayed'), jobId),
  ]);
  const threshold = options.threshold ?? runtime.settings.poisonThreshold;
  const { ledger, note } = await ledgerRowOf(runtime, queueName, jobId, job.data);
  return {
    queue: queueName,
    id: jobId,
    name: job.name,
    data: job.data,
    state,
    attemptsMade: job.attemptsMade,
    attemptsStarted: job.attemptsStarted ?? 0,
    maxAttempts: job.opts.attempts ?? 1,
    poison: job.attemptsMade >= threshold,
    threshold,
    failedReason: job.failedReason ?? null,
    errors: (job.stacktrace ?? []).filter(Boolean).map((stack) => ({ message: stack.split('\n', 1)[0], stack })),
    timestamp: job.timestamp,
    processedOn: job.processedOn ?? null,
    finishedOn: job.finishedOn ?? null,
    // BullMQ scores delayed jobs by due time shifted left by 12 bits, with a counter below.
    retryAt: delayedScore === null ? null : Math.floor(Number(delayedScore) / 0x1000),
    replayCount: Number(replays ?? 0),
    logs: logs.logs,
    ledger,
    ledgerNote: note,
    opts: job.opts as Record<string, unknown>,
  };
}

/** The ledger row a job runs: by the row id in its job id, or (foreign jobs) by its event and id. */
async function ledgerRowOf(
  runtime: Runtime,
  queue: string,
  jobId: string,
  data: unknown,
): Promise<{ ledger: LedgerRowView | null; note: string | null }> {
  const rowId = rowIdFromJobId(jobId);
  const task = data as { event?: unknown; id?: unknown } | null;
  const isTask = task !== null && typeof task === 'object' && typeof task.event === 'string' && task.id !== undefined;
  if (!rowId && !isTask) return { ledger: null, note: 'not an effects job: neither a ledger job id nor { event, id } data' };
  if (!(await runtime.isDbReachable())) return { ledger: null, note: 'ledger database not reachable' };
  try {
    const row = rowId
      ? (await runtime.ledger.findByIds([rowId])).get(rowId)
      : (await runtime.ledger.findByEvent(task!.event as string, String(task!.id), queue)).at(-1);
    return row ? { ledger: ledgerRowView(row), note: null } : { ledger: null, note: 'no ledger row for this job' };
  } catch (error) {
    return { ledger: null, note: `ledger not readable: ${(error as Error).message}` };
  }
}

async function countFailed(runtime: Runtime, queues: readonly string[]): Promise<number> {
  // Read from the set itself: a BullMQ Queue object would write the meta hash of a queue that does not exist.
  const keys = redisKeys(runtime.settings.prefix);
  const counts = await Promise.all(queues.map((queue) => runtime.redis.zcard(keys.queue(queue, 'failed'))));
  return counts.reduce((sum, n) => sum + n, 0);
}
