import type { Command } from 'commander';
import { formatDuration } from '../../core/duration.js';
import { ExitCode } from '../../core/errors.js';
import { BRAKE_DEFAULTS, type BrakeReport } from '../../ops/brake.js';
import { replay, type ReplayOptions, type ReplayResult } from '../../ops/replay.js';
import { renderPlan, runBulk, type Recorded } from '../bulk-command.js';
import { CommandContext } from '../context.js';
import { addJobFilterOptions, jobFilterFrom } from '../job-filter-options.js';
import { durationArg, positiveIntArg, rateArg, ratioArg } from '../parsers.js';

export function registerReplay(program: Command, setExitCode: (code: number) => void = () => {}): void {
  addJobFilterOptions(
    program
      .command('replay')
      .description('move matching failed jobs back to waiting with attempts reset, watched by a brake'),
  )
    .option('--limit <n>', 'replay at most this many jobs', positiveIntArg)
    .option('--rate <n/s>', 'at most this many jobs per second (default: unlimited)', rateArg)
    .option('--dry-run', 'print what would be replayed by queue, job name and error group, and how long it takes')
    .option('--yes', 'do not ask for confirmation (needed above 100 jobs without a terminal)')
    .option('--reason <text>', 'why, for the audit trail')
    .option('--brake-sample <n>', `jobs replayed first and watched (default: ${BRAKE_DEFAULTS.sample})`, positiveIntArg)
    .option('--brake-threshold <share>', `stop when more than this share of them fails again (default: ${BRAKE_DEFAULTS.threshold * 100}%)`, ratioArg)
    .option('--brake-wait <duration>', `how long to wait for their verdict before going on (default: ${BRAKE_DEFAULTS.waitMs / 1000}s)`, durationArg)
    .option('--no-brake', 'replay everything without watching the first jobs')
    .option('--no-ledger', 'no audit record and no ledger updates (for BullMQ queues without an effects ledger)')
    .addHelpText(
      'after',
      `
Prints matched / replayed / skipped. Each replayed job leaves the failed set with its attempts
reset and its replay count raised (also in its ledger row). Jobs that fail again while the
replay runs are not picked up again; a second run never replays a job twice.

The brake: the first --brake-sample jobs are replayed alone and watched. When more than
--brake-threshold of them fail again, the replay stops and says what it saw, instead of
pushing the whole bug back through the system. When too few finish within --brake-wait (are
workers running?), the replay goes on and keeps watching them.

Above 100 jobs it asks on a terminal; without one it needs --yes. Ctrl-C stops between
batches and reports what was done (exit 1); run the same command again to continue.

Examples:
  $ effects replay --queue notify-crm --since 2h --dry-run --rate 50/s
  $ effects replay --error-group 3fa9c2d1 --rate 50/s --reason "CRM outage over"
  $ effects replay --ids ledger-17,ledger-18 --yes --json
  $ effects replay --prefix bull --queue emails --grep ETIMEDOUT --no-ledger --yes`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      const brake: ReplayOptions['brake'] =
        opts.brake === false ? false : { sample: opts.brakeSample, threshold: opts.brakeThreshold, waitMs: opts.brakeWait };
      const base: ReplayOptions = {
        ...jobFilterFrom(opts),
        limit: opts.limit,
        rate: opts.rate,
        actor: ctx.flags.actor,
        reason: opts.reason,
        useLedger: opts.ledger !== false,
        brake,
        onBrakeWait: (sample) => {
          if (!ctx.json) process.stderr.write(`brake: watching the first ${sample} replayed jobs before going on…\n`);
        },
      };
      try {
        const result = await runBulk(ctx, runtime, {
          command: 'replay',
          ids: base.ids,
          yes: Boolean(opts.yes),
          dryRun: Boolean(opts.dryRun),
          useLedger: base.useLedger!,
          rate: opts.rate,
          execute: (extra) => replay(runtime, { ...base, ...extra }),
        });
        const brakeWaitMs = brake === false ? 0 : (brake.waitMs ?? BRAKE_DEFAULTS.waitMs);
        if (ctx.json) ctx.printJson(result);
        else if (result.dryRun && result.plan) ctx.print(renderPlan(result.plan, 'replay', ctx, { brakeWaitMs }));
        else ctx.print(render(result, ctx));
        if (result.stopped) setExitCode(ExitCode.runtime);
      } finally {
        await runtime.close();
      }
    });
}

function render(result: Recorded<ReplayResult>, ctx: CommandContext): string {
  const { chalk } = ctx;
  if (result.matched === 0) return 'No failed jobs match: nothing replayed.';
  const lines = [
    `matched ${result.matched}, replayed ${result.replayed}, skipped ${result.skipped}` +
      (result.skipped ? chalk.dim(' (no longer failed when their turn came)') : ''),
  ];
  if (result.replayedBefore) {
    lines.push(chalk.yellow(`${result.replayedBefore} of them had been replayed before: \`effects poison list\` shows their replay counts`));
  }
  if (result.brake) lines.push(renderBrake(result.brake, ctx));
  if (result.stopped === 'brake') {
    lines.push(
      chalk.red.bold('stopped by the brake: ') +
        `${result.matched - result.replayed - result.skipped} more are still in the failed set. ` +
        'Fix the cause, then run the same command again (or --no-brake).',
    );
  } else if (result.stopped === 'interrupted') {
    lines.push(chalk.yellow('interrupted: the rest are still in the failed set; run the same command again to continue'));
  }
  if (result.operationId) lines.push(chalk.dim(`operation ${result.operationId}`));
  return lines.join('\n');
}

function renderBrake(b: BrakeReport, ctx: CommandContext): string {
  const { chalk } = ctx;
  const seen = `${b.failed} of the first ${b.size} replayed jobs failed again, ${b.succeeded} succeeded, ${b.pending} not finished`;
  const error = b.topError ? `\n  most common error: ${b.topError}` : '';
  switch (b.verdict) {
    case 'tripped':
      return chalk.red(`brake: ${seen} (limit: more than ${Math.round(b.threshold * 100)}%)`) + error;
    case 'passed':
      return chalk.green(`brake: ${seen}: passed`) + chalk.dim(` (waited ${formatDuration(b.waitedMs)})`);
    case 'undecided':
      return chalk.yellow(`brake: ${seen} after waiting ${formatDuration(b.waitedMs)}: no verdict, went on (are workers running?)`) + error;
    case 'all-in-sample': {
      // Nothing was waited for: most of them have not run yet, which is not a clean result.
      const open = b.pending
        ? `; ${b.pending} not finished yet, so whether they fail again is not known: \`effects poison list\` shows those that do`
        : '';
      return chalk.dim(`brake: every match fitted in the sample, so nothing was held back or waited for; ${b.failed} failed again, ${b.succeeded} succeeded${open}`) + error;
    }
  }
}
