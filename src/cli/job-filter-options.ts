import type { Command } from 'commander';
import type { JobFilter } from '../ops/job-filter.js';
import { listArg, positiveIntArg, timeArg } from './parsers.js';

/** The job filter flags `poison list`, `replay` and `discard` share, declared once. */
export function addJobFilterOptions(command: Command): Command {
  return command
    .option('--queue <names>', 'only these queues, comma-separated (default: every queue under the prefix)', listArg)
    .option('--grep <regex>', 'only jobs whose error message, job name or data match this regular expression')
    .option('--since <time>', 'only jobs that last failed since: a duration before now (2h) or an ISO timestamp', timeArg)
    .option('--until <time>', 'only jobs that last failed before this time', timeArg)
    .option('--ids <ids>', 'only these job ids, comma-separated', listArg)
    .option('--error-group <id>', 'only this error group (the id `poison list --by-error` shows)')
    .option('--min-attempts <n>', 'only jobs with at least this many attempts', positiveIntArg);
}

export function jobFilterFrom(opts: Record<string, unknown>): JobFilter {
  return {
    queues: opts.queue as string[] | undefined,
    grep: opts.grep as string | undefined,
    since: opts.since as number | undefined,
    until: opts.until as number | undefined,
    ids: opts.ids as string[] | undefined,
    errorGroup: opts.errorGroup as string | undefined,
    minAttempts: opts.minAttempts as number | undefined,
  };
}
