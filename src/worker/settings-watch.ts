import type { Runtime } from '../core/runtime.js';
import { asError } from '../core/errors.js';
import { errorSummary } from '../core/logger.js';
import { queuesWithoutSettings, restoreQueueSettings } from '../ops/restore-queues.js';

/** How often a running worker looks for queues whose settings Redis lost. */
export const SETTINGS_CHECK_INTERVAL_MS = 5000;

export interface SettingsWatch {
  /** Looks now (a test, or a caller that knows Redis is back). */
  check(): Promise<void>;
  /** Stops looking; resolves once a look in progress has ended, so the connections can be closed after. */
  stop(): Promise<void>;
}

/**
 * Keeps a running worker's queues paused and limited as the ledger database and the config say,
 * when Redis loses what it held: a restart without persistence, a failover to an empty replica, a
 * flush. Without this an operator's pause and the configured rate limits were gone until a worker
 * restarted or the scheduler's next rebuild (hourly by default), while jobs emitted meanwhile ran
 * at full speed against the service the pause was for. It looks the moment the Redis connection is
 * ready again and every `intervalMs`: one HEXISTS per queue, and the database only when a queue's
 * settings are missing (`restoreQueueSettings`, which never resumes a queue nor overrides one that
 * still has its settings).
 */
export function watchQueueSettings(
  runtime: Runtime,
  queues: string[],
  { intervalMs = SETTINGS_CHECK_INTERVAL_MS }: { intervalMs?: number } = {},
): SettingsWatch {
  const log = runtime.logger;
  let running: Promise<void> | undefined;
  let stopped = false;
  /** Reported once per spell of failures, not every interval. */
  let failing = false;

  const look = async () => {
    try {
      const missing = await queuesWithoutSettings(runtime, queues);
      if (missing.length > 0 && !stopped) {
        const restored = await restoreQueueSettings(runtime, { queues: missing });
        // Only what was put back is news; a queue with nothing to restore just gets its marker again.
        if (restored.length > 0) {
          log.warn(
            { restored },
            'queue settings were missing from Redis (did it restart without persistence, or was it flushed?): put back the paused state and limits',
          );
        }
      }
      failing = false;
    } catch (error) {
      // Redis down is reported by the workers' own error events; the next look tries again.
      if (!failing && runtime.redis.status === 'ready') {
        log.warn({ err: errorSummary(asError(error)) }, 'could not check or put back the queue settings; trying again');
      }
      failing = true;
    }
  };
  const check = () => {
    if (stopped) return Promise.resolve();
    running ??= look().finally(() => {
      running = undefined;
    });
    return running;
  };

  const onReady = () => void check();
  runtime.redis.on('ready', onReady);
  const timer = setInterval(onReady, intervalMs);
  timer.unref();
  return {
    check,
    async stop() {
      stopped = true;
      clearInterval(timer);
      runtime.redis.off('ready', onReady);
      await running;
    },
  };
}
