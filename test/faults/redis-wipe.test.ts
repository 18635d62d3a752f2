import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, setupServices, type TestServices } from '../helpers.js';
import { startPrivateRedis, type PrivateRedis } from '../servers.js';
import {
  createAppTables,
  createEmitter,
  effectOptions,
  FAST_WORKER,
  pendingWithoutJob,
  placeOrders,
  readOracle,
  Recovery,
  reportRow,
  rowFrom,
  sleep,
  startLoad,
  Supervisor,
  waitForSettled,
  writeConfig,
  type FaultConfig,
  type ProcessConfig,
} from './harness.js';
import type { Effects } from '../../src/core/effects.js';
import type { OrderEffectsOptions } from '../../examples/orders/effects.js';

/**
 * Redis holds only the queues; the ledger in PostgreSQL knows what is owed. A wiped Redis (FLUSHDB)
 * and a Redis restarted with no persistence both lose every job, and the rebuild, run by hand or by
 * the scheduler, must bring back exactly one job per pending row. Runs on a private Redis.
 */
describe('scenario 2: Redis wiped mid-run, and restarted empty', () => {
  let redis: PrivateRedis;
  let services: TestServices;
  let config: FaultConfig;
  let processConfig: ProcessConfig;
  let options: OrderEffectsOptions;
  let appSchema: string;
  let effects: Effects;
  const supervisors: Supervisor[] = [];

  beforeAll(async () => {
    redis = await startPrivateRedis();
    services = await setupServices('faults-redis', { redisUrl: redis.url });
    services.redis.on('error', () => {});
    await services.migrate();
    appSchema = `${services.schema}_app`;
    await createAppTables(services.db, appSchema);
    processConfig = {
      redis: redis.url,
      database: services.databaseUrl,
      prefix: services.prefix,
      schema: services.schema,
      worker: FAST_WORKER,
    };
    options = effectOptions(appSchema);
    config = writeConfig(processConfig, options);
    // Two jobs at a time per queue and process: a burst of orders leaves a backlog for the fault to hit.
    const workers = new Supervisor({ config: config.path, processes: 2, args: ['--concurrency', '2'] });
    supervisors.push(workers);
    await workers.start();
    effects = createEmitter(processConfig, options);
  });

  afterAll(async () => {
    for (const supervisor of supervisors) await supervisor.stop();
    await effects?.close();
    await services?.db.raw('drop schema if exists ?? cascade', [appSchema]);
    config?.remove();
    await services?.cleanup();
    await redis?.stop();
  });

  const rebuildCli = async (...extra: string[]) => {
    const result = await runCli(['rebuild', '--since', '10m', '--yes', '--json', '--config', config.path, ...extra]);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as { scanned: number; enqueued: number; alreadyQueued: number };
  };

  it('FLUSHDB under load: `effects rebuild` queues every pending row once, and everything completes', async () => {
    const load = startLoad({ db: services.db, effects, appSchema, perSecond: 10 });
    await sleep(1000);
    const burst = await placeOrders(services.db, effects, appSchema, 80);
    const recovery = await Recovery.capture(services.db, services.schema);
    await services.redis.flushdb();
    await sleep(2000);
    const stats = await load.stop();
    await sleep(500);

    const missing = await pendingWithoutJob(services.db, services.schema, services.redis, services.prefix);
    const rebuilt = await rebuildCli();
    // Every pending row now has its job, and a second rebuild finds nothing to add: one job per row.
    expect(await pendingWithoutJob(services.db, services.schema, services.redis, services.prefix)).toBe(0);
    const again = await rebuildCli('--dry-run');
    expect(again.enqueued).toBe(0);

    const recoveryMs = await recovery.wait(60_000);
    await waitForSettled(services.db, services.schema, 60_000);
    const oracle = await readOracle(services.db, { schema: services.schema, appSchema });
    reportRow(
      rowFrom('2a Redis FLUSHDB + rebuild', oracle, recoveryMs, `jobs lost ${missing}; rebuild enqueued ${rebuilt.enqueued}`),
    );
    expect(missing).toBeGreaterThan(0);
    expect(rebuilt.enqueued).toBeGreaterThanOrEqual(missing);
    expect(oracle.lost, JSON.stringify(oracle.lostSample)).toBe(0);
    expect(oracle.owed).toBe((stats.committed + burst.length) * 10);
    expect(oracle.done).toBe(oracle.owed);
  });

  it('Redis restarted with no persistence: the scheduler re-drives the lost jobs on its next period', async () => {
    const scheduler = new Supervisor({ config: config.path, command: 'scheduler', args: ['--every', '2s', '--lookback', '10m'] });
    supervisors.push(scheduler);
    await scheduler.start();
    const before = await readOracle(services.db, { schema: services.schema, appSchema });

    const load = startLoad({ db: services.db, effects, appSchema, perSecond: 10 });
    await sleep(1000);
    const burst = await placeOrders(services.db, effects, appSchema, 80);
    const recovery = await Recovery.capture(services.db, services.schema);
    await redis.kill();
    await sleep(1500);
    await redis.start();
    const missing = await pendingWithoutJob(services.db, services.schema, services.redis, services.prefix);
    await sleep(2000);
    const stats = await load.stop();

    const recoveryMs = await recovery.wait(60_000);
    await waitForSettled(services.db, services.schema, 60_000);
    const oracle = await readOracle(services.db, { schema: services.schema, appSchema });
    const rebuilds = scheduler
      .logRecords()
      .filter((r) => r.msg === 'periodic rebuild' && Number(r.enqueued) > 0).length;
    reportRow(
      rowFrom('2b Redis restart, empty', oracle, recoveryMs, `jobs lost ${missing}; scheduler rebuilds that enqueued ${rebuilds}`),
    );
    expect(oracle.lost, JSON.stringify(oracle.lostSample)).toBe(0);
    expect(oracle.owed - before.owed).toBe((stats.committed + burst.length) * 10);
    expect(oracle.done).toBe(oracle.owed);
    expect(missing).toBeGreaterThan(0);
    expect(rebuilds).toBeGreaterThan(0);
    for (const supervisor of supervisors) expect(supervisor.unexpectedExits).toEqual([]);
  });
});
