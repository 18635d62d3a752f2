import type { Command } from 'commander';
import { pauseQueues } from '../../ops/pause.js';
import { CommandContext } from '../context.js';
import { listArg } from '../parsers.js';
import { warnAuditSkipped } from '../ramp-follow.js';

export function registerPause(program: Command): void {
  program
    .command('pause')
    .description('pause queues: workers finish the jobs they hold and take no new ones')
    .option('--queue <name>', 'a queue to pause (repeatable, or comma-separated)', listArg)
    .option('--all', 'every queue under the prefix')
    .option('--reason <text>', 'why, for the audit trail')
    .addHelpText(
      'after',
      `
Examples:
  $ effects pause --all --reason "payments provider down"
  $ effects pause --queue notify-crm --queue send-confirmation-email
  $ effects pause --queue notify-crm --json

Works on any BullMQ queue under --prefix, with no config file. A paused queue leaves an active
ramp, so no scheduler resumes it at its turn. The pause is recorded in the audit trail and in the
database (so a Redis wipe does not undo it); with the database unreachable it still pauses, and
says on stderr that nothing was recorded.`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      try {
        const result = await pauseQueues(runtime, {
          queues: opts.queue,
          all: Boolean(opts.all),
          actor: ctx.flags.actor,
          reason: opts.reason,
        });
        warnAuditSkipped(result.auditSkipped, 'paused state');
        if (ctx.json) return ctx.printJson(result);
        const lines = [];
        if (result.paused.length) lines.push(`paused ${result.paused.join(', ')}`);
        if (result.alreadyPaused.length) lines.push(`already paused: ${result.alreadyPaused.join(', ')}`);
        if (result.removedFromRamp.length) {
          lines.push(
            `took ${result.removedFromRamp.join(', ')} out of the active ramp, with the limits they would have had after it${result.rampCancelled ? '; the ramp had no other queue and is cancelled' : ''}`,
          );
        }
        const resume = opts.all ? '--all' : `--queue ${[...result.paused, ...result.alreadyPaused].join(',')}`;
        lines.push(ctx.chalk.dim(`Workers finish the jobs they hold and take no new ones. Resume with \`effects resume ${resume}\` (or with --ramp D, which joins a ramp in progress).`));
        ctx.print(lines.join('\n'));
      } finally {
        await runtime.close();
      }
    });
}
