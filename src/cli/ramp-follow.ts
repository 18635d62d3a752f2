import cliProgress from 'cli-progress';
import type { Runtime } from '../core/runtime.js';
import { getRampStatus, type RampStatus } from '../ops/ramp.js';
import { RampStore } from '../ramp/store.js';
import { startRampTicker } from '../ramp/ticker.js';
import type { CommandContext } from './context.js';
import { clock, progressLine } from './ramp-view.js';

/** How often a waiting ramp prints a line when nobody watches a terminal (logs, CI). */
const PLAIN_LINE_EVERY_MS = 5_000;

export type FollowOutcome = 'finished' | 'cancelled' | 'replaced' | 'detached';

/** Pause, resume and ramp work without the database; this says (on stderr) what was not recorded. */
export function warnAuditSkipped(reason: string | null, state?: string): void {
  if (!reason) return;
  process.stderr.write(
    `warning: no audit record written${state ? `, and the ${state} is not saved in the database` : ''}: ${reason}\n` +
      'warning: the change itself was made in Redis.' +
      // What the database still says is what comes back if Redis loses its data.
      (state ? ' If Redis loses its data, workers and rebuilds put back what the database says: run this again once it is reachable.' : '') +
      '\n',
  );
}

/**
 * Applies the ramp `planId` from this process until it ends, showing its progress: a live bar on
 * a terminal, a line every few seconds otherwise, nothing with --json. A plan that takes it over
 * (a join, a --replace) is followed in its place. Ctrl-C stops waiting, not the ramp (a scheduler
 * carries on with it).
 */
export async function followRamp(ctx: CommandContext, runtime: Runtime, planId: string): Promise<FollowOutcome> {
  const live = !ctx.json && Boolean(process.stderr.isTTY);
  const bar = live
    ? new cliProgress.SingleBar(
        {
          format: 'ramp [{bar}] {line}',
          stream: process.stderr,
          hideCursor: true,
          clearOnComplete: true,
          barsize: 20,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  bar?.start(1000, 0, { line: '' });
  let lastPlainLine = 0;
  let lastError: string | undefined;
  const show = (status: RampStatus) => {
    if (ctx.json) return;
    const line = progressLine(status);
    if (bar) bar.update(Math.round(status.progress * 1000), { line });
    else if (Date.now() - lastPlainLine >= PLAIN_LINE_EVERY_MS) {
      lastPlainLine = Date.now();
      ctx.print(`${clock(status.now)} ${line}`);
    }
  };

  let finish: (outcome: FollowOutcome) => void = () => {};
  const done = new Promise<FollowOutcome>((resolve) => (finish = resolve));
  const onSigint = () => finish('detached');
  process.once('SIGINT', onSigint);
  let following = planId;
  const ticker = startRampTicker(runtime, {
    onTick: (tick) => {
      // A plan that took this one over (a join, a --replace) carries its queues on: follow it.
      if (tick.plan?.replaces === following) following = tick.plan.id;
      if (tick.plan?.id === following) {
        void getRampStatus(runtime).then(show, () => undefined);
        return;
      }
      // A Redis error here is not fatal: the next tick asks again.
      void new RampStore(runtime.redis, runtime.settings.prefix).readLast().then(
        (last) => finish(last?.id === following && last.outcome ? last.outcome : 'replaced'),
        () => undefined,
      );
    },
    onError: (error) => {
      // Redis away: say so once per distinct error, keep trying.
      if (error.message !== lastError && !ctx.json) process.stderr.write(`warning: ramp tick failed (${error.message}); retrying\n`);
      lastError = error.message;
    },
  });
  try {
    return await done;
  } finally {
    process.off('SIGINT', onSigint);
    await ticker.stop();
    bar?.stop();
  }
}
