import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, setupServices } from '../helpers.js';
import { startPrivateRedis, type PrivateRedis } from '../servers.js';
import {
  createAppTables,
  createEmitter,
  effectOptions,
  FAST_WORKER,
  orderEffects,
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
  type ProcessConfig,
} from './harness.js';

const EFFECTS_PER_ORDER = 10;

/**
 * emit is transactional, then pushed: the ledger rows commit or roll back with the order, and a push
 * that never happens (Redis away, the process dead right after commit) is made up by the
 * scheduler's rebuild. Runs on a private Redis, since it stops and pauses it.
 */
describe('scenario 4: emit atomicity', () => {
  let redis: PrivateRedis;
  const teardown: Array<() => Promise<unknown> | unknown> = [];

  beforeAll(async () => {
    redis = await startPrivateRedis();
  });

  afterAll(async () => {
    for (const step of teardown.reverse()) await Promise.resolve(step()).catch(() => {});
    await redis?.stop();
  });

  /** A namespace of its own for each part: ledger schema, app tables, prefix, config. */
  async function setup(name: string) {
    const services = await setupServices(name, { redisUrl: redis.url });
    services.redis.on('error', () => {});
    await services.migrate();
    const appSchema = `${services.schema}_app`;
    await createAppTables(services.db, appSchema);
    const processConfig: ProcessConfig = {
      redis: redis.url,
      database: services.databaseUrl,
      prefix: services.prefix,
      schema: services.schema,
      worker: FAST_WORKER,
    };
    const options = effectOptions(appSchema);
    const config = writeConfig(processConfig, options);
    teardown.push(
      () => services.cleanup(),
      () => config.remove(),
      () => services.db.raw('drop schema if exists ?? cascade', [appSchema]),
    );
    const supervise = async (command: 'worker' | 'scheduler', args: string[] = []) => {
      const supervisor = new Supervisor({ config: config.path, command, args });
      teardown.push(() => supervisor.stop());
      await supervisor.start();
      return supervisor;
    };
    const emitter = () => {
      const effects = createEmitter(processConfig, options);
      teardown.push(() => effects.close());
      return effects;
    };
    return { services, appSchema, processConfig, config, supervise, emitter };
  }

  it('30% of the transactions roll back and leave no ledger row, no job and no run', async () => {
    const { services, appSchema, supervise, emitter } = await setup('faults-rollback');
    const worker = await supervise('worker');
    const effects = emitter();
    const load = startLoad({ db: services.db, effects, appSchema, perSecond: 30, rollbackRatio: 0.3 });
    await sleep(4000);
    const stats = await load.stop();
    await waitForSettled(services.db, services.schema, 30_000);

    const oracle = await readOracle(services.db, { schema: services.schema, appSchema });
    const leftovers = await services.db
      .withSchema(services.schema)
      .table('ledger')
      .whereIn('event_id', stats.rolledBackIds)
      .count<{ count: string }[]>('* as count');
    let jobs = 0;
    for (const name of effects.runtime.effectsByName.keys()) {
      const counts = await effects.runtime.queues.get(name).getJobCounts();
      jobs += Object.values(counts).reduce((sum, n) => sum + n, 0);
    }
    const share = stats.rolledBack / (stats.rolledBack + stats.committed);
    reportRow(
      rowFrom('4a emit, 30% rolled back', oracle, null, `rolled back ${stats.rolledBack} (${(share * 100).toFixed(0)}%); jobs ${jobs}`),
    );

    expect(stats.rolledBack).toBeGreaterThan(0);
    expect(stats.rolledBackIds).toHaveLength(stats.rolledBack);
    expect(Number(leftovers[0].count)).toBe(0);
    expect(oracle.events).toBe(stats.committed);
    expect(oracle.owed).toBe(stats.committed * EFFECTS_PER_ORDER);
    expect(jobs).toBe(oracle.owed);
    expect(oracle.phantom).toBe(0);
    expect(oracle.lost, JSON.stringify(oracle.lostSample)).toBe(0);
    expect(worker.unexpectedExits).toEqual([]);
  });

  it('orders placed while Redis is down are queued by the scheduler once it is back', async () => {
    const { services, appSchema, supervise, emitter } = await setup('faults-redis-down');
    const worker = await supervise('worker');
    const scheduler = await supervise('scheduler', ['--every', '2s', '--lookback', '10m']);
    const effects = emitter();
    await placeOrders(services.db, effects, appSchema, 5);

    const recovery = await Recovery.capture(services.db, services.schema);
    await redis.kill();
    const load = startLoad({ db: services.db, effects, appSchema, perSecond: 20 });
    await sleep(1500);
    const stats = await load.stop();
    // The app restarts during the outage: the pushes it still held are gone with it.
    await effects.close();
    await redis.start();
    const missing = await pendingWithoutJob(services.db, services.schema, services.redis, services.prefix);

    await waitForSettled(services.db, services.schema, 30_000);
    const recoveryMs = await recovery.wait(30_000);
    const oracle = await readOracle(services.db, { schema: services.schema, appSchema });
    reportRow(
      rowFrom(
        '4b emit while Redis down',
        oracle,
        recoveryMs,
        `orders while down ${stats.committed}, slowest ${stats.maxLatencyMs} ms; unqueued after ${missing}`,
      ),
    );

    expect(stats.committed).toBeGreaterThan(0);
    expect(stats.failed).toBe(0);
    // Also the rows of the orders before the outage still in flight when Redis died.
    expect(missing).toBeGreaterThanOrEqual(stats.committed * EFFECTS_PER_ORDER);
    expect(oracle.owed).toBe(oracle.events * EFFECTS_PER_ORDER);
    expect(oracle.lost, JSON.stringify(oracle.lostSample)).toBe(0);
    expect(oracle.done).toBe(oracle.owed);
    expect(worker.unexpectedExits).toEqual([]);
    expect(scheduler.unexpectedExits).toEqual([]);
  });

  it('an app process killed between commit and push: the scheduler queues what it owed', async () => {
    const { services, appSchema, processConfig, supervise } = await setup('faults-commit-kill');
    const worker = await supervise('worker');
    const names = orderEffects(effectOptions(appSchema)).map((e) => e.name);
    const child = spawn(process.execPath, [path.join(ROOT, 'test/faults/children/emit-then-wait.mjs')], {
      cwd: ROOT,
      env: { ...process.env, EFFECTS_LOG_LEVEL: 'silent', FAULTS_CHILD: JSON.stringify({ ...processConfig, appSchema, effects: names }) },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    teardown.push(() => child.kill('SIGKILL'));
    const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    expect((await lines.next()).value).toBe('ready');

    // Writes wait while reads go on: the child's commit goes through, its push hangs in Redis.
    const control = new Redis(redis.url);
    teardown.push(() => control.disconnect());
    await control.call('CLIENT', 'PAUSE', '30000', 'WRITE');
    child.stdin!.write('go\n');
    const committed = String((await lines.next()).value);
    expect(committed).toMatch(/^committed \d+$/);
    const orderId = committed.split(' ')[1];
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    const recovery = await Recovery.capture(services.db, services.schema);
    const unqueuedAtKill = await pendingWithoutJob(services.db, services.schema, services.redis, services.prefix);
    await control.call('CLIENT', 'UNPAUSE');
    // The dead client's push died with it: still nothing queued a moment later.
    await sleep(1000);
    const unqueuedAfter = await pendingWithoutJob(services.db, services.schema, services.redis, services.prefix);

    const scheduler = await supervise('scheduler', ['--every', '2s', '--lookback', '10m']);
    const recoveryMs = await recovery.wait(30_000);
    await waitForSettled(services.db, services.schema, 30_000);
    const oracle = await readOracle(services.db, { schema: services.schema, appSchema });
    reportRow(
      rowFrom('4c killed after commit', oracle, recoveryMs, `unqueued at kill ${unqueuedAtKill}, 1 s after ${unqueuedAfter}`),
    );

    const rows = await services.db.withSchema(services.schema).table('ledger').where({ event_id: orderId });
    expect(rows).toHaveLength(EFFECTS_PER_ORDER);
    expect(unqueuedAtKill).toBe(EFFECTS_PER_ORDER);
    expect(unqueuedAfter).toBe(EFFECTS_PER_ORDER);
    expect(oracle.events).toBe(1);
    expect(oracle.lost, JSON.stringify(oracle.lostSample)).toBe(0);
    expect(oracle.done).toBe(EFFECTS_PER_ORDER);
    expect(worker.unexpectedExits).toEqual([]);
    expect(scheduler.unexpectedExits).toEqual([]);
  });
});
