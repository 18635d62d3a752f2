import { afterAll, describe, expect, it } from 'vitest';
import { runCli, setupServices, waitFor, type TestServices } from '../helpers.js';
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
  startWebhook,
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
    // Latencies of 60-300 ms, as third-party calls take: dozens of jobs in flight at each kill.
    const options = effectOptions(appSchema, { latencyScale: 2 });
    config = writeConfig(processConfig, options);
    supervisor = new Supervisor({ config: config.path, processes: 2 });
    await supervisor.start();
    // As deployed: a killed worker loses the done-marks it had not written yet, and the scheduler's
    // periodic rebuild marks those rows done from their completed jobs (a short period here).
    const scheduler = new Supervisor({ config: config.path, command: 'scheduler', args: ['--every', '2s', '--lookback', '10m'] });
    await scheduler.start();
    closers.push(() => scheduler.stop());

    const effects = createEmitter(processConfig, options);
    closers.push(() => effects.close());
    const queues = [...effects.runtime.effectsByName.keys()];
    const load = startLoad({ db: services.db, effects, appSchema, perSecond: 25 });

    // Under load, kill -9 one of the two worker processes; the supervisor replaces it; once what was
    // owed at the kill is done, the next kill. (A job in flight at two kills in a row is failed by
    // BullMQ's stalled limit as a poison pill: the second test below.)
    const kills: Array<{ inFlight: number }> = [];
    const recoveries: number[] = [];
    await sleep(2000);
    for (let i = 0; i < KILLS; i++) {
      const before = await activeJobIds(services.redis, services.prefix, queues);
      const recovery = await Recovery.capture(services.db, services.schema);
      await supervisor.kill9();
      // The dead process's jobs stay in the active lists until the lock expires, so the union of
      // both snapshots holds every job in flight at the kill (and those of the surviving worker).
      const after = await activeJobIds(services.redis, services.prefix, queues);
      kills.push({ inFlight: new Set([...before, ...after]).size });
      recoveries.push(await recovery.wait(60_000));
      await sleep(500);
    }
    const stats = await load.stop();
    await supervisor.ready();

    await waitForSettled(services.db, services.schema, 60_000);
    const oracle = await readOracle(services.db, { schema: services.schema, appSchema });
    const inFlightAtKills = kills.reduce((sum, k) => sum + k.inFlight, 0);
    const restartMs = Math.max(...supervisor.restartTimes);
    const markedDone = scheduler
      .logRecords()
      .filter((r) => r.msg === 'periodic rebuild')
      .reduce((sum, r) => sum + Number(r.markedDone ?? 0), 0);
    const seconds = (ms: number) => (ms / 1000).toFixed(1);
    reportRow(
      rowFrom(
        `1 kill -9 worker x${KILLS}`,
        oracle,
        Math.max(...recoveries),
        `in flight at kills ${inFlightAtKills}; recoveries ${recoveries.map(seconds).join('/')} s; restart <= ${seconds(restartMs)} s; lost done-marks settled by the scheduler ${markedDone}`,
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

  it('a job whose worker dies twice while running it is a poison pill: failed in the ledger, alerted, not re-driven', async () => {
    const s = await setupServices('faults-stalled');
    await s.migrate();
    const appSchema = `${s.schema}_app`;
    await createAppTables(s.db, appSchema);
    const webhook = await startWebhook();
    const processConfig = {
      redis: s.redisUrl,
      database: s.databaseUrl,
      prefix: s.prefix,
      schema: s.schema,
      alerts: { webhook: webhook.url },
      worker: FAST_WORKER,
    };
    // Jobs of 3-15 s: each is still running when its worker is killed, twice.
    const options = effectOptions(appSchema, { latencyScale: 100, failureRate: 0 });
    const stalledConfig = writeConfig(processConfig, options);
    const worker = new Supervisor({ config: stalledConfig.path });
    const effects = createEmitter(processConfig, options);
    try {
      await worker.start();
      await effects.emit('order_placed', 'crash-loop');
      const rowsOwed = await s.db.withSchema(s.schema).table('ledger').where({ event_id: 'crash-loop' }).select('id', 'effect');
      /** All ten jobs running (locked) after `stalls` stalls: taken again after the last kill. */
      const allRunning = async (stalls: number) => {
        const pipeline = s.redis.pipeline();
        for (const row of rowsOwed) {
          const key = `${s.prefix}:${row.effect}:ledger-${row.id}`;
          pipeline.exists(`${key}:lock`).hget(key, 'stc');
        }
        const replies = ((await pipeline.exec()) ?? []).map(([, value]) => value);
        return rowsOwed.every((_, i) => replies[2 * i] === 1 && Number(replies[2 * i + 1] ?? 0) === stalls);
      };
      for (let kill = 0; kill < 2; kill++) {
        // Both times, all ten jobs are running when the process dies.
        await waitFor(() => allRunning(kill), 30_000);
        await sleep(300);
        await worker.kill9();
        await worker.ready();
      }
      const ledger = () => s.db.withSchema(s.schema).table('ledger').where({ event_id: 'crash-loop' });
      await waitFor(async () => (await ledger()).every((r) => r.status === 'failed'), 30_000);
      await waitFor(() => webhook.requests.length >= EFFECTS_PER_ORDER, 10_000).catch(() => undefined);
      const rows = await ledger();
      const rebuild = await runCli(['rebuild', '--since', '10m', '--yes', '--json', '--config', stalledConfig.path]);
      const oracle = await readOracle(s.db, { schema: s.schema, appSchema, expectFailed: () => true });
      const stalledLines = worker.logRecords().filter((r) => r.msg === 'poison pill: stalled too often').length;
      reportRow({
        ...rowFrom(
          '1b worker dies twice mid-job',
          oracle,
          null,
          `${rows.length} jobs failed by the stall limit: ledger failed, ${webhook.requests.length} alerts, ` +
            `${stalledLines} error lines; rebuild re-drives ${JSON.parse(rebuild.stdout).enqueued}`,
        ),
        events: 1,
      });

      expect(rows.map((r) => r.status)).toEqual(rows.map(() => 'failed'));
      for (const row of rows) expect(row.last_error).toMatch(/stalled more than allowable limit/);
      expect(stalledLines).toBe(EFFECTS_PER_ORDER);
      expect(webhook.requests).toHaveLength(EFFECTS_PER_ORDER);
      // Failed, not pending: the periodic rebuild does not send it round again to crash more workers.
      expect(rebuild.code, rebuild.stderr).toBe(0);
      expect(JSON.parse(rebuild.stdout)).toMatchObject({ scanned: 0, enqueued: 0 });
      expect(worker.unexpectedExits).toEqual([]);
    } finally {
      await worker.stop();
      await effects.close();
      await webhook.close();
      await s.db.raw('drop schema if exists ?? cascade', [appSchema]);
      stalledConfig.remove();
      await s.cleanup();
    }
  });
});
