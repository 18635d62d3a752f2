import type { Runtime } from '../core/runtime.js';
import { assertTimeWindow } from '../core/duration.js';
import { UsageError } from '../core/errors.js';
import { readJobs, scanJobSet, type ScanOptions, type ScannedJob, type ScannedSet } from '../queue/job-scan.js';
import { redisKeys } from '../queue/keys.js';
import { selectQueues } from './select-queues.js';
import { listQueues } from './status.js';
import { FingerprintCache, errorGroupId } from './fingerprint.js';

/** Which failed jobs an operator command is about. Every field narrows; none given means all. */
export interface JobFilter {
  /** Only these queues. @defaultValue every queue under the prefix */
  queues?: string[];
  /** A regular expression tested against the error message, the job name and the job data. @defaultValue none */
  grep?: string | RegExp;
  /** Jobs that last failed at or after this time, epoch ms. @defaultValue no lower bound */
  since?: number;
  /** Jobs that last failed at or before this time, epoch ms. @defaultValue no upper bound (replay and discard: the start of the run) */
  until?: number;
  /** Only these job ids. @defaultValue any id */
  ids?: string[];
  /** Only jobs with at least this many attempts. @defaultValue 0 (poison list: the poison threshold) */
  minAttempts?: number;
  /** Only the error group with this id (as `poison list --by-error` shows it). @defaultValue any */
  errorGroup?: string;
}

/** A filter checked and compiled once: a RegExp, numbers, and the queues that exist. */
export interface CompiledFilter {
  queues: string[];
  grep?: RegExp;
  since?: number;
  until?: number;
  ids?: string[];
  minAttempts: number;
  errorGroup?: string;
}

/** A job that matched, with its error fingerprint. */
export interface MatchedJob extends ScannedJob {
  /** The error fingerprint of `failedReason` (see fingerprint.ts). */
  error: string;
  /** The id of the (queue, error) group. */
  errorGroup: string;
}

/** When a job last failed: finishedOn, or for a job waiting to retry, the start of its last attempt. */
export const lastFailedAt = (job: ScannedJob): number | null => job.finishedOn ?? job.processedOn ?? job.timestamp;

/** Checks a filter the way an operator wrote it; every problem is a usage error (exit 2). */
export async function compileFilter(
  runtime: Runtime,
  filter: JobFilter,
  options: { now?: number; defaultMinAttempts?: number } = {},
): Promise<CompiledFilter> {
  const now = options.now ?? Date.now();
  assertTimeWindow(filter.since, filter.until, now);
  if (filter.minAttempts !== undefined && !(Number.isInteger(filter.minAttempts) && filter.minAttempts >= 0)) {
    throw new UsageError(`--min-attempts must be a whole number of attempts, got ${filter.minAttempts}.`);
  }
  if (filter.errorGroup !== undefined && !/^[0-9a-f]{8}$/.test(filter.errorGroup)) {
    throw new UsageError(`Invalid --error-group "${filter.errorGroup}": expected the 8-character group id that \`effects poison list --by-error\` shows.`);
  }
  const grep = filter.grep === undefined ? undefined : compileGrep(filter.grep);
  return {
    queues: await resolveQueues(runtime, filter.queues),
    grep,
    since: filter.since,
    until: filter.until,
    ids: filter.ids?.length ? [...new Set(filter.ids)] : undefined,
    minAttempts: filter.minAttempts ?? options.defaultMinAttempts ?? 0,
    errorGroup: filter.errorGroup,
  };
}

export function compileGrep(grep: string | RegExp): RegExp {
  // A global or sticky RegExp remembers where it stopped; `test` on many strings must not.
  if (grep instanceof RegExp) return new RegExp(grep.source, grep.flags.replace(/[gy]/g, ''));
  try {
    return new RegExp(grep);
  } catch (error) {
    throw new UsageError(
      `Invalid --grep "${grep}": ${(error as Error).message.replace(/^Invalid regular expression: /, '')}. Expected a JavaScript regular expression, such as "timeout|ECONNRESET".`,
    );
  }
}

/**
 * The queues asked for, or every queue under the prefix. An unknown name is a usage error that
 * lists the known ones (selectQueues), so a typo at 3 a.m. is fixed in one go.
 */
