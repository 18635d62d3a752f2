import { Option, type Command } from 'commander';
import { UsageError } from '../../core/errors.js';
import { resumeQueues } from '../../ops/pause.js';
import { getRampStatus, startRamp } from '../../ops/ramp.js';
import { RAMP_CURVES } from '../../ramp/plan.js';
import { RampStore } from '../../ramp/store.js';
import { CommandContext } from '../context.js';
import { durationArg, listArg, rateArg, ratioArg } from '../parsers.js';
import { followRamp, warnAuditSkipped } from '../ramp-follow.js';
import { describePlan, renderRampStatus } from '../ramp-view.js';

/** Flags that mean something only under --ramp. */
const RAMP_ONLY = ['from', 'to', 'curve', 'stagger', 'holdOnErrors', 'detach'] as const;
const flagName = (key: string) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

export function registerResume(program: Command, setExitCode: (code: number) => void): void {
  program
    .command('resume')
    .description('resume queues at once, or under a ramp that raises their rate limit step by step')
    .option('--queue <name>', 'a queue to resume (repeatable, or comma-separated; a ramp starts them in this order)', listArg)
    .option('--all', 'every queue under the prefix (a ramp starts them in name order)')
    .option('--ramp <duration>', 'ramp each queue up over this long, e.g. 10m', durationArg)
    .option('--from <rate>', 'jobs per second per queue at the start of the ramp, e.g. 5 or 300/m (default: 1/s, or a queue\'s lower end rate)', rateArg)
    .option('--to <rate>', "jobs per second per queue at the end (default: each queue's configured rate limit; without a config file, the one its workers recorded)", rateArg)
    .addOption(new Option('--curve <curve>', 'shape of the ramp; exponential starts slowly (default: linear)').choices([...RAMP_CURVES]))
    .option('--stagger <duration>', 'start the queues one after another, this far apart', durationArg)
    .option('--hold-on-errors <rate>', 'stop rising while the failure rate of the ramped queues is above this, e.g. 10%', ratioArg)
    .option('--detach', 'store the plan and return; running schedulers apply it')
    .option('--replace', 'with --ramp: ramp anew queues already in the active ramp, its other queues going on from where they are; without: take the queues out of the ramp and resume them now')
    .option('--reason <text>', 'why, for the audit trail')
    .addHelpText(
      'after',
      `
Examples:
  $ effects resume --queue notify-crm                           # at once: BullMQ's resume
  $ effects resume --all --ramp 10m                             # from 1/s up to each configured rate limit (--to where none is)
  $ effects resume --all --ramp 10m --from 5 --to 200 --stagger 30s --curve exponential
  $ effects resume --all --ramp 20m --from 2 --to 100 --hold-on-errors 10% --detach

A ramp sets each queue's BullMQ global rate limit (and global concurrency, where configured) along
the curve; queues not yet started stay paused. The plan is stored in Redis and applied by this
command while it waits and by every running \`effects scheduler\`, so closing this terminal (or
Ctrl-C) does not stop it. When a queue's ramp ends its configured limits are in force (for a queue
without config: the limits it had before). See it with \`effects ramp status\`. Queues that are not
in the active ramp join it (its other queues go on in the new plan from where they are), and this
command then follows the new plan.

Exit codes: 0 the ramp finished (or --detach / Ctrl-C left it running), 1 it was cancelled or
replaced meanwhile (a plan that took it over is followed instead), 2 bad flags (--from above --to,
zero rates, unknown queue, queues already in the active ramp without --replace).`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      if (opts.ramp === undefined) {
        const stray = RAMP_ONLY.filter((key) => opts[key] !== undefined);
        if (stray.length) throw new UsageError(`${stray.map(flagName).join(', ')} only ${stray.length === 1 ? 'makes' : 'make'} sense with --ramp DURATION.`);
      }
      const runtime = ctx.runtime();
      try {
        if (opts.ramp === undefined) {
          const result = await resumeQueues(runtime, {
            queues: opts.queue,
            all: Boolean(opts.all),
            replace: Boolean(opts.replace),
            actor: ctx.flags.actor,
            reason: opts.reason,
          });
          warnAuditSkipped(result.auditSkipped, 'resumed state');
          if (ctx.json) return ctx.printJson({ ...result, ramp: null });
          const lines = [];
          if (result.resumed.length) lines.push(`resumed ${result.resumed.join(', ')} at once, with the limits in force`);
          if (result.alreadyRunning.length) lines.push(`not paused: ${result.alreadyRunning.join(', ')}`);
          if (result.removedFromRamp.length) lines.push(`took ${result.removedFromRamp.join(', ')} out of the active ramp`);
          return ctx.print(lines.join('\n'));
        }

        const started = await startRamp(runtime, {
          queues: opts.queue,
          all: Boolean(opts.all),
          durationMs: opts.ramp,
          from: opts.from,
          to: opts.to,
          curve: opts.curve,
          staggerMs: opts.stagger,
          holdOnErrors: opts.holdOnErrors,
          replace: Boolean(opts.replace),
          actor: ctx.flags.actor,
          reason: opts.reason,
        });
        warnAuditSkipped(started.auditSkipped, 'resumed state');
        for (const warning of started.warnings) process.stderr.write(`warning: ${warning}\n`);
        if (!ctx.json) {
          if (started.replaced) {
            const { carriedOver } = started;
            ctx.print(
              `${opts.replace ? 'took over' : 'joined'} ramp ${started.replaced.id}` +
                (carriedOver.length ? `; ${carriedOver.join(', ')} go on in the new plan from where they were` : ''),
            );
          }
          ctx.print(`ramp ${started.plan.id}: ${describePlan(started.plan)}, ${started.plan.queues.length} queue(s)`);
        }

        let outcome: 'finished' | 'cancelled' | 'replaced' | 'detached' = 'detached';
        if (opts.detach) {
          const applier = await new RampStore(runtime.redis, runtime.settings.prefix).applier();
          if (!applier) {
            process.stderr.write(
              'warning: no `effects scheduler` has applied ramps in the last few seconds; until one runs, the ramp does not advance.\n',
            );
          }
        } else {
          outcome = await followRamp(ctx, runtime, started.plan.id);
        }
        const status = await getRampStatus(runtime);
        if (ctx.json) {
          ctx.printJson({
            outcome,
            operationId: started.operationId,
            auditSkipped: started.auditSkipped,
            replaced: started.replaced?.id ?? null,
            carriedOver: started.carriedOver,
            warnings: started.warnings,
            ramp: status,
          });
        } else {
          ctx.print(
            {
              finished: 'ramp finished: every queue has its after-ramp limits in force',
              cancelled: 'the ramp was cancelled (`effects ramp cancel`) while this waited',
              replaced: 'the ramp was replaced by another one while this waited',
              detached: opts.detach
                ? 'detached: schedulers apply the ramp; follow it with `effects ramp status`'
                : 'stopped waiting; the ramp goes on wherever `effects scheduler` runs (`effects ramp status`)',
            }[outcome],
          );
          ctx.print(`\n${renderRampStatus(status, ctx.chalk)}`);
        }
        if (outcome === 'cancelled' || outcome === 'replaced') setExitCode(1);
      } finally {
        await runtime.close();
      }
    });
}
