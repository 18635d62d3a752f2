import { formatDuration } from '../core/duration.js';
import type { Runtime } from '../core/runtime.js';
import { requireLedger, type BulkPlan, type BulkProgress } from '../ops/bulk.js';
import { rowIdFromJobId } from '../queue/keys.js';
import { confirmBulk } from './confirm.js';
import type { CommandContext } from './context.js';
import { progressBar } from './progress.js';
import { table } from './render.js';

/** Above this many jobs, or at a rate that makes the run last, a bar is worth drawing. */
const PROGRESS_ABOVE = 100;

interface BulkRun {
  matched: number;
  dryRun: boolean;
  plan?: BulkPlan;
  operationId?: string;
}

/** A result as the CLI prints it: `operationId` always there, null when nothing was recorded. */
export type Recorded<R extends { operationId?: string }> = Omit<R, 'operationId'> & { operationId: string | null };

export const recorded = <R extends { operationId?: string }>(result: R): Recorded<R> => ({
  ...result,
  operationId: result.operationId ?? null,
});

interface BulkCommand<R> {
  command: 'replay' | 'discard';
  /** `--ids` was given: the run is planned first, so that ids matching no failed job are named. */
  ids?: string[];
  yes: boolean;
  dryRun: boolean;
  useLedger: boolean;
  rate?: number;
  execute(extra: { dryRun?: boolean; asOf?: number; signal?: AbortSignal; onProgress?(p: BulkProgress): void }): Promise<R>;
}

/**
 * The flow replay and discard share: check the ledger can be written, plan (a dry run) when a
 * confirmation or a progress bar needs the count, ask or require --yes above 100 jobs, then run
 * with a progress bar on a terminal, stopping between batches on the first Ctrl-C (a second one
 * kills the process as usual). `operationId` is null when nothing was recorded (a dry run,
 * --no-ledger, or a plan that matched nothing), so scripts can read it without checking for the key.
 */
export async function runBulk<R extends BulkRun>(
  ctx: CommandContext,
  runtime: Runtime,
  options: BulkCommand<R>,
): Promise<Recorded<R>> {
  return recorded(await runBulkSteps(ctx, runtime, options));
}

async function runBulkSteps<R extends BulkRun>(ctx: CommandContext, runtime: Runtime, options: BulkCommand<R>): Promise<R> {
  await runtime.assertReachable({ redis: true });
  if (options.dryRun) return warnUnmatched(await options.execute({ dryRun: true }));
  if (options.useLedger) await requireLedger(runtime, options.command);

  let total: number | undefined;
  /** Set when a plan was shown: the run then acts on the jobs that plan counted, not on any failed since. */
  let asOf: number | undefined;
  if (!options.yes || ctx.isTTY || options.ids?.length) {
    asOf = Date.now();
    const plan = warnUnmatched(await options.execute({ dryRun: true, asOf }));
    total = plan.matched;
    if (total === 0) return { ...plan, dryRun: false };
    const replayedBefore = plan.plan?.replayedBefore;
    await confirmBulk({
      count: total,
      verb: options.command,
      yes: options.yes,
      note: replayedBefore ? `${replayedBefore} of them replayed before` : undefined,
    });
  }
  const lasts = total !== undefined && (total > PROGRESS_ABOVE || (options.rate !== undefined && total / options.rate > 2));
  const bar = progressBar({
    total: lasts ? total! : 0,
    json: ctx.json,
    label: options.command,
    extra: `${options.command === 'replay' ? 'replayed' : 'discarded'} {done} | skipped {skipped}`,
  });
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    return await options.execute({
      ...(asOf === undefined ? {} : { asOf }),
      signal: controller.signal,
      onProgress: (p) => bar.update(p.matched, { done: p.done, skipped: p.skipped }),
    });
  } finally {
    bar.stop();
    process.off('SIGINT', onSigint);
  }
}

/** A mistyped id matches nothing, silently: say which, on stderr (stdout may be --json). */
function warnUnmatched<R extends BulkRun>(plan: R): R {
  const unmatched = plan.plan?.unmatchedIds ?? [];
  if (unmatched.length) {
    const shown = unmatched.slice(0, 20).join(', ') + (unmatched.length > 20 ? `, … (${unmatched.length} in all)` : '');
    // An id of the ledger's form was likely right once: its job is no longer failed. Any other may be a typo.
    const why = unmatched.every((id) => rowIdFromJobId(id))
      ? 'replayed, discarded or removed since? `effects poison show QUEUE ID` tells what became of one'
      : 'mistyped, or no longer failed? Job ids made by effects look like ledger-123 (`effects poison list` shows the failed ones)';
    process.stderr.write(`warning: no failed job has the id(s) ${shown}; ${why}\n`);
  }
  return plan;
}

/** The dry run's plan: counts by queue, job name and error group, and how long it would take. */
export function renderPlan(plan: BulkPlan, verb: string, ctx: CommandContext, pacing?: { brakeWaitMs: number }): string {
  const { chalk } = ctx;
  if (plan.matched === 0) return 'No failed jobs match: nothing to do.';
  const lines = [`${chalk.bold(`would ${verb} ${plan.matched} failed job${plan.matched === 1 ? '' : 's'}`)}`, ''];
  lines.push(table(['queue', 'jobs'], plan.byQueue.map((q) => [q.queue, q.count]), chalk), '');
  lines.push(table(['queue', 'job name', 'jobs'], plan.byName.slice(0, 20).map((n) => [n.queue, n.name, n.count]), chalk));
  if (plan.byName.length > 20) lines.push(chalk.dim(`… and ${plan.byName.length - 20} more job names`));
  lines.push('');
  lines.push(
    table(
      ['group', 'queue', 'jobs', 'error'],
      plan.byError.slice(0, 20).map((e) => [e.id, e.queue, e.count, e.error.length > 80 ? `${e.error.slice(0, 79)}…` : e.error]),
      chalk,
    ),
  );
  if (plan.byError.length > 20) lines.push(chalk.dim(`… and ${plan.byError.length - 20} more error groups`));
  if (plan.replayedBefore) {
    lines.push(chalk.yellow(`${plan.replayedBefore} of them have been replayed before: \`effects poison list\` shows their replay counts`));
  }
  // How long it takes, for a command that paces itself (--rate) and may wait for its brake.
  if (!pacing) return lines.join('\n').trimEnd();
  lines.push('');
  const extraEta = pacing.brakeWaitMs;
  if (plan.etaMs !== null && plan.rate !== null) {
    const waits = extraEta ? ` (plus up to ${formatDuration(extraEta)} while the brake watches the first jobs)` : '';
    lines.push(`at ${plan.rate}/s this takes about ${formatDuration(plan.etaMs)}${waits}`);
  } else {
    lines.push(`no --rate: as fast as Redis takes it${extraEta ? ` (after up to ${formatDuration(extraEta)} while the brake watches the first jobs)` : ''}`);
  }
  return lines.join('\n');
}
