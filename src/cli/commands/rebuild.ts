import type { Command } from 'commander';
import { DEFAULTS } from '../../config/settings.js';
import { formatDuration } from '../../core/duration.js';
import { ExitCode } from '../../core/errors.js';
import { rebuild, type RebuildOptions, type RebuildResult } from '../../ops/rebuild.js';
import type { RestoredQueue } from '../../ops/restore-queues.js';
import { recorded } from '../bulk-command.js';
import { confirmBulk } from '../confirm.js';
import { CommandContext } from '../context.js';
import { listArg, rateArg, timeArg } from '../parsers.js';
import { progressBar } from '../progress.js';

/** Below this many rows a run is over before a bar would be worth drawing. */
const PROGRESS_ABOVE = 1000;

export function registerRebuild(program: Command, setExitCode: (code: number) => void = () => {}): void {
  program
    .command('rebuild')
    .description('enqueue every ledger row that became pending in a window and has no live job')
    .requiredOption('--since <time>', 'rows that became pending since: a duration before now (3h) or an ISO timestamp', timeArg)
    .option('--until <time>', 'rows that became pending before (default: now)', timeArg)
    .option('--effect <names>', 'only these effects, comma-separated', listArg)
    .option('--rate <n/s>', 'at most this many jobs per second (default: unlimited)', rateArg)
    .option('--include-failed', 'also run again the failed rows that failed in the window and whose jobs Redis no longer holds')
    .option('--dry-run', 'count what would be enqueued, change nothing')
    .option('--yes', 'do not ask for confirmation (needed above 100 jobs without a terminal)')
    .option('--reason <text>', 'why, for the audit trail')
    .addHelpText(
      'after',
      `
The window is on when a row became pending (emitted, or last put back by \`effects replay\`),
not on when it was created. Prints scanned / enqueued / already queued / marked done. Rows whose
job is alive are counted, not duplicated. A row whose job completed after the row became pending
(over 5 s ago) is marked done without running again: only its done-mark was lost with a crashed
worker. A job BullMQ holds as failed, or as completed before the row became pending again (a
replay), is re-driven. After a Redis wipe it first puts back each queue's configured limits
(without a config file: those its workers recorded, for queues still in use) and the paused state
an operator left it in. Effects that neither a config file nor a worker's record describes get the
default job options, and the output names them. Ctrl-C stops between chunks; a re-run continues.

Failed rows whose jobs Redis no longer holds (lost with a wipe, or removed by retention) are out of
reach of replay, discard and poison list, which read Redis: rebuild counts those that failed in the
window, and with --include-failed owes them again and enqueues them (each counts as a replay). They
run with all their attempts, and fail again into the failed set if their cause is not fixed: try
--dry-run first, and fix the cause.

Examples:
  $ effects rebuild --since 3h --dry-run
  $ effects rebuild --since 2026-11-25T22:00:00Z --until 2026-11-26T02:00:00Z --effect notify-crm
  $ effects rebuild --since 1d --rate 200/s --yes --reason "Redis failover at 02:10" --json
  $ effects rebuild --since 7d --include-failed --effect notify-crm --dry-run`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      const controller = new AbortController();
      const onSigint = () => controller.abort();
      try {
        await runtime.assertReachable({ redis: true, db: true });
        const base: RebuildOptions = {
          since: opts.since,
          until: opts.until,
          effects: opts.effect,
          rate: opts.rate,
          includeFailed: Boolean(opts.includeFailed),
          actor: ctx.flags.actor,
          reason: opts.reason,
        };
        if (opts.dryRun) {
          const plan = await rebuild(runtime, { ...base, dryRun: true });
          print(ctx, plan, base);
          return;
        }
        let total: number | undefined;
        if (!opts.yes) {
          const plan = await rebuild(runtime, { ...base, dryRun: true });
          await confirmBulk({ count: plan.enqueued, verb: 'enqueue', yes: false });
          total = plan.scanned;
        }
        if (total === undefined && ctx.isTTY) {
          total = await runtime.ledger.countPending({ since: base.since, until: base.until, effects: base.effects });
        }
        const bar = progressBar({
          total: total !== undefined && total >= PROGRESS_ABOVE ? total : 0,
          json: ctx.json,
          label: 'rebuild',
          extra: 'enqueued {enqueued}',
        });
        process.once('SIGINT', onSigint);
        const result = await rebuild(runtime, {
          ...base,
          signal: controller.signal,
          // Rows dealt with, not rows read: the read runs a page ahead of the enqueueing.
          onProgress: (p) => bar.update(p.enqueued + p.alreadyQueued, { enqueued: p.enqueued }),
        }).finally(() => bar.stop());
        print(ctx, result, base);
        if (result.interrupted || result.redisLost) setExitCode(ExitCode.runtime);
      } finally {
        process.off('SIGINT', onSigint);
        await runtime.close();
      }
    });
}

