import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setupServices, type TestServices } from '../helpers.js';
import { startPrivatePostgres, type PrivatePostgres } from '../servers.js';
import type { Effects } from '../../src/core/effects.js';
import {
  createAppTables,
  createEmitter,
  doneRate,
  effectOptions,
  FAST_WORKER,
  longestCompletionGap,
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
} from './harness.js';

/**
 * The ledger's PostgreSQL goes away twice under load: every backend terminated
 * (pg_terminate_backend), then a fast restart. Workers must ride it out in-process: no exit, no
 * restart, throughput back, and the ledger's done count equal to what the sink saw run.
 * Runs on a private PostgreSQL.
 */
describe('scenario 3: PostgreSQL restarted and its backends terminated mid-run', () => {
  let pg: PrivatePostgres;
  let services: TestServices;
  let config: FaultConfig;
  let supervisor: Supervisor;
  let effects: Effects;
  let appSchema: string;

  beforeAll(async () => {
    pg = await startPrivatePostgres();
    services = await setupServices('faults-pg', { databaseUrl: pg.url });
    await services.migrate();
    appSchema = `${services.schema}_app`;
    await createAppTables(services.db, appSchema);
  });

  afterAll(async () => {
    await supervisor?.stop();
    await effects?.close();
    config?.remove();
    await services?.cleanup();
    await pg?.stop();
  });

  it('no worker exits, throughput recovers, and ledger done equals the sink', async () => {
    const processConfig = {
      redis: services.redisUrl,
      database: services.databaseUrl,
      prefix: services.prefix,
      schema: services.schema,
      worker: FAST_WORKER,
    };
    const options = effectOptions(appSchema);
    config = writeConfig(processConfig, options);
    supervisor = new Supervisor({ config: config.path, processes: 2 });
    await supervisor.start();
    const pids = supervisor.pids;
    effects = createEmitter(processConfig, options);

    const startedAt = Date.now();
    const load = startLoad({ db: services.db, effects, appSchema, perSecond: 20 });
    await sleep(3000);
    const preRate = await doneRate(services.db, services.schema, startedAt + 1000, Date.now());

    // Every other backend of the database, the workers' and the emitter's included, killed at once.
    const terminatedAt = Date.now();
    const terminated = await Recovery.capture(services.db, services.schema);
    const { rows } = await services.db.raw(
      `select count(pg_terminate_backend(pid)) as n from pg_stat_activity
        where datname = current_database() and pid <> pg_backend_pid()`,
    );
    await sleep(3000);

    const restartedAt = Date.now();
    const restarted = await Recovery.capture(services.db, services.schema);
    await pg.restart();
    await sleep(4000);
    const stats = await load.stop();
    const stoppedAt = Date.now();

    const recoveries = [await terminated.wait(60_000), await restarted.wait(60_000)];
    // How long no effect finished at all, around each fault: the hold-up as users saw it.
    const gaps = [
      await longestCompletionGap(services.db, services.schema, terminatedAt - 1000, restartedAt),
      await longestCompletionGap(services.db, services.schema, restartedAt - 1000, stoppedAt),
    ];
    // Throughput in the last 2 s of load, 2 s after the restart.
    const postRate = await doneRate(services.db, services.schema, stoppedAt - 2000, stoppedAt);
    await waitForSettled(services.db, services.schema, 60_000);
    const oracle = await readOracle(services.db, { schema: services.schema, appSchema });
    reportRow(
      rowFrom(
        '3 PG terminate + restart',
        oracle,
        Math.max(...recoveries, ...gaps),
        `backends killed ${rows[0].n}; longest pause in completions: terminate ${gaps[0]} ms, restart ${gaps[1]} ms; ` +
          `owed at the fault done after ${recoveries.join('/')} ms; done/s before ${preRate.toFixed(0)}, after ${postRate.toFixed(0)}; ` +
          `orders refused while down ${stats.failed}`,
      ),
    );

    expect(oracle.lost, JSON.stringify(oracle.lostSample)).toBe(0);
    expect(oracle.owed).toBe(oracle.events * 10);
    expect(oracle.done).toBe(oracle.owed);
    expect(oracle.done).toBe(oracle.sinkUnique);
    expect(supervisor.unexpectedExits).toEqual([]);
    expect(supervisor.exits).toEqual([]);
    expect(supervisor.pids).toEqual(pids);
    // Loose on purpose (a shared two-core machine): the figure is in the row.
    expect(postRate).toBeGreaterThan(preRate * 0.3);
  });
});
