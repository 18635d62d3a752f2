import { errorSummary, type Logger } from '../core/logger.js';

/**
 * The signal table of long-running commands: the first SIGTERM/SIGINT drains, a second forces.
 * Resolves with the exit code once `drain` is done.
 */
export function untilSignalled(drain: (signal: string) => Promise<void>, log: Logger): Promise<number> {
  return new Promise((resolve) => {
    let draining = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (draining) {
        log.warn({ signal }, 'second signal: exiting now without waiting for in-flight jobs');
        resolve(1);
        return;
      }
      draining = true;
      log.info({ signal }, 'shutting down: no new jobs, waiting for jobs in flight (signal again to force)');
      drain(signal).then(
        () => resolve(0),
        (error: Error) => {
          log.error({ err: errorSummary(error) }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
