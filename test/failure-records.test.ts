import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEffects, defineEffect, type Effects } from '../src/index.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { LedgerHotPath } from '../src/ledger/hot-path.js';
import { LedgerBatcher } from '../src/worker/ledger-batcher.js';
import { captureLogger, setupServices, waitFor, type TestServices } from './helpers.js';

/** What the ledger keeps of failures the database would not take as they are. */
describe('failure records', () => {
  let services: TestServices;
  let effects: Effects;
  let worker: WorkerHandle;
  const poisoned: string[] = [];

  /** An error from another copy of bullmq: same name, another class. */
  class ForeignUnrecoverableError extends Error {
    override name = 'UnrecoverableError';
  }

  const definitions = [
    defineEffect({
      name: 'nul-in-error',
      on: 'order_placed',
      attempts: 1,
      async run() {
        throw new Error('upstream said bad\u0000byte');
      },
    }),
    defineEffect({
      name: 'refused-record',
      on: 'order_placed',
      attempts: 1,
      async run() {
        throw new Error('refuse me: the ledger will not take this record');
      },
    }),
    defineEffect({
      name: 'plain-failure',
      on: 'order_placed',
      attempts: 1,
      async run() {
        throw new Error('crm is down');
      },
    }),
    defineEffect({
      name: 'foreign-unrecoverable',
      on: 'order_placed',
      attempts: 5,
      backoff: { type: 'fixed', delay: 10 },
      async run() {
        throw new ForeignUnrecoverableError('the order does not exist any more');
      },
    }),
  ];

  beforeAll(async () => {
    services = await setupServices('failure-records');
    await services.migrate();
    // A record PostgreSQL refuses for a reason no retry can fix, as a constraint or a trigger would.
    await services.db.raw(
      `create function ??.refuse_record() returns trigger language plpgsql as $$
         begin raise exception 'record refused'; end $$`,
      [services.schema],
    );
    await services.db.raw(
      `create trigger refuse_record before update on ??.ledger for each row
         when (new.last_error like 'refuse me%') execute function ??.refuse_record()`,
      [services.schema, services.schema],
    );
    effects = createEffects(
      { effects: definitions },
      { flags: { redis: services.redisUrl, db: services.databaseUrl, prefix: services.prefix, schema: services.schema } },
    );
    worker = await startWorker(services.runtime({ effects: definitions }), {
      hooks: { onPoison: (_job, effect) => poisoned.push(effect.name) },
    });
    await effects.emit('order_placed', 'o-1');
    await waitFor(async () => poisoned.length === 4, 15_000);
  });

  afterAll(async () => {
    await worker?.close({ timeoutMs: 5000 });
    await effects?.close();
    await services?.cleanup();
  });

  const row = async (effect: string) =>
    services.db.withSchema(services.schema).table('ledger').where({ effect, event_id: 'o-1' }).first();

  it('alerts on every poison pill, whether or not its failure could be recorded', () => {
    expect([...poisoned].sort()).toEqual(['foreign-unrecoverable', 'nul-in-error', 'plain-failure', 'refused-record']);
  });

  it('keeps an error text with a NUL character, which a text column cannot hold', async () => {
    await waitFor(async () => (await row('nul-in-error'))?.status === 'failed');
    expect((await row('nul-in-error')).last_error).toBe('upstream said bad\uFFFDbyte');
  });

  it('records a failure whose text the database refuses without the text, and the job keeps the error', async () => {
    await waitFor(async () => (await row('refused-record'))?.status === 'failed');
    // Failed, not left pending: a pending row whose job failed for good is re-driven by every rebuild.
    expect((await row('refused-record')).last_error).toBe("the error text could not be recorded (SQLSTATE P0001); the job's failedReason has it");
    const queue = new Queue('refused-record', { connection: services.redis, prefix: services.prefix });
    const [job] = await queue.getFailed();
    expect(job.failedReason).toMatch(/^refuse me/);
    await queue.close();
  });

  it('records the other failures of a batch when the database refuses one of them', async () => {
    const ids = await services.db
      .withSchema(services.schema)
      .table('ledger')
      .insert(['b-1', 'b-2'].map((id) => ({ event: 'order_placed', event_id: id, effect: 'plain-failure' })))
      .returning('id');
    const [refused, fine] = ids.map((r: { id: string }) => String(r.id));
    const { logger } = captureLogger();
    const runtime = services.runtime();
    const batcher = new LedgerBatcher(runtime.ledger, new LedgerHotPath(services.databaseUrl, services.schema), logger);
    // Asked in the same tick, so both go out in one statement, which the database refuses.
    await Promise.all([
      batcher.recordFailure({ id: refused, attempts: 1, error: 'refuse me too', final: true }),
      batcher.recordFailure({ id: fine, attempts: 1, error: 'timeout talking to the CRM', final: true }),
    ]);
    await batcher.close();
    const rows = await services.db.withSchema(services.schema).table('ledger').whereIn('id', [refused, fine]).orderBy('id');
    expect(rows.map((r) => [r.status, r.last_error])).toEqual([
      ['failed', expect.stringMatching(/^the error text could not be recorded/)],
      ['failed', 'timeout talking to the CRM'],
    ]);
  });

  it('treats an UnrecoverableError from another copy of bullmq as final', async () => {
    await waitFor(async () => (await row('foreign-unrecoverable'))?.status === 'failed');
    const failed = await row('foreign-unrecoverable');
    expect(failed.attempts).toBe(1);
    expect(failed.last_error).toBe('the order does not exist any more');
  });
});