export async function resolveQueues(runtime: Runtime, wanted: string[] | undefined): Promise<string[]> {
  if (!wanted?.length) return listQueues(runtime);
  const names = [...new Set(wanted)];
  // Named queues are checked by their meta hash: a SCAN of a big keyspace only when one is unknown.
  const keys = redisKeys(runtime.settings.prefix);
  const exists = await Promise.all(names.map((q) => runtime.redis.exists(keys.queue(q, 'meta'))));
  if (names.every((q, i) => exists[i] === 1 || runtime.effectsByName.has(q))) return names;
  return selectQueues(runtime, { queues: names });
}

/** Tests what the Lua scan could not: time window, regular expression, error group. */
export function matches(job: MatchedJob, filter: CompiledFilter): boolean {
  const at = lastFailedAt(job);
  if (filter.since !== undefined && (at === null || at < filter.since)) return false;
  if (filter.until !== undefined && (at === null || at > filter.until)) return false;
  if (filter.errorGroup !== undefined && job.errorGroup !== filter.errorGroup) return false;
  if (filter.grep) {
    const re = filter.grep;
    if (!(re.test(job.failedReason ?? '') || re.test(job.name) || re.test(job.rawData))) return false;
  }
  return true;
}

export interface MatchOptions {
  /** Jobs read per Redis round trip. @defaultValue 1000 */
  pageSize?: number;
  fingerprints?: FingerprintCache;
  /** The caller needs neither name nor data of every job (ignored with a grep, which reads them). @defaultValue false */
  lean?: boolean;
  /** Read the next page while the caller works on this one. @defaultValue false */
  prefetch?: boolean;
}

/**
 * Every job in `states` of the filter's queues that matches it, a page at a time, queue by queue.
 * The failed set is scored by finishedOn, so a time window narrows the scan itself.
 */
export async function* matchingJobs(
  runtime: Runtime,
  filter: CompiledFilter,
  states: readonly ScannedSet[],
  options: MatchOptions = {},
): AsyncGenerator<MatchedJob[]> {
  const fingerprints = options.fingerprints ?? new FingerprintCache();
  // Few distinct fingerprints per queue: hash each once.
  const groupIds = new Map<string, string>();
  const scan: ScanOptions = {
    pageSize: options.pageSize,
    minAttempts: filter.minAttempts,
    lean: Boolean(options.lean) && !filter.grep,
    prefetch: options.prefetch,
  };
  for (const queue of filter.queues) {
    groupIds.clear();
    const pages = filter.ids
      ? idPages(runtime, queue, filter.ids, states, filter.minAttempts)
      : setPages(runtime, queue, states, filter, scan);
    for await (const page of pages) {
      const matched: MatchedJob[] = [];
      for (const job of page) {
        const error = fingerprints.get(job.failedReason);
        let errorGroup = groupIds.get(error);
        if (errorGroup === undefined) {
          errorGroup = errorGroupId(queue, error);
          groupIds.set(error, errorGroup);
        }
        const candidate = job as MatchedJob;
        candidate.error = error;
        candidate.errorGroup = errorGroup;
        if (matches(candidate, filter)) matched.push(candidate);
      }
      if (matched.length) yield matched;
    }
  }
}

async function* setPages(
  runtime: Runtime,
  queue: string,
  states: readonly ScannedSet[],
  filter: CompiledFilter,
  scan: ScanOptions,
): AsyncGenerator<ScannedJob[]> {
  for (const state of states) {
    // Only the failed set is scored by the time a job failed; the delayed set by when it is due.
    const bounds = state === 'failed' ? { minScore: filter.since, maxScore: filter.until } : {};
    yield* scanJobSet(runtime.redis, runtime.settings.prefix, queue, state, { ...scan, ...bounds });
  }
}

async function* idPages(
  runtime: Runtime,
  queue: string,
  ids: string[],
  states: readonly ScannedSet[],
  minAttempts: number,
): AsyncGenerator<ScannedJob[]> {
  for (let i = 0; i < ids.length; i += 1000) {
    yield await readJobs(runtime.redis, runtime.settings.prefix, queue, ids.slice(i, i + 1000), { states, minAttempts });
  }
}
