import { afterAll, describe, expect, it } from 'vitest';
import { setupServices, type TestServices } from '../helpers.js';
import {
  activeJobIds,
  createAppTables,
  createEmitter,
  effectOptions,
  FAST_WORKER,
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

const EFFECTS_PER_ORDER = 10;
const KILLS = 5;

describe('scenario 1: kill -9 of worker processes under load', () => {
  let services: TestServices;
  let config: FaultConfig | undefined;
  let supervisor: Supervisor | undefined;
  const closers: Array<() => Promise<unknown>> = [];

  afterAll(async () => {
    await supervisor?.stop();
    for (const close of closers.reverse()) await close().catch(() => {});
    config?.remove();
    await services?.cleanup();
  });

  it('every owed effect runs; duplicate runs stay within the jobs in flight at the kills', async () => {
    services = await setupServices('faults-kill');
    await services.migrate();
    const appSchema = `${services.schema}_app`;
    await createAppTables(services.db, appSchema);
    closers.push(() => services.db.raw('drop schema if exists ?? cascade', [appSchema]));

    const processConfig = {
      redis: services.redisUrl,
      database: services.databaseUrl,
      prefix: services.prefix,
      schema: services.schema,
      worker: FAST_WORKER,
    };
    // Latencies of 15-75 ms: enough jobs in flight at each kill to matter.
    const options = effectOptions(appSchema, { latencyScale: 0.5 });
    config = writeConfig(processConfig, options);
    supervisor = new Supervisor({ config: config.path, processes: 2 });
    await supervisor.start();

    const effects = createEmitter(processConfig, options);
    closers.push(() => effects.close());
    const queues = [...effects.runtime.effectsByName.keys()];
    const load = startLoad({ db: services.db, effects, appSchema, perSecond: 25 });

    // Under load, kill -9 one of the two worker processes every 2.5 s; the supervisor replaces it.
    const kills: Array<{ inFlight: number; recovery: Recovery }> = [];
    await sleep(2000);
    for (let i = 0; i < KILLS; i++) {
      const before = await activeJobIds(services.redis, services.prefix, queues);
      const recovery = await Recovery.capture(services.db, services.schema);
      await supervisor.kill9();
      // The dead process's jobs stay in the active lists until the lock expires, so the union of
      // both snapshots holds every job in flight at the kill (and those of the surviving worker).
      const after = await activeJobIds(services.redis, services.prefix, queues);
      kills.push({ inFlight: new Set([...before, ...after]).size, recovery });
      await sleep(2500);
    }
    const stats = await load.stop();
    await supervisor.ready();

    const recoveries = await Promise.all(kills.map((k) => k.recovery.wait(60_000)));
    await waitForSettled(services.db, services.schema, 60_000);
    const oracle = await readOracle(services.db, { schema: services.schema, appSchema });
    const inFlightAtKills = kills.reduce((sum, k) => sum + k.inFlight, 0);
    const restartMs = Math.max(...supervisor.restartTimes);
    const seconds = (ms: number) => (ms / 1000).toFixed(1);
    reportRow(
      rowFrom(
        `1 kill -9 worker x${KILLS}`,
        oracle,
        Math.max(...recoveries),
        `in flight at kills ${inFlightAtKills}; recoveries ${recoveries.map(seconds).join('/')} s; restart <= ${seconds(restartMs)} s`,
      ),
    );

    expect(oracle.lost, JSON.stringify(oracle.lostSample)).toBe(0);
    expect(oracle.events).toBe(stats.committed);
    expect(oracle.owed).toBe(stats.committed * EFFECTS_PER_ORDER);
    expect(oracle.done).toBe(oracle.owed);
    expect(oracle.phantom).toBe(0);
    expect(oracle.duplicateRuns).toBeLessThanOrEqual(inFlightAtKills);
    expect(supervisor.restartTimes).toHaveLength(KILLS);
    expect(supervisor.unexpectedExits, supervisor.lines.filter((l) => !l.startsWith('{')).join('\n')).toEqual([]);
    expect(await supervisor.stop()).toEqual([0, 0]);
  });
});
