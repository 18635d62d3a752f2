import type { Runtime } from '../core/runtime.js';
import type { TaskHooks } from '../worker/task-function.js';
import { PoisonAlerter, poisonAlertFor, type PoisonAlerterOptions } from './webhook.js';

export interface PoisonAlerts {
  /** The worker's hooks, with the alert added to onPoison (the caller's own hook still runs). */
  hooks: TaskHooks;
  alerter?: PoisonAlerter;
  /** Lets queued alerts go out, at most `timeoutMs`. */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

/** Wires poison-pill alerts into a worker when `alerts.webhook` is configured; otherwise a no-op. */
export function startPoisonAlerts(runtime: Runtime, hooks: TaskHooks = {}, options?: PoisonAlerterOptions): PoisonAlerts {
  const url = runtime.settings.alertWebhook;
  if (!url) return { hooks, close: async () => {} };
  const { prefix } = runtime.settings;
  const alerter = new PoisonAlerter(runtime.redis, url, runtime.logger.child({ component: 'alerts' }), options);
  return {
    alerter,
    hooks: {
      ...hooks,
      onPoison(job, effect, error) {
        // The error's passwords were cut where it was caught (the task function).
        alerter.notify(poisonAlertFor(job, effect, error, prefix));
        hooks.onPoison?.(job, effect, error);
      },
    },
    close: (closeOptions) => alerter.close(closeOptions),
  };
}
