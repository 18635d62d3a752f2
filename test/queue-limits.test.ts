import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineEffect } from '../src/index.js';
import { redisKeys } from '../src/queue/keys.js';
import { readLimits } from '../src/queue/limits.js';
import { cancelRamp, startRamp } from '../src/ops/ramp.js';
import { startWorker } from '../src/worker/worker.js';
import { deleteKeys, setupServices, type TestServices } from './helpers.js';

/** Configured fleet-wide limits live only in Redis: who puts them there, and when. */
describe('configured queue limits', () => {
  let services: TestServices;

  const effect = (name: string, limits: { max: number; globalConcurrency: number }) =>
    defineEffect({
      name,
      on: 'order_placed',
      globalConcurrency: limits.globalConcurrency,
      rateLimit: { max: limits.max, per: '1s' },
      run() {},
    });

  /** Starts a worker with these effects, as a deploy does, and stops it again. */
  const deploy = async (...effects: ReturnType<typeof effect>[]) => {
    const worker = await startWorker(services.runtime({ effects }));
    await worker.close({ timeoutMs: 5000 });
  };

  const limits = (queue = 'notify-crm') => readLimits(services.redis, services.prefix, queue);

  beforeAll(async () => {
    services = await setupServices('queue-limits');
    await services.migrate();
  });

  afterAll(async () => {
    await services?.cleanup();
  });

  it('are put in force by the first worker, with no scheduler or rebuild run yet', async () => {
    await deploy(effect('notify-crm', { max: 200, globalConcurrency: 3 }));
    expect(await limits()).toEqual({ rateLimit: { max: 200, durationMs: 1000 }, concurrency: 3 });
  });

  it('are not overridden in place by a worker with another config, and come back after a wipe', async () => {
    // A rolling deploy runs old and new configs side by side: neither flips the limits of the other.
    await deploy(effect('notify-crm', { max: 100, globalConcurrency: 5 }));
    expect(await limits()).toEqual({ rateLimit: { max: 200, durationMs: 1000 }, concurrency: 3 });
    await deleteKeys(services.redis, `${services.prefix}:*`);
    await deploy(effect('notify-crm', { max: 100, globalConcurrency: 5 }));
    expect(await limits()).toEqual({ rateLimit: { max: 100, durationMs: 1000 }, concurrency: 5 });
  });

  it('are put in force on a new queue while a ramp runs on others; a ramped queue keeps the ramp\'s', async () => {
    const crm = effect('notify-crm', { max: 100, globalConcurrency: 5 });
    const runtime = services.runtime({ effects: [crm] });
    await startRamp(runtime, { queues: ['notify-crm'], durationMs: 60_000, from: 1, to: 50, actor: 'test' });
    const during = await limits();
    await deploy(crm, effect('send-sms', { max: 30, globalConcurrency: 2 }));
    expect(await limits('send-sms')).toEqual({ rateLimit: { max: 30, durationMs: 1000 }, concurrency: 2 });
    expect(await limits()).toEqual(during);
    await cancelRamp(runtime, { actor: 'test' });
  });

  it('do not stop a worker from starting when the stored ramp plan is of a newer version', async () => {
    await deleteKeys(services.redis, `${services.prefix}:*`);
    await services.redis.set(redisKeys(services.prefix).ramp, JSON.stringify({ version: 2, queues: [] }));
    await deploy(effect('notify-crm', { max: 100, globalConcurrency: 5 }));
    // Left to the plan this version cannot read.
    expect(await limits()).toEqual({ rateLimit: null, concurrency: null });
    await services.redis.del(redisKeys(services.prefix).ramp);
  });
});
