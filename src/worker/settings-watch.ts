import type { Runtime } from '../core/runtime.js';
import { asError } from '../core/errors.js';
import { errorSummary } from '../core/logger.js';
import { sleep } from '../core/sleep.js';
import { queuesWithoutSettings, restoreQueueSettings } from '../ops/restore-queues.js';
import { isCluster } from '../queue/redis.js';

/** How often a running worker looks for queues whose settings Redis lost. */
export const SETTINGS_CHECK_INTERVAL_MS = 5000;
/** How soon a worker held after a connection drop looks again when a look failed. */
const RETRY_MS = 1000;
/** How long stopping waits for a look in progress (one can wait for a Redis that is away, for good). */
const STOP_WAIT_MS = 1000;

export interface SettingsWatch {
  /** Looks now (a test, or a caller that knows Redis is back). */
  check(): Promise<void>;
  /**
   * Resolves at once, unless the Redis connection dropped since the last look: then after a look
   * begun since has got through (it waits for Redis to be back; a failed one is tried again every
   * second, so a worker takes no job while the database cannot say which queues are paused). A worker awaits it before it takes a job, so a
   * queue an operator paused is paused again before jobs pushed the moment Redis came back can run.
   */
  checked(): Promise<void>;
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
  const stopping = new AbortController();
  /** Connection drops so far, and how many of them a finished look had seen begin. */
  let drops = 0;
  let lookedAfterDrops = 0;
  /** Reported once per spell of failures, not every interval. */
  let failing = false;

  const look = async () => {
    const seen = drops;
    try {
      if (stopped) return;
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
      // Only a look that got through counts: after a failed one (Redis or the database away) a held
      // worker stays held, since a queue that should be paused may not be, and it could do nothing
      // with a job without the database anyway.
      lookedAfterDrops = seen;
    } catch (error) {
      // Stopped: the connections are closing under it (and touching them would open them again).
      if (stopped) return;
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

  const checked = async () => {
    // A look that began before the latest drop does not count: wait for it, then look again.
    while (!stopped && lookedAfterDrops < drops) {
      await check();
      if (!stopped && lookedAfterDrops < drops) await sleep(RETRY_MS, stopping.signal);
    }
  };

  const onReady = () => void check();
  const onClose = () => {
    drops += 1;
  };
  // A cluster client loses and regains a node without a close or ready of its own.
  const cluster = isCluster(runtime.redis);
  const [dropEvent, backEvent] = cluster ? ['-node', '+node'] : ['close', 'ready'];
  runtime.redis.on(backEvent, onReady);
  runtime.redis.on(dropEvent, onClose);
  if (cluster) runtime.redis.on('refresh', onReady);
  const timer = setInterval(onReady, intervalMs);
  timer.unref();
  return {
    check,
    checked,
    async stop() {
      stopped = true;
      stopping.abort();
      clearInterval(timer);
      runtime.redis.off(backEvent, onReady);
      runtime.redis.off(dropEvent, onClose);
      if (cluster) runtime.redis.off('refresh', onReady);
      // A look waiting for a Redis that is away ends when the connections close, after this.
      if (running) await Promise.race([running, sleep(STOP_WAIT_MS)]);
    },
  };
}
