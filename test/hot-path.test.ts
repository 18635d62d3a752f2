import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/core/logger.js';
import { LedgerHotPath } from '../src/ledger/hot-path.js';
import { withDbRetry } from '../src/ledger/retry.js';
import { setupServices, type TestServices } from './helpers.js';
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
      await expect(direct.markDoneAndFind([lockedId], [])).rejects.toMatchObject({ code: '57014' });
    } finally {
      await holder.rollback();
    }
    await direct.markDoneAndFind([lockedId], []);
    await direct.close();
    const done = await services.db.withSchema(services.schema).table('ledger').where({ id: lockedId }).first();
    expect(done.status).toBe('done');
  });

  it('gives up on a connection that goes silent and carries on over a new one', async () => {
    expect((await hotPath.markDoneAndFind([], [rowId])).get(rowId)?.status).toBe('pending');
    proxy.silenceOpenConnections();
    // As the batcher runs it: the timeout is a transient failure, retried on a fresh connection.
    const log = createLogger({ pretty: false, level: 'silent' });
    await withDbRetry(() => hotPath.markDoneAndFind([rowId], []), log, 'read and done-mark');
    const row = await services.db.withSchema(services.schema).table('ledger').where({ id: rowId }).first();
    expect(row.status).toBe('done');
  });
});
