import { Writable } from 'node:stream';
import { Queue, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEffects, defineEffect, type Effects } from '../src/index.js';
import { createLogger } from '../src/core/logger.js';
import { Runtime } from '../src/core/runtime.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { setupServices, waitFor, type TestServices } from './helpers.js';

/** Identifiers an attacker would try: each must reach the effect and the ledger as a plain string. */
const SQL_LOOKING_IDS = [
  "1'; drop table ledger; --",
  "x' or '1'='1",
  '?? ? $1 :id',
  '1); delete from ledger where (1=1',
];

describe('thin tasks', () => {
  let services: TestServices;
  let effects: Effects;
  let worker: WorkerHandle;
  let queue: Queue;
  const lines: Array<Record<string, unknown>> = [];
  const runs: string[] = [];

  const definitions = [
    defineEffect({
      name: 'thin',
      on: 'order_placed',
      attempts: 5,
      backoff: { type: 'fixed', delay: 10 },
      async run(task, ctx) {
        runs.push(task.id);
        // A failure whose message is full of SQL and placeholders goes through recordFailures.
        if (task.id === SQL_LOOKING_IDS[2] && ctx.attempt === 1) throw new Error("boom ' ? ?? $1 -- ;");
      },
    }),
  ];

  beforeAll(async () => {
    services = await setupServices('thin-task');
    await services.migrate();
    const sink = new Writable({
      write(chunk, _encoding, done) {
        for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
        done();
      },
    });
    const runtime = new Runtime(services.settings({ effects: definitions }), {
      logger: createLogger({ pretty: false, level: 'info', destination: sink }),
    });
    worker = await startWorker(runtime);
    const settings = services.settings({ effects: definitions });
    effects = createEffects(
      { effects: definitions },
      { flags: { redis: settings.redisUrl, db: settings.databaseUrl, prefix: services.prefix, schema: services.schema } },
    );
    queue = new Queue('thin', { connection: services.redis, prefix: services.prefix });
  });

  afterAll(async () => {
    await worker?.close({ timeoutMs: 5000 });
    await effects?.close();
    await queue?.close();
    await services?.cleanup();
  });

  const ledgerRows = (eventId: string) =>
    services.db.withSchema(services.schema).table('ledger').where({ event_id: eventId });

  const settled = async (job: Job) => {
    await waitFor(async () => ['completed', 'failed'].includes(await job.getState()));
    return (await queue.getJob(job.id!))!;
  };

  it('fails a job that is not { event, id } at once, with a reason that says what is wrong', async () => {
    const opts = { attempts: 5, backoff: { type: 'fixed', delay: 10 } };
    const cases: Array<[unknown, RegExp]> = [
      ['just a string', /got a string \("just a string"\)/],
      [42, /got a number \(42\)/],
      [[1, 2], /got an array/],
      [null, /got null/],
      [{ event: 'order_placed' }, /"id" must be a non-empty string or a number, got nothing/],
      [{ id: '7' }, /"event" must be a non-empty string, got nothing/],
      [{ event: 'order_placed', id: { nested: true } }, /"id" must be a non-empty string or a number, got \{"nested":true\}/],
      [{ event: 'order_placed', id: '9', order: { lines: 'x'.repeat(1_000_000) } }, /unexpected key\(s\) "order"; a task carries only event and id/],
      [{ event: 'order_placed', id: 'y'.repeat(100_000) }, /"id" is 100000 characters long; at most 1000/],
    ];
    const jobs = await Promise.all(cases.map(([data], i) => queue.add('order_placed', data as object, { ...opts, jobId: `bad-${i}` })));
    // Good work queued behind the bad jobs still gets done.
    await effects.emit('order_placed', 'good-1');

    for (const [i, job] of jobs.entries()) {
      const done = await settled(job);
      expect({ i, state: await done.getState() }).toEqual({ i, state: 'failed' });
      expect(done.attemptsMade).toBe(1);
      expect(done.failedReason).toMatch(/^Job data is not a thin task \{ event, id \}: /);
      expect(done.failedReason).toMatch(cases[i][1]);
      // The reason describes the data; it never echoes a huge payload back into Redis and the logs.
      expect(done.failedReason.length).toBeLessThan(400);
    }
    await waitFor(async () => (await ledgerRows('good-1'))[0]?.status === 'done');
    expect(runs).toEqual(['good-1']);
    expect(worker.workers.every((w) => w.isRunning())).toBe(true);

    const poisonLogs = lines.filter((l) => String(l.msg).includes('not a thin task'));
    expect(poisonLogs.map((l) => l.jobId).sort()).toEqual(jobs.map((j) => j.id).sort());
    expect(poisonLogs.every((l) => l.level === 50 && l.effect === 'thin' && l.attempt === 1)).toBe(true);
  });

  it('fails a job whose stored data is not JSON, instead of leaving it active forever', async () => {
    const job = await queue.add('order_placed', { event: 'order_placed', id: 'soon' }, { delay: 300, attempts: 5 });
    const key = `${services.prefix}:thin:${job.id}`;
    // Foreign code wrote text that is not JSON; BullMQ's own getJob cannot read it back either.
    await services.redis.hset(key, 'data', '{not json');
    await effects.emit('order_placed', 'good-2');
    await waitFor(async () => (await ledgerRows('good-2'))[0]?.status === 'done');
    await waitFor(async () => (await services.redis.zscore(`${services.prefix}:thin:failed`, job.id!)) !== null, 5000);
    const [failedReason, attemptsMade] = await services.redis.hmget(key, 'failedReason', 'atm');
    expect(failedReason).toMatch(/^Job data is not a thin task \{ event, id \}: the stored data is not JSON \(.*\): "\{not json"$/);
    expect(attemptsMade).toBe('1');
    expect(runs).not.toContain('soon');
    expect(worker.workers.every((w) => w.isRunning())).toBe(true);
  });

  it('treats ids that look like SQL as literals, in the ledger and in the effect', async () => {
    for (const id of SQL_LOOKING_IDS) await effects.emit('order_placed', id);
    for (const id of SQL_LOOKING_IDS) {
      await waitFor(async () => (await ledgerRows(id))[0]?.status === 'done');
      const [row] = await ledgerRows(id);
      expect(row).toMatchObject({ event_id: id, effect: 'thin', status: 'done' });
    }
    for (const id of SQL_LOOKING_IDS) expect(runs.filter((r) => r === id).length).toBeGreaterThanOrEqual(1);
    // The retried one recorded its attempt (the error text went through as a value, not as SQL).
    expect((await ledgerRows(SQL_LOOKING_IDS[2]))[0].attempts).toBe(1);
    // Nothing was dropped or deleted.
    const counts = await services.db.withSchema(services.schema).table('ledger').count<[{ count: string }]>('* as count');
    expect(Number(counts[0].count)).toBe(2 + SQL_LOOKING_IDS.length);
  });

  it('matches a job queued by other code to the ledger by the literal id only', async () => {
    const before = runs.length;
    // "x' or '1'='1" matches every row if it were spliced into SQL; literally it matches none.
    const job = await queue.add('order_placed', { event: 'order_placed', id: "zzz' or '1'='1" }, { jobId: 'foreign-1' });
    const done = await settled(job);
    expect(await done.getState()).toBe('completed');
    expect(done.returnvalue).toEqual({ status: 'skipped', reason: 'no ledger row owes this effect' });
    expect(runs.length).toBe(before);
  });

  it('takes a job id past PostgreSQL bigint for a foreign job, without failing the jobs checked with it', async () => {
    await effects.emit('order_placed', 'beside-a-huge-id');
    // ledger-<20 digits> looks like a row id but no bigint holds it: one such id in the batched
    // check must not fail every job that shares the statement.
    const huge = await queue.add('order_placed', { event: 'order_placed', id: 'beside-a-huge-id' }, { jobId: 'ledger-99999999999999999999' });
    await waitFor(async () => (await ledgerRows('beside-a-huge-id')).every((r) => r.status === 'done'));
    const done = await settled(huge);
    expect(await done.getState()).toBe('completed');
    // Matched by its event instead: the row it names is done by then, or it runs once more.
    expect(done.returnvalue.status === 'skipped' || runs.filter((id) => id === 'beside-a-huge-id').length === 2).toBe(true);
  });
});
