import net from 'node:net';
import knexFactory from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/core/logger.js';
import { sleep } from '../src/core/sleep.js';
import { LedgerHotPath } from '../src/ledger/hot-path.js';
import { Ledger } from '../src/ledger/ledger.js';
import { withDbRetry } from '../src/ledger/retry.js';
import { LedgerBatcher } from '../src/worker/ledger-batcher.js';
import { captureLogger, setupServices, waitFor, type TestServices } from './helpers.js';
import { startSilentableProxy, type SilentableProxy } from './servers.js';

describe("the worker's ledger connection", () => {
  let services: TestServices;
  let proxy: SilentableProxy;
  let hotPath: LedgerHotPath;
  let rowId: string;

  beforeAll(async () => {
    services = await setupServices('hot-path');
    await services.migrate();
    const url = new URL(services.databaseUrl);
    proxy = await startSilentableProxy({ host: url.hostname, port: Number(url.port || 5432) });
    url.port = String(proxy.port);
    hotPath = new LedgerHotPath(url.toString(), services.schema, { queryTimeoutMs: 500 });
    const [row] = await services.db
      .withSchema(services.schema)
      .table('ledger')
      .insert({ event: 'order_placed', event_id: 'o-1', effect: 'send-email' })
      .returning('id');
    rowId = String(row.id);
  });

  afterAll(async () => {
    // Would hang past the hook's timeout if closing waited on the silenced connection.
    await hotPath?.close();
    await proxy?.close();
    await services?.cleanup();
  });

  it('has the server cancel a statement stuck on a lock, so no backend is left waiting on it', async () => {
    const [row] = await services.db
      .withSchema(services.schema)
      .table('ledger')
      .insert({ event: 'order_placed', event_id: 'o-2', effect: 'send-email' })
      .returning('id');
    const lockedId = String(row.id);
    const direct = new LedgerHotPath(services.databaseUrl, services.schema, { queryTimeoutMs: 500 });
    const holder = await services.db.transaction();
    try {
      await holder.withSchema(services.schema).table('ledger').where({ id: lockedId }).forUpdate();
      // 57014 comes from the server (statement_timeout); the client's own timeout would say
      // "Query read timeout" and leave the backend waiting for the lock.
      await expect(direct.markDone([lockedId])).rejects.toMatchObject({ code: '57014' });
    } finally {
      await holder.rollback();
    }
    await direct.markDone([lockedId]);
    await direct.close();
    const done = await services.db.withSchema(services.schema).table('ledger').where({ id: lockedId }).first();
    expect(done.status).toBe('done');
  });

  it('gives up on a connection that goes silent and carries on over a new one', async () => {
    expect((await hotPath.find([rowId])).get(rowId)?.status).toBe('pending');
    proxy.silenceOpenConnections();
    // As the batcher runs it: the timeout is a transient failure, retried on a fresh connection.
    const log = createLogger({ pretty: false, level: 'silent' });
    await withDbRetry(() => hotPath.markDone([rowId]), log, 'done-mark');
    const row = await services.db.withSchema(services.schema).table('ledger').where({ id: rowId }).first();
    expect(row.status).toBe('done');
  });

  it('records a failure over a new connection when its own goes silent', async () => {
    const [row] = await services.db
      .withSchema(services.schema)
      .table('ledger')
      .insert({ event: 'order_placed', event_id: 'o-3', effect: 'send-email' })
      .returning('id');
    const url = new URL(services.databaseUrl);
    url.port = String(proxy.port);
    const db = knexFactory({ client: 'pg', connection: url.toString(), pool: { min: 0, max: 1 } });
    const ledger = new Ledger(db, services.schema, 500);
    try {
      await db.raw('select 1');
      proxy.silenceOpenConnections();
      const log = createLogger({ pretty: false, level: 'silent' });
      await withDbRetry(() => ledger.recordFailures([{ id: String(row.id), attempts: 1, error: 'CRM said 503', final: false }]), log, 'failure record');
    } finally {
      await db.destroy();
    }
    const recorded = await services.db.withSchema(services.schema).table('ledger').where({ id: row.id }).first();
    expect(recorded).toMatchObject({ attempts: 1, last_error: 'CRM said 503', status: 'pending' });
  });
});

