import { Queue } from 'bullmq';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import knexFactory from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEffects, defineEffect, type Effects } from '../src/index.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { ROOT, captureLogger, setupServices, waitFor, type TestServices } from './helpers.js';
import { freePort } from './servers.js';

describe('emit → worker → done', () => {
  let services: TestServices;
  let effects: Effects;
  let worker: WorkerHandle;
  const runs: string[] = [];
  const keys = new Map<string, string>();

  const definitions = [
    defineEffect({
      name: 'send-email',
      on: 'order_placed',
      async run(task, ctx) {
        runs.push(`send-email:${task.id}`);
        keys.set(`send-email:${task.id}:${ctx.attempt}`, ctx.idempotencyKey);
      },
    }),
    defineEffect({
      name: 'notify-crm',
      on: 'order_placed',
      attempts: 3,
      backoff: { type: 'fixed', delay: 10 },
      async run(task, ctx) {
        runs.push(`notify-crm:${task.id}`);
        keys.set(`notify-crm:${task.id}:${ctx.attempt}`, ctx.idempotencyKey);
        if (task.id === 'flaky' && ctx.attempt === 1) throw new Error('CRM timed out');
      },
    }),
  ];

  beforeAll(async () => {
    services = await setupServices('emit-worker');
    await services.migrate();
    const settings = services.settings({ effects: definitions });
    effects = createEffects(
      { effects: definitions },
      { flags: { redis: settings.redisUrl, db: settings.databaseUrl, prefix: services.prefix, schema: services.schema } },
    );
    worker = await startWorker(services.runtime({ effects: definitions }));
  });

  afterAll(async () => {
    await worker?.close({ timeoutMs: 5000 });
    await effects?.close();
    await services?.cleanup();
  });

  const ledgerRows = (eventId: string) =>
    services.db.withSchema(services.schema).table('ledger').where({ event_id: eventId }).orderBy('effect');
  /** The queues (effects) holding a job for `eventId`, in any state. */
  const jobsFor = async (eventId: string) => {
    const jobKeys = await services.redis.keys(`${services.prefix}:*:ledger-*`);
    const found: string[] = [];
    for (const key of jobKeys) {
      const data = await services.redis.hget(key, 'data');
      if (data && JSON.parse(data).id === eventId) found.push(key.split(':')[1]);
    }
    return found;
  };
  /** Lets pushes that follow a commit or rollback run: emit's close waits for those in flight. */
  const settle = () => new Promise((r) => setTimeout(r, 300));

  it('runs every subscribed effect once and marks its ledger row done', async () => {
    const { ledgerIds, effects: owed } = await effects.emit('order_placed', 101);
    expect(owed).toEqual(['send-email', 'notify-crm']);
    expect(ledgerIds).toHaveLength(2);
    await waitFor(async () => (await ledgerRows('101')).every((r) => r.status === 'done'));
    expect(runs.filter((r) => r.endsWith(':101')).sort()).toEqual(['notify-crm:101', 'send-email:101']);
  });

  it('commits the ledger rows with the business transaction and pushes after commit', async () => {
    await services.db.transaction(async (trx) => {
      await effects.emit('order_placed', 'in-trx', { trx });
      // Not visible outside the transaction yet, so nothing can have been pushed.
      expect(await ledgerRows('in-trx')).toHaveLength(0);
    });
    await waitFor(async () => {
      const rows = await ledgerRows('in-trx');
      return rows.length === 2 && rows.every((r) => r.status === 'done');
    });
  });

  it('leaves neither ledger row nor job when the transaction rolls back', async () => {
    await expect(
      services.db.transaction(async (trx) => {
        await effects.emit('order_placed', 'rolled-back', { trx });
        throw new Error('payment declined');
      }),
    ).rejects.toThrow('payment declined');
    await new Promise((r) => setTimeout(r, 300));
    expect(await ledgerRows('rolled-back')).toHaveLength(0);
    expect(await jobsFor('rolled-back')).toEqual([]);
    expect(runs.some((r) => r.endsWith(':rolled-back'))).toBe(false);
  });

  it('pushes nothing after an explicit trx.rollback(), which knex resolves rather than rejects', async () => {
    const trx = await services.db.transaction();
    await effects.emit('order_placed', 'explicit-rollback', { trx });
    await trx.rollback();
    await settle();
    expect(await ledgerRows('explicit-rollback')).toHaveLength(0);
    expect(await jobsFor('explicit-rollback')).toEqual([]);
  });

  it('waits for the outermost transaction when emit runs in a savepoint', async () => {
    await expect(
      services.db.transaction(async (trx) => {
        await trx.transaction(async (savepoint) => {
          await effects.emit('order_placed', 'savepoint-then-outer-fails', { trx: savepoint });
        });
        // The savepoint is released; the order is not placed until the outer transaction commits.
        await new Promise((r) => setTimeout(r, 100));
        expect(await jobsFor('savepoint-then-outer-fails')).toEqual([]);
        throw new Error('payment declined');
      }),
    ).rejects.toThrow('payment declined');
    await services.db.transaction(async (trx) => {
      await trx.transaction(async (savepoint) => {
        await effects.emit('order_placed', 'savepoint-rolled-back', { trx: savepoint });
        throw new Error('rolled back to the savepoint');
      }).catch(() => {});
      await effects.emit('order_placed', 'outer-commits', { trx });
    });
    await settle();
    expect(await jobsFor('savepoint-then-outer-fails')).toEqual([]);
    expect(await jobsFor('savepoint-rolled-back')).toEqual([]);
    expect((await jobsFor('outer-commits')).sort()).toEqual(['notify-crm', 'send-email']);
  });

  it('retries a failed attempt with the same idempotency key and records the attempts', async () => {
    await effects.emit('order_placed', 'flaky');
    await waitFor(async () => (await ledgerRows('flaky')).every((r) => r.status === 'done'));
    const [crm] = (await ledgerRows('flaky')).filter((r) => r.effect === 'notify-crm');
    expect(crm.attempts).toBe(1);
    expect(keys.get('notify-crm:flaky:1')).toBeDefined();
    expect(keys.get('notify-crm:flaky:2')).toBe(keys.get('notify-crm:flaky:1'));
  });

  it('leaves what a transaction commits after close() to the scheduler, and refuses emit after close()', async () => {
    const { lines, logger } = captureLogger();
    const closing = createEffects(
      { effects: definitions },
      { logger, flags: { redis: services.redisUrl, db: services.databaseUrl, prefix: services.prefix, schema: services.schema } },
    );
    const trx = await services.db.transaction();
    const { ledgerIds } = await closing.emit('order_placed', 'committed-after-close', { trx });
    await closing.close();
    await trx.commit();
    await settle();
    // Owed and kept: pending for the scheduler's rebuild, not pushed over connections reopened
    // after close() (which nothing would close again).
    expect((await ledgerRows('committed-after-close')).map((r) => r.status)).toEqual(['pending', 'pending']);
    expect(await jobsFor('committed-after-close')).toEqual([]);
    const warning = lines.map((l) => JSON.parse(l)).find((l) => l.msg.startsWith('closed before the push'));
    expect(warning?.ledgerIds).toEqual(ledgerIds);
    await expect(closing.emit('order_placed', 'too-late')).rejects.toThrow(/after close/);
  });

  it('close() stops waiting for a database that is away after a commit, and leaves the rows to the scheduler', async () => {
    const { lines, logger } = captureLogger();
    // The app's own transaction commits; the read-back of what it kept goes to a port nobody serves.
    const unreachable = `postgres://postgres@127.0.0.1:${await freePort()}/test`;
    const away = createEffects(
      { effects: definitions },
      { logger, flags: { redis: services.redisUrl, db: unreachable, prefix: services.prefix, schema: services.schema } },
    );
    await services.db.transaction(async (trx) => {
      await away.emit('order_placed', 'read-back-refused', { trx });
    });
    await away.close();
    // The read-back ends with close(), instead of retrying for ~30 s and holding the process open.
    await waitFor(() => lines.some((l) => l.includes('closed before the push')), 3000);
    expect(await jobsFor('read-back-refused')).toEqual([]);
  });

  it('says when a push after a commit waits for Redis, and close() names the rows it leaves to the scheduler', async () => {
    const { lines, logger } = captureLogger();
    const away = createEffects(
      { effects: definitions },
      {
        logger,
        pushTimeoutMs: 200,
        flags: { redis: `redis://127.0.0.1:${await freePort()}`, db: services.databaseUrl, prefix: services.prefix, schema: services.schema },
      },
    );
    let ledgerIds: string[] = [];
    await services.db.transaction(async (trx) => {
      ({ ledgerIds } = await away.emit('order_placed', 'redis-away', { trx }));
    });
    await waitFor(() => lines.some((l) => l.includes('push still waiting for Redis')), 3000);
    await away.close();
    const left = lines.map((l) => JSON.parse(l)).filter((l) => l.msg.startsWith('closed before the push'));
    expect(left.map((l) => l.ledgerIds)).toEqual([ledgerIds]);
    expect((await ledgerRows('redis-away')).map((r) => r.status)).toEqual(['pending', 'pending']);
  });

  it('emits nothing for an event no effect subscribes to', async () => {
    const result = await effects.emit('order_refunded', 5);
    expect(result).toEqual({ ledgerIds: [], effects: [] });
    expect(await services.db.withSchema(services.schema).table('ledger').where({ event: 'order_refunded' })).toEqual([]);
  });
});

