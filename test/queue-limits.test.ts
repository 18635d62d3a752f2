import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineEffect } from '../src/index.js';
import { readLimits } from '../src/queue/limits.js';
import { startRamp, cancelRamp } from '../src/ops/ramp.js';
import { startWorker } from '../src/worker/worker.js';
import { setupServices, type TestServices } from './helpers.js';

/** Configured fleet-wide limits live only in Redis: who puts them there, and when. */
describe('configured queue limits', () => {
  let services: TestServices;

  const crm = (limits: { max: number; globalConcurrency: number }) => [
    defineEffect({
      name: 'notify-crm',
      on: 'order_placed',
      globalConcurrency: limits.globalConcurrency,
      rateLimit: { max: limits.max, per: '1s' },
      run() {},
    }),
  ];

  /** Starts a worker with these effects, as a deploy does, and stops it again. */
  const deploy = async (effects: ReturnType<typeof crm>) => {
    const worker = await startWorker(services.runtime({ effects }));
    await worker.close({ timeoutMs: 5000 });
  };

  const limits = () => readLimits(services.redis, services.prefix, 'notify-crm');

  beforeAll(async () => {
    services = await setupServices('queue-limits');
    await services.migrate();
  });

  afterAll(async () => {
    await services?.cleanup();
  });

  it('are put in force by the first worker, with no scheduler or rebuild run yet', async () => {
    await deploy(crm({ max: 200, globalConcurrency: 3 }));
    expect(await limits()).toEqual({ rateLimit: { max: 200, durationMs: 1000 }, concurrency: 3 });
  });

  it('are changed by a worker of a deploy that changes them', async () => {
    await deploy(crm({ max: 100, globalConcurrency: 5 }));
    expect(await limits()).toEqual({ rateLimit: { max: 100, durationMs: 1000 }, concurrency: 5 });
  });

  it('are left alone by workers of an unchanged config, and while a ramp owns them', async () => {
    const runtime = services.runtime({ effects: crm({ max: 100, globalConcurrency: 5 }) });
    await runtime.queues.get('notify-crm').setGlobalRateLimit(7, 1000);
    await deploy(crm({ max: 100, globalConcurrency: 5 }));
    // Set in Redis by hand, not by the config: a restart of the same deploy does not undo it.
    expect((await limits()).rateLimit).toEqual({ max: 7, durationMs: 1000 });

    await startRamp(runtime, { queues: ['notify-crm'], durationMs: 60_000, from: 1, to: 50, actor: 'test' });
    const during = await limits();
    await deploy(crm({ max: 300, globalConcurrency: 5 }));
    expect(await limits()).toEqual(during);
    await cancelRamp(runtime, { actor: 'test' });
  });
});
