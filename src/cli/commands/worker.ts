import type { Command } from 'commander';
import { DEFAULTS } from '../../config/settings.js';
import { startWorker } from '../../worker/worker.js';
import { CommandContext } from '../context.js';
import { durationArg, listArg, portArg, positiveIntArg } from '../parsers.js';
import { untilSignalled } from '../signals.js';

export function registerWorker(program: Command, setExitCode: (code: number) => void): void {
  program
    .command('worker')
    .description("run the effects' queues until SIGTERM/SIGINT")
    .option('--queues <names>', 'only these effect queues, comma-separated', listArg)
    .option('--concurrency <n>', "jobs at once per queue in this process (default: each effect's)", positiveIntArg)
    .option('--metrics-port <port>', 'serve Prometheus /metrics and /healthz on this port', portArg)
    .option('--shutdown-timeout <duration>', 'how long shutdown waits for jobs in flight (default: 30s)', durationArg)
    .option(
      '--startup-jitter <duration>',
      'wait a random 0..duration before taking jobs, so a fleet restarted together does not start in step (default: worker.startupJitter, else 2s; 0s for none)',
      durationArg,
    )
    .addHelpText(
      'after',
      `
Examples:
  $ effects worker
  $ effects worker --queues send-confirmation-email,notify-crm --concurrency 50
  $ effects worker --metrics-port 9464      # then curl localhost:9464/metrics
  $ effects worker --startup-jitter 10s     # a large fleet restarting at once

The first SIGTERM or SIGINT stops taking jobs and waits for those in flight (up to
--shutdown-timeout); a second one exits at once. Jobs left unfinished are picked up by
another worker after the stalled check.`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      ctx.requireEffects();
      const log = ctx.processLogger();
      const handle = await startWorker(ctx.runtime(log), {
        queues: opts.queues,
        concurrency: opts.concurrency,
        metricsPort: opts.metricsPort,
        startupJitterMs: opts.startupJitter ?? ctx.settings.worker.startupJitterMs ?? DEFAULTS.cliStartupJitterMs,
      });
      const code = await untilSignalled(async () => {
        const { drained } = await handle.close({ timeoutMs: opts.shutdownTimeout });
        log.info({ drained }, 'worker stopped');
      }, log);
      setExitCode(code);
    });
}
