import type { Command } from 'commander';
import { ExitCode } from '../../core/errors.js';
import { discard, type DiscardOptions, type DiscardResult } from '../../ops/discard.js';
import { renderPlan, runBulk, type Recorded } from '../bulk-command.js';
import { CommandContext } from '../context.js';
import { addJobFilterOptions, jobFilterFrom } from '../job-filter-options.js';
import { positiveIntArg } from '../parsers.js';

export function registerDiscard(program: Command, setExitCode: (code: number) => void = () => {}): void {
  addJobFilterOptions(
    program
      .command('discard')
      .description('remove matching failed jobs and mark their ledger rows discarded, for good'),
  )
    .option('--limit <n>', 'discard at most this many jobs', positiveIntArg)
    .option('--dry-run', 'print what would be discarded by queue, job name and error group')
    .option('--yes', 'do not ask for confirmation (needed above 100 jobs without a terminal)')
    .option('--reason <text>', 'why, for the audit trail')
    .option('--no-ledger', 'no audit record and no ledger updates (for BullMQ queues without an effects ledger)')
    .addHelpText(
      'after',
      `
Prints matched / discarded / skipped. The jobs are removed from Redis and their ledger rows
marked discarded, so neither a worker nor a rebuild runs the effect again. Only failed jobs
are discarded; a job waiting for another retry is not.

Above 100 jobs it asks on a terminal; without one it needs --yes. Ctrl-C stops between
batches and reports what was done (exit 1).

Examples:
  $ effects discard --error-group 3fa9c2d1 --dry-run
  $ effects discard --queue send-sms --grep 'invalid phone number' --reason "numbers never valid"
  $ effects discard --ids ledger-17 --yes --json`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      const base: DiscardOptions = {
        ...jobFilterFrom(opts),
        limit: opts.limit,
        actor: ctx.flags.actor,
        reason: opts.reason,
        useLedger: opts.ledger !== false,
      };
      try {
        const result = await runBulk(ctx, runtime, {
          command: 'discard',
          ids: base.ids,
          yes: Boolean(opts.yes),
          dryRun: Boolean(opts.dryRun),
          useLedger: base.useLedger!,
          execute: (extra) => discard(runtime, { ...base, ...extra }),
        });
        if (ctx.json) ctx.printJson(result);
        else if (result.dryRun && result.plan) ctx.print(renderPlan(result.plan, 'discard', ctx));
        else ctx.print(render(result, ctx));
        if (result.stopped) setExitCode(ExitCode.runtime);
      } finally {
        await runtime.close();
      }
    });
}

function render(result: Recorded<DiscardResult>, ctx: CommandContext): string {
  const { chalk } = ctx;
  if (result.matched === 0) return 'No failed jobs match: nothing discarded.';
  const lines = [
    `matched ${result.matched}, discarded ${result.discarded}, skipped ${result.skipped}` +
      (result.skipped ? chalk.dim(' (no longer failed when their turn came)') : ''),
    `ledger rows marked discarded: ${result.ledgerRowsDiscarded}`,
  ];
  if (result.stopped) lines.push(chalk.yellow('interrupted: the rest are still in the failed set; run the same command again to continue'));
  if (result.operationId) lines.push(chalk.dim(`operation ${result.operationId}`));
  return lines.join('\n');
}
