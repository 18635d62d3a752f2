import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEffects, defineEffect, type Effects } from '../src/index.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { setupServices, waitFor, type TestServices } from './helpers.js';

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

  it('records the other failures of a batch when the database refuses one of them', async () => {
    await waitFor(async () => (await row('plain-failure'))?.status === 'failed');
    expect((await row('plain-failure')).last_error).toBe('crm is down');
    // The refused one stays pending (the scheduler's rebuild re-drives it) and its job failed with
    // the effect's own error, not the ledger's.
    expect((await row('refused-record')).status).toBe('pending');
    const queue = new Queue('refused-record', { connection: services.redis, prefix: services.prefix });
    const [job] = await queue.getFailed();
    expect(job.failedReason).toMatch(/^refuse me/);
    await queue.close();
  });

  it('treats an UnrecoverableError from another copy of bullmq as final', async () => {
    await waitFor(async () => (await row('foreign-unrecoverable'))?.status === 'failed');
    const failed = await row('foreign-unrecoverable');
    expect(failed.attempts).toBe(1);
    expect(failed.last_error).toBe('the order does not exist any more');
  });
});