function print(ctx: CommandContext, result: RebuildResult & { operationId?: string }, { rate, includeFailed }: RebuildOptions): void {
  if (ctx.json) {
    ctx.printJson(recorded(result));
    return;
  }
  const { chalk } = ctx;
  const verb = result.dryRun ? 'would enqueue' : 'enqueued';
  const redriven = result.redriven ? ` (${result.redriven} re-driven from completed/failed)` : '';
  const lines = [
    `scanned ${result.scanned}, ${verb} ${result.enqueued}${redriven}, already queued ${result.alreadyQueued}`,
  ];
  if (result.markedDone) {
    const what = result.dryRun ? 'would mark' : 'marked';
    lines.push(`${what} ${result.markedDone} done without running them again: their jobs had completed (a done-mark lost with a worker)`);
  }
  if (includeFailed) {
    const what = result.dryRun ? 'would owe' : 'owed';
    const enqueued = result.dryRun ? 'enqueue' : 'enqueued';
    const left = result.failedWithoutJob - result.failedRedriven;
    lines.push(
      `${what} ${result.failedRedriven} failed row(s) again whose jobs Redis no longer held, and ${enqueued} them (counted above)` +
        (left > 0 ? `; ${left} left as they were (changed meanwhile, or not reached)` : ''),
    );
  } else if (result.failedWithoutJob) {
    lines.push(
      chalk.yellow(
        `${result.failedWithoutJob} failed row(s) of the window have no job in Redis (lost with it, or removed by retention): ` +
          'replay, discard and poison list cannot see them. Add --include-failed to run them again.',
      ),
    );
  }
  if (result.restored.length) {
    const what = result.dryRun ? 'would re-apply' : 're-applied';
    lines.push(`${what} queue settings missing from Redis: ${result.restored.map(describeRestored).join('; ')}`);
  }
  if (result.defaultJobOptions.length) {
    const what = result.dryRun ? 'would get' : 'got';
    lines.push(
      chalk.yellow(
        `jobs of ${result.defaultJobOptions.join(', ')} ${what} the default job options (${DEFAULTS.attempts} attempts, exponential backoff from ${formatDuration(DEFAULTS.backoffDelayMs)}): ` +
          'no config file defines these effects and no worker has recorded their config; pass --config to use their own',
      ),
    );
  }
  if (result.dryRun && rate && result.enqueued) {
    lines.push(`at ${rate}/s this takes about ${formatDuration((result.enqueued / rate) * 1000)}`);
  }
  if (result.interrupted) lines.push(chalk.yellow('interrupted: run the same command again to continue'));
  if (result.redisLost) {
    lines.push(
      chalk.yellow('Redis lost its data while this ran (a restart without persistence, a flush): jobs it added before may be gone with it. Run the same command again.'),
    );
  }
  if (result.operationId) lines.push(chalk.dim(`operation ${result.operationId}`));
  ctx.print(lines.join('\n'));
}

function describeRestored(r: RestoredQueue): string {
  const parts = [
    r.paused ? 'paused' : '',
    r.globalConcurrency ? `concurrency ${r.globalConcurrency}` : '',
    r.rateLimit ? `rate ${r.rateLimit.max}/${formatDuration(r.rateLimit.durationMs)}` : '',
  ].filter(Boolean);
  return `${r.queue} (${parts.join(', ')})`;
}
