import os from 'node:os';
import type { Runtime } from '../core/runtime.js';
import { RAMP_TICK_MS, applyRamp, type RampTick } from './apply.js';
import { FailureMeter } from './failure-rate.js';
import { RampStore } from './store.js';

export interface RampTickerOptions {
  /** @defaultValue RAMP_TICK_MS (250 ms) */
  everyMs?: number;
  /** Announce this process as a ramp applier (the scheduler does; `--detach` checks for one). @defaultValue false */
  heartbeat?: boolean;
  onTick?(tick: RampTick): void;
  onError?(error: Error): void;
}

export interface RampTicker {
  /** Applies once now, outside the schedule (and waits for it). */
  tickNow(): Promise<RampTick>;
  /** Stops after the tick in flight. */
  stop(): Promise<void>;
}

/**
 * Applies the active ramp plan every `everyMs` until stopped. Ticks never overlap; an error (Redis
 * away) is reported and the next tick tries again, so a restarted Redis does not stop a ramp.
 */
export function startRampTicker(runtime: Runtime, options: RampTickerOptions = {}): RampTicker {
  const everyMs = options.everyMs ?? RAMP_TICK_MS;
  const store = new RampStore(runtime.redis, runtime.settings.prefix);
  const meter = new FailureMeter(runtime.redis, runtime.settings.prefix);
  const applier = `${os.hostname()}:${process.pid}`;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<RampTick> | undefined;

  const tick = (): Promise<RampTick> => {
    running ??= (async () => {
      try {
        if (options.heartbeat) await store.heartbeat(applier, everyMs);
        const result = await applyRamp(runtime, { meter });
        options.onTick?.(result);
        return result;
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  const loop = () => {
    if (stopped) return;
    tick()
      .catch((error: Error) => options.onError?.(error))
      .finally(() => {
        if (!stopped) timer = setTimeout(loop, everyMs);
      });
  };
  timer = setTimeout(loop, 0);

  return {
    tickNow: tick,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running?.catch(() => undefined);
    },
  };
}
