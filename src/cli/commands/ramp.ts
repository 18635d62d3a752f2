import type { Command } from 'commander';
import { cancelRamp, getRampStatus } from '../../ops/ramp.js';
import { CommandContext } from '../context.js';
import { warnAuditSkipped } from '../ramp-follow.js';
import { formatLimits, renderRampStatus } from '../ramp-view.js';
import { table } from '../render.js';

export function registerRamp(program: Command): void {
  const ramp = program
    .command('ramp')
    .description('the active ramp plan (started by `effects resume --ramp`): see it or stop it')
    .addHelpText(
      'after',
      `
Examples:
  $ effects ramp status
  $ effects ramp status --json | jq '.queues[] | {name, phase, rate}'
  $ effects ramp cancel
  $ effects ramp cancel --restore`,
    );

  ramp
    .command('status')
    .description('the plan, the limit in force per queue, progress, ETA, why it holds, and the curve so far')
    .addHelpText(
      'after',
      `
Examples:
  $ effects ramp status
  $ effects ramp status --json

With no active ramp it shows the last one that ended in the past day ("active": false).`,
    )
    .action(async (_opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      try {
        const status = await getRampStatus(runtime);
        ctx.json ? ctx.printJson(status) : ctx.print(renderRampStatus(status, ctx.chalk));
      } finally {
        await runtime.close();
      }
    });

  ramp
    .command('cancel')
    .description('stop the active ramp, keeping the limits in force now (or --restore the configured ones)')
    .option('--restore', 'put back the configured limits (for queues without config: those before the ramp)')
    .option('--reason <text>', 'why, for the audit trail')
    .addHelpText(
      'after',
      `
Examples:
  $ effects ramp cancel
  $ effects ramp cancel --restore --reason "provider recovered, go to full speed"

Queues whose turn had not come stay paused either way: resume them with \`effects resume\`.
With no active ramp it says so and exits 0; \`--restore\` then puts back the configured limits of
the queues of the last ramp, if it was cancelled without it (they stay at the rate the ramp had).`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      try {
        const result = await cancelRamp(runtime, { restore: Boolean(opts.restore), actor: ctx.flags.actor, reason: opts.reason });
        if (result.cancelled || result.restored) warnAuditSkipped(result.auditSkipped);
        if (ctx.json) return ctx.printJson(result);
        if (!result.cancelled && !result.restored) return ctx.print('No ramp is active; nothing to cancel.');
        const notStarted = result.queues.filter((q) => !q.started).map((q) => q.name);
        if (!result.cancelled && result.queues.length === 0) {
          return ctx.print(`No ramp is active; the last one (${result.plan!.id}) had no queue left to restore.`);
        }
        const what = !result.cancelled
          ? `no ramp is active; the queues of ramp ${result.plan!.id}, cancelled before, got their configured limits (or those before the ramp):`
          : result.restored
            ? `cancelled ramp ${result.plan!.id}; configured limits (or those before the ramp) put back:`
            : `cancelled ramp ${result.plan!.id}; the limits in force now are kept (\`effects ramp cancel --restore\` puts the configured ones back):`;
        ctx.print(
          [
            what,
            table(
              ['queue', 'limits', 'paused'],
              result.queues.map((q) => [q.name, formatLimits(q.limits), q.paused ? ctx.chalk.yellow('paused') : '-']),
              ctx.chalk,
            ),
            notStarted.length ? `not started, still paused: ${notStarted.join(', ')} (resume them with \`effects resume\`)` : '',
          ]
            .filter(Boolean)
            .join('\n'),
        );
      } finally {
        await runtime.close();
      }
    });
}
