import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineEffect } from '../src/index.js';
import { NotMigratedError } from '../src/core/errors.js';
import type { Runtime } from '../src/core/runtime.js';
import { assertMigrated, migrate, migratorConfig, pendingMigrations } from '../src/ledger/migrate.js';
import { migrations } from '../src/ledger/migrations.js';
import { rebuild } from '../src/ops/rebuild.js';
import { replay } from '../src/ops/replay.js';
import { jobIdForRow } from '../src/queue/keys.js';
import { pushRows } from '../src/queue/push.js';
import { startWorker } from '../src/worker/worker.js';
import { deleteKeys, setupServices, waitFor, type TestServices } from './helpers.js';

const DAY_MS = 86_400_000;

const config = {
  effects: [
    defineEffect({
      name: 'notify-crm',
      on: 'order_placed',
      attempts: 1,
      async run() {
        throw new Error('CRM said 503');
      },
    }),
  ],
  worker: { lockDuration: 2000, stalledInterval: 2000 },
};

describe('pending_since', () => {
  let services: TestServices;
  let runtime: Runtime;
  const ledger = (schema = services.schema) => services.db.withSchema(schema).table('ledger');
  const rowById = async (id: string) => ledger().where({ id }).first();

  beforeAll(async () => {
    services = await setupServices('pending-since');
    await services.migrate();
    runtime = services.runtime(config);
  });

  afterAll(async () => {
    await services?.cleanup();
  });

  it('a row emitted days ago and replayed now is found by a rebuild of the last hour after Redis loses its job', async () => {
    // A row that failed for good, emitted three days ago (further back than the scheduler looks).
    const [replayed] = await runtime.ledger.owe('order_placed', 'replayed-1', ['notify-crm']);
    const worker = await startWorker(services.runtime(config));
    try {
      await pushRows(runtime, [replayed]);
      await waitFor(async () => (await rowById(replayed.id)).status === 'failed');
    } finally {
      await worker.close({ timeoutMs: 3000 });
    }
    const threeDaysAgo = new Date(Date.now() - 3 * DAY_MS);
    await ledger().where({ id: replayed.id }).update({ created_at: threeDaysAgo, pending_since: threeDaysAgo });
    // Pending all along since three days ago, never replayed: outside a window of the last hour.
    const [stale] = await ledger()
      .insert({ event: 'order_placed', event_id: 'stale-1', effect: 'notify-crm', created_at: threeDaysAgo, pending_since: threeDaysAgo })
      .returning('id');

    const replayedAt = Date.now();
    expect(await replay(runtime, { queues: ['notify-crm'], brake: false })).toMatchObject({ replayed: 1 });
    const row = await rowById(replayed.id);
    expect(row).toMatchObject({ status: 'pending', replay_count: 1 });
    expect(row.pending_since.getTime()).toBeGreaterThanOrEqual(replayedAt - 1000);
    expect(row.created_at.getTime()).toBe(threeDaysAgo.getTime());

    await deleteKeys(services.redis, `${services.prefix}:*`);
    const result = await rebuild(runtime, { since: Date.now() - 3_600_000, audit: false });
    expect(result).toMatchObject({ scanned: 1, enqueued: 1, alreadyQueued: 0 });
    const crm = runtime.queues.get('notify-crm');
    expect(await crm.getJobState(jobIdForRow(replayed.id))).toBe('waiting');
    expect(await crm.getJobState(jobIdForRow(String(stale.id)))).toBe('unknown');

    // A window that reaches back to it finds the stale row too.
    const wider = await rebuild(runtime, { since: Date.now() - 4 * DAY_MS, dryRun: true });
    expect(wider).toMatchObject({ scanned: 2, enqueued: 1, alreadyQueued: 1 });
    expect(await runtime.ledger.countPending({ since: Date.now() - 3_600_000 })).toBe(1);
  });

  it('migrating a ledger an older release left (001-003, with rows) gives pending rows pending_since = created_at', async () => {
    const schema = `${services.schema}_old`;
    const indexes = async () =>
      (await services.db('pg_indexes').where({ schemaname: schema, tablename: 'ledger' }).pluck('indexname')).sort();
    try {
      await services.db.raw('create schema ??', [schema]);
      await services.db.migrate.latest(migratorConfig(schema, migrations.slice(0, 3)));
      const statuses = ['pending', 'done', 'failed', 'discarded', 'pending'];
      await ledger(schema).insert(
        statuses.map((status, i) => ({
          event: 'order_placed',
          event_id: `old-${i}`,
          effect: 'notify-crm',
          status,
          created_at: services.db.raw(`now() - make_interval(days => ?) - interval '1.234567 second'`, [i + 1]),
        })),
      );

      // The worker, the scheduler and every ledger command refuse it, and say how to fix it.
      const refusal = assertMigrated(services.db, schema);
      await expect(refusal).rejects.toBeInstanceOf(NotMigratedError);
      await expect(refusal).rejects.toThrow('pending: 004_pending_since');
      await expect(refusal).rejects.toMatchObject({ hint: expect.stringContaining('`effects migrate`') });

      const migratedFrom = Date.now();
      expect((await migrate(services.db, schema)).applied).toEqual(['004_pending_since', '005_queue_config', '006_failed_at']);
      await assertMigrated(services.db, schema);
      const rows = await ledger(schema).select('status', services.db.raw('pending_since = created_at as same'), 'pending_since').orderBy('id');
      // Pending rows, the ones a rebuild reads, keep their emit time; the others the migration's,
      // which a replay replaces when it makes them pending.
      expect(rows.map((r) => [r.status, r.same])).toEqual(statuses.map((status) => [status, status === 'pending']));
      for (const row of rows.filter((r) => r.status !== 'pending')) {
        expect(row.pending_since.getTime()).toBeGreaterThanOrEqual(migratedFrom - 1000);
      }
      expect(await indexes()).toEqual(['ledger_by_effect_status', 'ledger_by_event', 'ledger_failed_at', 'ledger_pending_since', 'ledger_pkey']);
      const [fresh] = await ledger(schema)
        .insert({ event: 'order_placed', event_id: 'new-1', effect: 'notify-crm' })
        .returning(services.db.raw('pending_since = created_at as same'));
      expect(fresh).toEqual({ same: true });

      // Rolled back, the ledger is as 003 left it.
      for (let down = 0; down < 3; down += 1) await services.db.migrate.down(migratorConfig(schema));
      expect(await pendingMigrations(services.db, schema)).toEqual(['004_pending_since', '005_queue_config', '006_failed_at']);
      expect(await services.db.schema.withSchema(schema).hasColumn('ledger', 'pending_since')).toBe(false);
      expect(await indexes()).toEqual(['ledger_by_effect_status', 'ledger_by_event', 'ledger_pending_by_created', 'ledger_pkey']);
    } finally {
      await services.db.raw('drop schema if exists ?? cascade', [schema]);
    }
  });
});
