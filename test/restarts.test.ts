import { Writable } from 'node:stream';
import knexFactory, { type Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEffects, defineEffect, type Effects } from '../src/index.js';
import { createLogger } from '../src/core/logger.js';
import { Runtime } from '../src/core/runtime.js';
import { pauseQueues, resumeQueues } from '../src/ops/pause.js';
import { rebuild } from '../src/ops/rebuild.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { setupServices, waitFor, type TestServices } from './helpers.js';
import { startPrivatePostgres, startPrivateRedis, type PrivatePostgres, type PrivateRedis } from './servers.js';

/**
 * A running worker rides out Redis and PostgreSQL going away and coming back, without being
 * restarted: private servers, because these tests kill and restart them.
 */
describe('worker across server restarts', () => {
  let redis: PrivateRedis;
  let pg: PrivatePostgres;
  let services: TestServices;
  let runtime: Runtime;
  let worker: WorkerHandle;
  let effects: Effects;
  let admin: Knex;
  const runs = new Map<string, number>();
  const lines: Array<Record<string, unknown>> = [];
  const startedAt = Date.now();

  const definitions = [
    defineEffect({
      name: 'restartable',
      on: 'order_placed',
      concurrency: 4,
      attempts: 5,
      backoff: { type: 'fixed', delay: 50 },
      async run(task, ctx) {
        runs.set(ctx.ledgerId, (runs.get(ctx.ledgerId) ?? 0) + 1);
        // Long enough that servers go away while jobs are in flight.
        await new Promise((resolve) => setTimeout(resolve, task.id.startsWith('slow') ? 150 : 0));
      },
    }),
  ];

  beforeAll(async () => {
    [redis, pg] = await Promise.all([startPrivateRedis(), startPrivatePostgres()]);
    services = await setupServices('restarts', { redisUrl: redis.url, databaseUrl: pg.url });
    await services.migrate();
    const sink = new Writable({
      write(chunk, _encoding, done) {
        for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
        done();
      },
    });
    runtime = new Runtime(
      services.settings({ effects: definitions, worker: { lockDuration: 2000, stalledInterval: 1000 } }),
      { logger: createLogger({ pretty: false, level: 'info', destination: sink }) },
    );
    worker = await startWorker(runtime);
    effects = createEffects(
      { effects: definitions },
      { flags: { redis: redis.url, db: pg.url, prefix: services.prefix, schema: services.schema } },
    );
    admin = knexFactory({ client: 'pg', connection: pg.url, pool: { min: 0, max: 1 } });
  }, 60_000);

  afterAll(async () => {
    await worker?.close({ timeoutMs: 5000 });
    await effects?.close();
    await admin?.destroy();
    await services?.cleanup();
    await Promise.allSettled([redis?.stop(), pg?.stop()]);
  }, 60_000);

  const statusOf = async (ids: string[]) => {
    const rows = await services.db.withSchema(services.schema).table('ledger').whereIn('event_id', ids);
    return rows.map((r: { status: string }) => r.status);
  };
  const allDone = (ids: string[]) => async () => {
    const statuses = await statusOf(ids);
    return statuses.length === ids.length && statuses.every((s) => s === 'done');
  };
  const ids = (name: string, n: number) => Array.from({ length: n }, (_, i) => `${name}-${i}`);
  const emitAll = async (list: string[]) => {
    for (const id of list) await effects.emit('order_placed', id);
  };
  /** Every done row ran exactly once, and nothing ran that is not done. */
  const expectRunsMatchLedger = async () => {
    const done = await services.db.withSchema(services.schema).table('ledger').where({ status: 'done' }).select('id');
    const doneIds = done.map((r: { id: string }) => String(r.id)).sort();
    expect([...runs.keys()].sort()).toEqual(doneIds);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
  };

  it('works before anything breaks', async () => {
    const list = ids('before', 5);
    await emitAll(list);
    await waitFor(allDone(list));
    await expectRunsMatchLedger();
  });

  it('keeps working after Redis is killed and started again empty', async () => {
    const inFlight = ids('slow-redis', 20);
    await emitAll(inFlight);
    await waitFor(async () => (await statusOf(inFlight)).includes('done'));
    await redis.kill();
    await redis.start();
    // The restarted Redis kept nothing: rebuild re-drives what the ledger still owes.
    await waitFor(async () => (await services.redis.ping()) === 'PONG');
    const rebuilt = await rebuild(services.runtime({ effects: definitions }), { since: startedAt });
    expect(rebuilt.enqueued).toBeGreaterThan(0);
    await waitFor(allDone(inFlight), 20_000);

    const after = ids('after-redis', 5);
    await emitAll(after);
    await waitFor(allDone(after), 20_000);
    expect(worker.workers.every((w) => w.isRunning())).toBe(true);
    await expectRunsMatchLedger();
  });

  it("puts an operator's pause back when Redis comes back empty, before jobs emitted afterwards run", async () => {
    await pauseQueues(runtime, { queues: ['restartable'], actor: 'alice', reason: 'CRM is down' });
    await redis.kill();
    // Emitted while Redis is away: their pushes wait for it and land the moment it is back, as the
    // worker's connections come back too.
    const early = ids('held-early', 10);
    const emitting = Promise.all(early.map((id) => effects.emit('order_placed', id)));
    await redis.start();
    await emitting;
    await waitFor(async () => (await services.redis.ping()) === 'PONG');
    // No rebuild, no restart: the running worker notices and pauses the queue again, before it takes a job.
    const queue = runtime.queues.get('restartable');
    await waitFor(() => queue.isPaused(), 10_000);
    const held = [...early, ...ids('held', 3)];
    await emitAll(held.slice(early.length));
    await waitFor(async () => (await queue.getJobCountByTypes('wait')) === held.length, 10_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await statusOf(held)).filter((status) => status !== 'pending')).toEqual([]);
    expect(lines.some((line) => String(line.msg).startsWith('queue settings were missing from Redis'))).toBe(true);

    await resumeQueues(runtime, { queues: ['restartable'], actor: 'alice' });
    await waitFor(allDone(held), 20_000);
    await expectRunsMatchLedger();
  });

  it('takes no job after Redis came back empty while it cannot learn which queues are paused', async () => {
    await pauseQueues(runtime, { queues: ['restartable'], actor: 'alice', reason: 'CRM is down again' });
    // The paused state cannot be read back (as with the database away), though the ledger can.
    await services.db.raw('alter table ??.queue_settings rename to queue_settings_away', [services.schema]);
    try {
      await redis.kill();
      await redis.start();
      await waitFor(async () => (await services.redis.ping()) === 'PONG');
      const held = ids('held-unknown', 3);
      await emitAll(held);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect(await statusOf(held)).toEqual(['pending', 'pending', 'pending']);
    } finally {
      await services.db.raw('alter table ??.queue_settings_away rename to queue_settings', [services.schema]);
    }
    const queue = runtime.queues.get('restartable');
    await waitFor(() => queue.isPaused(), 10_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await statusOf(ids('held-unknown', 3))).toEqual(['pending', 'pending', 'pending']);
    await resumeQueues(runtime, { queues: ['restartable'], actor: 'alice' });
    await waitFor(allDone(ids('held-unknown', 3)), 20_000);
    await expectRunsMatchLedger();
  });

  it('keeps working across a PostgreSQL restart, with jobs in flight', async () => {
    const list = ids('slow-pg', 20);
    await emitAll(list);
    await waitFor(async () => runs.size > 0 && (await statusOf(list)).includes('done'));
    await pg.restart();
    await waitFor(allDone(list), 30_000);

    const after = ids('after-pg', 5);
    await emitAll(after);
    await waitFor(allDone(after), 20_000);
    expect(worker.workers.every((w) => w.isRunning())).toBe(true);
    await expectRunsMatchLedger();
  });

  it('keeps working when its PostgreSQL connections are terminated', async () => {
    const list = ids('slow-terminated', 20);
    await emitAll(list);
    // Jobs queued by other code are matched to the ledger by (event, id): another read path.
    const foreign = ids('slow-foreign', 5);
    const queue = runtime.queues.get('restartable');
    for (const id of foreign) {
      await runtime.ledger.owe('order_placed', id, ['restartable']);
      await queue.add('order_placed', { event: 'order_placed', id }, { jobId: `foreign-${id}`, attempts: 5 });
    }
    await waitFor(async () => (await statusOf(list)).includes('done'));
    const terminated = await admin.raw(
      `select pg_terminate_backend(pid) as ok from pg_stat_activity
        where backend_type = 'client backend' and pid <> pg_backend_pid()`,
    );
    expect(terminated.rows.length).toBeGreaterThan(0);
    await waitFor(allDone([...list, ...foreign]), 30_000);

    const after = ids('after-terminate', 5);
    await emitAll(after);
    await waitFor(allDone(after), 20_000);
    expect(worker.workers.every((w) => w.isRunning())).toBe(true);
    await expectRunsMatchLedger();
  });

  it('shuts down within its deadline while Redis is away, a look at the queue settings waiting for it', async () => {
    const second = await startWorker(
      new Runtime(services.settings({ effects: definitions, worker: { lockDuration: 2000, stalledInterval: 1000 } }), {
        logger: createLogger({ pretty: false, level: 'silent' }),
      }),
    );
    await redis.kill();
    try {
      // As the 5 s look does during an outage: its command waits for Redis, without limit.
      void second.settingsWatch.check();
      const closed = await Promise.race([
        second.close({ timeoutMs: 1000 }),
        new Promise((resolve) => setTimeout(() => resolve('still closing after 10 s'), 10_000)),
      ]);
      // Drained or not (a fetch sent before Redis went away counts as held), it kept its deadline.
      expect(closed).toEqual({ drained: expect.any(Boolean) });
    } finally {
      await redis.start();
    }
  });

  it('shuts down promptly when idle right after a Redis restart', async () => {
    await redis.kill();
    await redis.start();
    await waitFor(async () => (await services.redis.ping()) === 'PONG');
    // BullMQ's unforced close waits for the blocking connection, still reconnecting, without limit.
    const closed = await Promise.race([
      worker.close({ timeoutMs: 2000 }),
      new Promise((resolve) => setTimeout(() => resolve('still closing after 10 s'), 10_000)),
    ]);
    expect(closed).toEqual({ drained: true });
  });
});
