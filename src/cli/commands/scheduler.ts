import type { Command } from 'commander';
import { startScheduler } from '../../scheduler/scheduler.js';
import { CommandContext } from '../context.js';
import { durationArg } from '../parsers.js';
import { untilSignalled } from '../signals.js';

export function registerScheduler(program: Command, setExitCode: (code: number) => void): void {
  program
    .command('scheduler')
    .description('run the periodic rebuild of pending ledger rows, and apply ramp plans, until SIGTERM/SIGINT')
    .option('--every <duration>', 'how often the rebuild runs, at least 1s (default: 1h)', durationArg)
    .option('--lookback <duration>', 'how far back each rebuild looks for pending rows, longer than 0 (default: 24h)', durationArg)
    .addHelpText(
      'after',
      `
Examples:
  $ effects scheduler
  $ effects scheduler --every 10m --lookback 3h

Run one or more schedulers; the rebuild runs once per period whatever their number. Each
scheduler also applies the active ramp plan (\`effects resume --ramp\`) every 250 ms: they all set
the same limits, so a ramp goes on after the terminal that started it closes.`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      ctx.requireEffects();
      const log = ctx.processLogger();
      const handle = await startScheduler(ctx.runtime(log), { everyMs: opts.every, lookbackMs: opts.lookback });
      setExitCode(await untilSignalled(() => handle.close(), log));
    });
}