describe('emit, as an app calls it', () => {
  let services: TestServices;
  const definitions = [
    defineEffect({ name: 'send-email', on: 'order_placed', run() {} }),
    defineEffect({ name: 'notify-crm', on: 'order_placed', run() {} }),
  ];
  const flags = () => ({ redis: services.redisUrl, db: services.databaseUrl, prefix: services.prefix, schema: services.schema });
  const jobIds = async (queue: string) => new Queue(queue, { connection: services.redis, prefix: services.prefix }).getJobs(['wait']);

  beforeAll(async () => {
    services = await setupServices('emit-app');
    await services.migrate();
  });
  afterAll(async () => {
    await services?.cleanup();
  });

  it('refuses what is not an id before writing anything, and keeps a bigint whole', async () => {
    const effects = createEffects({ effects: definitions }, { flags: flags() });
    try {
      const bad: unknown[] = [undefined, null, {}, Number.NaN, 1.5, 2 ** 53, '', 'x'.repeat(1001)];
      for (const id of bad) {
        await expect(effects.emit('order_placed', id as string), String(id)).rejects.toThrow(
          /emit\(\): the id must be a non-empty string of at most 1000 characters, a safe integer or a bigint; got/,
        );
      }
      // Refused by the types (only the config's events) and, from untyped code, at run time.
      // @ts-expect-error '' is not one of the config's events
      await expect(effects.emit('', 1)).rejects.toThrow(/the event must be a non-empty string/);
      // The knex instance instead of a transaction: its rows would be written and never pushed.
      await expect(effects.emit('order_placed', 1, { trx: services.db as never })).rejects.toThrow(
        'emit(): `trx` must be a knex transaction (from `knex.transaction()`), not the knex instance.',
      );
      expect(await services.db.withSchema(services.schema).table('ledger')).toEqual([]);

      // A null trx, as an optional transaction often arrives: no transaction.
      await effects.emit('order_placed', 12345678901234567890n, { trx: null });
      const rows = await services.db.withSchema(services.schema).table('ledger').select('event_id');
      expect(rows).toEqual([{ event_id: '12345678901234567890' }, { event_id: '12345678901234567890' }]);
    } finally {
      await effects.close();
    }
  });

  it("pushes whole tasks through an app's knex that renames the columns it returns (camelCase mappers)", async () => {
    const camel = (key: string) => key.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
    const mapKeys = (row: unknown) =>
      row && typeof row === 'object' && !Array.isArray(row) ? Object.fromEntries(Object.entries(row).map(([k, v]) => [camel(k), v])) : row;
    const appDb = knexFactory({
      client: 'pg',
      connection: services.databaseUrl,
      pool: { min: 0, max: 2 },
      postProcessResponse: (result) => (Array.isArray(result) ? result.map(mapKeys) : mapKeys(result)),
    });
    const effects = createEffects({ effects: definitions }, { flags: flags(), db: appDb });
    try {
      await appDb.transaction((trx) => effects.emit('order_placed', 'camel-1', { trx }));
      await effects.emit('order_placed', 'camel-2');
      const camelJobs = async () => (await jobIds('notify-crm')).filter((job) => String(job.data.id).startsWith('camel-'));
      await waitFor(async () => (await camelJobs()).length === 2);
      const data = (await camelJobs()).map((job) => job.data).sort((a, b) => a.id.localeCompare(b.id));
      expect(data).toEqual([
        { event: 'order_placed', id: 'camel-1' },
        { event: 'order_placed', id: 'camel-2' },
      ]);
    } finally {
      await effects.close();
      await appDb.destroy();
    }
  });

  it('reads back and pushes once per transaction, however many events it emits', async () => {
    const effects = createEffects({ effects: definitions }, { flags: flags() });
    let readBacks = 0;
    effects.runtime.db.on('query', (q: { sql: string }) => {
      if (/^select .* from "[^"]+"\."ledger" where "id" in/i.test(q.sql)) readBacks += 1;
    });
    try {
      const ids = Array.from({ length: 50 }, (_, i) => `batch-${i}`);
      await effects.runtime.db.transaction(async (trx) => {
        for (const id of ids) await effects.emit('order_placed', id, { trx });
      });
      await waitFor(async () => (await jobIds('send-email')).filter((j) => j.data.id.startsWith('batch-')).length === 50);
      expect((await jobIds('notify-crm')).filter((j) => j.data.id.startsWith('batch-'))).toHaveLength(50);
      expect(readBacks).toBe(1);
    } finally {
      await effects.close();
    }
  });

  it("by default, logs what goes wrong to stderr, not into the app's stdout, and a process that closes during an emit exits", async () => {
    const script = `
      import { createEffects } from ${JSON.stringify(path.join(ROOT, 'dist/index.js'))};
      const effects = createEffects(
        { effects: [{ name: 'send-email', on: 'order_placed', run() {} }] },
        { flags: ${JSON.stringify(flags())} },
      );
      await effects.emit('order_refundd', 1);
      const emitting = effects.emit('order_placed', 'closed-during-emit');
      await effects.close();
      await emitting;
      process.stdout.write('the app output\\n');
    `;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 15_000,
      env: { ...process.env, EFFECTS_LOG_LEVEL: '' },
    });
    // Exits by itself: nothing left open (a timeout would kill it with a signal).
    expect(child.signal, child.stderr).toBeNull();
    expect(child.status, child.stderr).toBe(0);
    expect(child.stdout).toBe('the app output\n');
    const lines = child.stderr.trim().split('\n').map((line) => JSON.parse(line));
    expect(lines).toEqual([expect.objectContaining({ level: 40, event: 'order_refundd', msg: 'no effect subscribes to this event; nothing emitted' })]);
    const rows = await services.db.withSchema(services.schema).table('ledger').where({ event_id: 'closed-during-emit' });
    expect(rows).toHaveLength(1);
  });
});

