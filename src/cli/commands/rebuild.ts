import type { Command } from 'commander';
import { rebuild } from '../../ops/rebuild.js';
import { CommandContext } from '../context.js';
import { listArg, rateArg, timeArg } from '../parsers.js';
import { UsageError } from '../../core/errors.js';

export function registerRebuild(program: Command): void {
  program
    .command('rebuild')
    .description('enqueue every pending ledger row in a window that has no live job')
    .requiredOption('--since <time>', 'rows created since: a duration before now (3h) or an ISO timestamp', timeArg)
    .option('--until <time>', 'rows created before (default: now)', timeArg)
    .option('--effect <names>', 'only these effects, comma-separated', listArg)
    .option('--rate <n/s>', 'at most this many jobs per second', rateArg)
    .option('--dry-run', 'count what would be enqueued, change nothing')
    .addHelpText(
      'after',
      `
Examples:
  $ effects rebuild --since 3h
  $ effects rebuild --since 2026-11-25T22:00:00Z --until 2026-11-26T02:00:00Z --effect notify-crm
  $ effects rebuild --since 1d --rate 200/s --dry-run --json`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      if (opts.since > Date.now()) throw new UsageError('--since is in the future; expected a time before now.');
      const unknown = (opts.effect as string[] | undefined)?.filter((e) => ctx.config && !ctx.settings.effects.some((d) => d.name === e));
      if (unknown?.length) {
        throw new UsageError(
          `Unknown effect(s): ${unknown.join(', ')}. Known: ${ctx.settings.effects.map((e) => e.name).join(', ')}.`,
        );
      }
      const runtime = ctx.runtime();
      try {
        await runtime.assertReachable({ redis: true, db: true });
        const result = await rebuild(runtime, {
          since: opts.since,
          until: opts.until,
          effects: opts.effect,
          rate: opts.rate,
          dryRun: Boolean(opts.dryRun),
        });
        if (ctx.json) ctx.printJson(result);
        else {
          const verb = result.dryRun ? 'would enqueue' : 'enqueued';
          ctx.print(`scanned ${result.scanned}, ${verb} ${result.enqueued}, already queued ${result.alreadyQueued}`);
        }
      } finally {
        await runtime.close();
      }
    });
}
