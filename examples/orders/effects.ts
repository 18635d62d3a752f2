import { defineEffect, type EffectContext, type EffectDefinition, type Task } from '../../src/index.js';

export interface OrderEffectsOptions {
  /** Schema of the app's tables (orders, effect_runs). */
  appSchema: string;
  /** Multiplies simulated latencies; 0 makes every call instant. @defaultValue 1 */
  latencyScale?: number;
  /** Chance that a simulated third-party call fails transiently. @defaultValue 0.02 */
  failureRate?: number;
  /** Orders whose id is a multiple of this hit the loyalty bug. @defaultValue 7 */
  buggyEvery?: number;
  attempts?: number;
  /** Retry delay base in ms. @defaultValue 200 */
  backoffMs?: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The effects of `order_placed`: ten simulated third-party calls with latency and a small transient
 * failure rate, and one (loyalty points) with a bug that always fails for some orders.
 */
export function orderEffects(options: OrderEffectsOptions): EffectDefinition[] {
  const scale = options.latencyScale ?? 1;
  const failureRate = options.failureRate ?? 0.02;
  const buggyEvery = options.buggyEvery ?? 7;
  const attempts = options.attempts ?? 6;
  const backoff = { type: 'exponential' as const, delay: options.backoffMs ?? 200, jitter: 0.5 };

  /** Records the run in the sink; a second run of the same effect for the same order counts up. */
  const record = (effect: string, task: Task, ctx: EffectContext) =>
    ctx.db.raw(
      `insert into ??.effect_runs (effect, order_id) values (?, ?)
       on conflict (effect, order_id) do update set runs = effect_runs.runs + 1`,
      [options.appSchema, effect, task.id],
    );

  const thirdParty = (name: string, minMs: number, maxMs: number, extra: Partial<EffectDefinition> = {}) =>
    defineEffect({
      name,
      on: 'order_placed',
      attempts,
      backoff,
      concurrency: 20,
      async run(task, ctx) {
        await sleep((minMs + Math.random() * (maxMs - minMs)) * scale);
        if (Math.random() < failureRate) throw new Error(`${name}: upstream returned 503 (transient)`);
        await record(name, task, ctx);
      },
      ...extra,
    });

  return [
    thirdParty('send-confirmation-email', 30, 150),
    thirdParty('notify-crm', 30, 150),
    thirdParty('reserve-inventory', 30, 80),
    thirdParty('charge-analytics', 30, 60),
    thirdParty('notify-warehouse', 30, 120),
    thirdParty('update-search-index', 30, 90),
    thirdParty('send-sms', 30, 150),
    thirdParty('fraud-screening', 50, 150),
    thirdParty('create-invoice', 30, 100, {
      // The invoice is the only effect with its own "still needed?" check: an invoice that exists is done.
      async isNeeded(task, ctx) {
        const existing = await ctx.db
          .withSchema(options.appSchema)
          .table('effect_runs')
          .where({ effect: 'create-invoice', order_id: task.id })
          .first();
        return !existing;
      },
    }),
    defineEffect({
      name: 'sync-loyalty-points',
      on: 'order_placed',
      attempts,
      backoff,
      concurrency: 20,
      async run(task, ctx) {
        await sleep(30 * scale);
        if (Number(task.id) % buggyEvery === 0) {
          // The bug: some customers have no loyalty tier, and the code assumes one.
          throw new TypeError(`Cannot read properties of undefined (reading 'tier') for order ${task.id}`);
        }
        await record('sync-loyalty-points', task, ctx);
      },
    }),
  ];
}