describe('worker.preparedStatements: false (behind a pooler in transaction mode)', () => {
  let services: TestServices;

  afterAll(async () => {
    await services?.cleanup();
  });

  it('checks and marks rows done with plain statements, and skips a row already done', async () => {
    services = await setupServices('emit-worker-unprepared');
    await services.migrate();
    const runs: string[] = [];
    const definitions = [defineEffect({ name: 'stamp', on: 'order_placed', run: (task) => void runs.push(task.id) })];
    const config = { effects: definitions, worker: { preparedStatements: false } };
    const settings = services.settings(config);
    const effects = createEffects(config, {
      flags: { redis: settings.redisUrl, db: settings.databaseUrl, prefix: services.prefix, schema: services.schema },
    });
    const worker = await startWorker(services.runtime(config));
    const ledger = () => services.db.withSchema(services.schema).table('ledger').where({ event_id: 'unprepared' });
    try {
      const { ledgerIds } = await effects.emit('order_placed', 'unprepared');
      await waitFor(async () => (await ledger()).every((r) => r.status === 'done'));
      expect(runs).toEqual(['unprepared']);

      // The same job again (a replayed duplicate, say): the check finds the row done and skips it.
      const queue = new Queue('stamp', { connection: services.redis, prefix: services.prefix });
      await queue.add('order_placed', { event: 'order_placed', id: 'unprepared' }, { jobId: `again-${ledgerIds[0]}` });
      await waitFor(async () => (await queue.getCompletedCount()) === 2);
      expect(runs).toEqual(['unprepared']);
      await queue.close();
    } finally {
      await worker.close({ timeoutMs: 5000 });
      await effects.close();
    }
  });
});