describe('done-marks written behind', () => {
  let services: TestServices;
  let ledger: Ledger;

  beforeAll(async () => {
    services = await setupServices('write-behind-marks');
    await services.migrate();
    ledger = new Ledger(services.db, services.schema);
  });

  afterAll(async () => {
    await services?.cleanup();
  });

  const statusOf = async (id: string) =>
    (await services.db.withSchema(services.schema).table('ledger').where({ id }).first()).status as string;

  it('answers a read of a row it holds a mark for as done, and writes the mark with the next batch', async () => {
    const [row] = await ledger.owe('order_placed', 'wb-1', ['send-email']);
    const batcher = new LedgerBatcher(ledger, new LedgerHotPath(services.databaseUrl, services.schema), captureLogger().logger);
    try {
      expect((await batcher.load(row.id))?.status).toBe('pending');
      void batcher.markDone(row);
      // The duplicate job of a row this worker just finished is skipped, before the mark is committed.
      expect((await batcher.load(row.id))?.status).toBe('done');
      await waitFor(async () => (await statusOf(row.id)) === 'done', 2000);
    } finally {
      await batcher.close();
    }
  });

  it('gets the row of a read queued behind one that waits on a lock longer than the pool waits for its connection', async () => {
    const [[first], [second]] = await Promise.all(['rd-1', 'rd-2'].map((id) => ledger.owe('order_placed', id, ['send-email'])));
    const batcher = new LedgerBatcher(ledger, new LedgerHotPath(services.databaseUrl, services.schema), captureLogger().logger);
    const holder = await services.db.transaction();
    try {
      await holder.raw('lock table ??.ledger in access exclusive mode', [services.schema]);
      const firstRead = batcher.load(first.id);
      await sleep(100);
      // Out at the same time, so it waits for the reads' one connection, past the pool's 3 s.
      const secondRead = batcher.load(second.id);
      await sleep(3500);
      await holder.commit();
      expect((await firstRead)?.status).toBe('pending');
      expect((await secondRead)?.status).toBe('pending');
    } finally {
      if (!holder.isCompleted()) await holder.rollback();
      await batcher.close();
    }
  });

  it('writes the marks it still holds when it closes', async () => {
    const rows = await Promise.all(['wb-2', 'wb-3'].map((id) => ledger.owe('order_placed', id, ['send-email'])));
    const batcher = new LedgerBatcher(ledger, new LedgerHotPath(services.databaseUrl, services.schema), captureLogger().logger);
    for (const [row] of rows) void batcher.markDone(row);
    expect(await batcher.close()).toEqual({ unwritten: 0 });
    for (const [row] of rows) expect(await statusOf(row.id)).toBe('done');
  });

  it('gives up at its deadline when the database is away, and says which rows stay pending', async () => {
    const [row] = await ledger.owe('order_placed', 'wb-4', ['send-email']);
    const unreachable = new URL(services.databaseUrl);
    unreachable.port = String(await closedPort());
    const log = captureLogger();
    const batcher = new LedgerBatcher(ledger, new LedgerHotPath(unreachable.toString(), services.schema), log.logger);
    void batcher.markDone(row);
    const started = Date.now();
    expect(await batcher.close({ timeoutMs: 500 })).toEqual({ unwritten: 1 });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(await statusOf(row.id)).toBe('pending');
    expect(log.lines.some((line) => /"rows":1.*done-marks not written before shutdown/.test(line))).toBe(true);
  });
});

describe('closing while a done-mark waits on a lock', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await setupServices('write-behind-close');
    await services.migrate();
  });

  afterAll(async () => {
    await services?.cleanup();
  });

  it('keeps its deadline instead of waiting for the statement, and counts its marks as unwritten', async () => {
    const ledger = new Ledger(services.db, services.schema);
    const [row] = await ledger.owe('order_placed', 'locked-1', ['send-email']);
    const log = captureLogger();
    const batcher = new LedgerBatcher(ledger, new LedgerHotPath(services.databaseUrl, services.schema), log.logger);
    const holder = await services.db.transaction();
    try {
      await holder.withSchema(services.schema).table('ledger').where({ id: row.id }).forUpdate().select('id');
      void batcher.markDone(row);
      // The mark's statement is sent after its 20 ms delay, and waits on the row lock.
      await sleep(300);
      const started = Date.now();
      expect(await batcher.close({ timeoutMs: 1000 })).toEqual({ unwritten: 1 });
      expect(Date.now() - started).toBeLessThan(2500);
      expect(log.lines.some((line) => /"rows":1.*done-marks not written before shutdown/.test(line))).toBe(true);
    } finally {
      await holder.rollback();
    }
    // The statement itself still commits once the lock is gone.
    await waitFor(async () => (await services.db.withSchema(services.schema).table('ledger').where({ id: row.id }).first()).status === 'done', 5000);
  });
});

describe('done-marks held while the database is away', () => {
  it('make a job wait for the next write once thousands are held, instead of holding them without bound', async () => {
    const unreachable = `postgres://postgres@127.0.0.1:${await closedPort()}/test`;
    const log = captureLogger();
    const db = knexFactory({ client: 'pg', connection: unreachable });
    const batcher = new LedgerBatcher(
      new Ledger(db, 'unused'),
      new LedgerHotPath(unreachable, 'unused'),
      log.logger,
    );
    const row = (id: number) => ({ id: String(id), event: 'order_placed', eventId: `o-${id}`, effect: 'send-email', status: 'pending' as const });
    const outcome = (promise: Promise<void>) => Promise.race([promise.then(() => 'resolved'), sleep(300).then(() => 'waiting')]);
    for (let id = 1; id < 4000; id += 1) await batcher.markDone(row(id));
    expect(await outcome(batcher.markDone(row(4000)))).toBe('resolved');
    for (let id = 4001; id < 5000; id += 1) void batcher.markDone(row(id));
    const held = batcher.markDone(row(5000));
    expect(await outcome(held)).toBe('waiting');
    // Shutdown gives up on the marks, and the job waiting for them goes on.
    expect(await batcher.close({ timeoutMs: 200 })).toEqual({ unwritten: 5000 });
    expect(await outcome(held)).toBe('resolved');
    await db.destroy();
  });
});

/** A local port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
