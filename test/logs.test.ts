import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEffects, defineEffect, type Effects } from '../src/index.js';
import { Queue, Worker } from 'bullmq';
import { createLogger } from '../src/core/logger.js';
import { secretScrubber } from '../src/core/redact.js';
import { jobIdForRow } from '../src/queue/keys.js';
import { Runtime } from '../src/core/runtime.js';
import { pushRows } from '../src/queue/push.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { spawnCli } from './cli-process.js';
import { runCli, setupServices, waitFor, type TestServices } from './helpers.js';
import { startPrivateRedis, type PrivateRedis } from './servers.js';

/** A pino destination that keeps every line, raw and parsed. */
function captureLines() {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      raw.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  return { stream, raw, parsed: () => raw.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

describe('the four structured logs', () => {
  let services: TestServices;
  let runtime: Runtime;
  let worker: WorkerHandle;
  let effects: Effects;
  const capture = captureLines();

  const definitions = [
    defineEffect({
      name: 'logged',
      on: 'order_placed',
      attempts: 2,
      backoff: { type: 'fixed', delay: 10 },
      async run(task, ctx) {
        if (task.id === 'flaky' && ctx.attempt === 1) throw new Error('first try fails');
        if (task.id === 'A-1') ctx.log.info({ password: 'from-the-effect' }, 'calling the CRM');
      },
    }),
  ];

  beforeAll(async () => {
    services = await setupServices('logs');
    await services.migrate();
    runtime = new Runtime(services.settings({ effects: definitions }), {
      logger: createLogger({ pretty: false, level: 'debug', destination: capture.stream }),
    });
    worker = await startWorker(runtime);
    effects = createEffects(
      { effects: definitions },
      { flags: { redis: services.redisUrl, db: services.databaseUrl, prefix: services.prefix, schema: services.schema } },
    );
  });

  afterAll(async () => {
    await worker?.close({ timeoutMs: 5000 });
    await effects?.close();
    await services?.cleanup();
  });

  const logsOf = (jobId: string) => capture.parsed().filter((l) => l.jobId === jobId);

  it("checking, doing, the effect's own lines, finished: each with effect, event, id, job id and attempt; at info only the outcome", async () => {
    const { ledgerIds } = await effects.emit('order_placed', 'A-1');
    const jobId = `ledger-${ledgerIds[0]}`;
    await waitFor(() => logsOf(jobId).some((l) => l.msg === 'finished'));
    const lines = logsOf(jobId);
    expect(lines.map((l) => [l.msg, l.level])).toEqual([
      ['checking', 20],
      ['doing', 20],
      ['calling the CRM', 30],
      ['finished', 30],
    ]);
    for (const line of lines) {
      expect(line).toMatchObject({ effect: 'logged', event: 'order_placed', id: 'A-1', jobId, attempt: 1 });
    }
    // ctx.log redacts as the process logger does.
    expect(lines[2].password).toBe('***');
    expect(lines[3].durationMs).toEqual(expect.any(Number));
  });

  it('a retry logs its attempt number; the failure is logged with its error', async () => {
    const { ledgerIds } = await effects.emit('order_placed', 'flaky');
    const jobId = `ledger-${ledgerIds[0]}`;
    await waitFor(() => logsOf(jobId).some((l) => l.msg === 'finished'));
    const lines = logsOf(jobId).map((l) => [l.msg, l.attempt]);
    expect(lines).toEqual([
      ['checking', 1],
      ['doing', 1],
      ['failed; will retry', 1],
      ['checking', 2],
      ['doing', 2],
      ['finished', 2],
    ]);
    const failed = logsOf(jobId).find((l) => l.msg === 'failed; will retry');
    // The class and message, without a stack on every retry (the poison line and the job keep it).
    expect(failed).toMatchObject({ effect: 'logged', event: 'order_placed', id: 'flaky' });
    expect(failed?.err).toEqual({ type: 'Error', message: 'first try fails' });
  });

  it('skipping: with the same fields and the reason', async () => {
    const ledger = runtime.ledger;
    const [row] = await ledger.owe('order_placed', 'B-2', ['logged']);
    await ledger.setStatus([row.id], 'done');
    await pushRows(runtime, [row]);
    const jobId = `ledger-${row.id}`;
    await waitFor(() => logsOf(jobId).some((l) => l.msg === 'skipping'));
    expect(logsOf(jobId).map((l) => l.msg)).toEqual(['checking', 'skipping']);
    expect(logsOf(jobId)[1]).toMatchObject({
      level: 30,
      effect: 'logged',
      event: 'order_placed',
      id: 'B-2',
      jobId,
      attempt: 1,
      reason: 'ledger row is done',
      durationMs: expect.any(Number),
    });
  });

  it('a ledger read that fails: logged with its error, and the job fails that attempt', async () => {
    // A job queued by other code (no ledger id) is matched by event through knex, which meets a
    // ledger that is not there while it is renamed away.
    await services.db.raw('alter table ??.ledger rename to ledger_away', [services.schema]);
    const queue = new Queue('logged', { connection: services.redis, prefix: services.prefix });
    try {
      await queue.add('order_placed', { event: 'order_placed', id: 'C-3' }, { jobId: 'foreign-C-3', attempts: 1 });
      await waitFor(() => logsOf('foreign-C-3').some((l) => Number(l.level) >= 40));
    } finally {
      await services.db.raw('alter table ??.ledger_away rename to ledger', [services.schema]);
    }
    const failed = logsOf('foreign-C-3').find((l) => l.msg === 'could not read the ledger row; the job fails this attempt');
    expect(failed).toMatchObject({ level: 40, effect: 'logged', event: 'order_placed', id: 'C-3', final: true });
    expect(String((failed?.err as { message?: string })?.message)).toMatch(/does not exist/);
    await waitFor(async () => (await queue.getJob('foreign-C-3'))?.failedReason !== undefined);
    await queue.close();
  });
});

describe('no password in any log line, stored error or CLI output', () => {
  const REDIS_PASSWORD = 'Redis"Secret-42';
  const PG_PASSWORD = 'Pg"Secret-42';
  let redis: PrivateRedis;
  let services: TestServices;
  let pgUrl: string;
  const appName = `effects_logs_${process.pid}`;

  const expectNoPassword = (text: string) => {
    for (const secret of [REDIS_PASSWORD, PG_PASSWORD, encodeURIComponent(REDIS_PASSWORD), encodeURIComponent(PG_PASSWORD)]) {
      expect(text).not.toContain(secret);
    }
    // Escaped inside JSON strings.
    expect(text).not.toContain('Secret-42');
  };

  beforeAll(async () => {
    redis = await startPrivateRedis({ password: REDIS_PASSWORD });
    // The shared PostgreSQL trusts local connections, so any password gets in: still a secret to keep.
    pgUrl = `postgres://postgres:${encodeURIComponent(PG_PASSWORD)}@127.0.0.1:5432/test?application_name=${appName}`;
    services = await setupServices('logs-secrets', { redisUrl: redis.url, databaseUrl: pgUrl });
    await services.migrate();
  });

  afterAll(async () => {
    await services?.cleanup();
    await redis?.stop();
  });

  const leakyEffect = defineEffect({
    name: 'leaky',
    on: 'order_placed',
    attempts: 2,
    backoff: { type: 'fixed', delay: 10 },
    async run(task) {
      // Drivers do this: an error that quotes the connection string it was given.
      if (task.id.startsWith('leak')) throw new Error(`upstream ${pgUrl} and ${redis.url} refused`);
    },
  });

  it('in a worker through failures, a Redis restart and terminated PostgreSQL connections', async () => {
    const capture = captureLines();
    const runtime = new Runtime(services.settings({ effects: [leakyEffect] }), {
      logger: createLogger({ pretty: false, level: 'debug', destination: capture.stream, secrets: [redis.url, pgUrl] }),
    });
    const worker = await startWorker(runtime);
    const effects = createEffects(
      { effects: [leakyEffect] },
      { flags: { redis: redis.url, db: pgUrl, prefix: services.prefix, schema: services.schema } },
    );
    const statusOf = async (id: string) =>
      (await services.db.withSchema(services.schema).table('ledger').where({ event_id: id }).first())?.status;
    const stored: string[] = [];
    try {
      await effects.emit('order_placed', 'leak-1');
      await waitFor(async () => (await statusOf('leak-1')) === 'failed');
      // What is stored (before the restart below wipes Redis): the job's failedReason and stack
      // trace, and the ledger's last error.
      const [row] = await services.db.withSchema(services.schema).table('ledger').where({ event_id: 'leak-1' });
      const queue = new Queue('leaky', { connection: services.redis, prefix: services.prefix });
      const job = await queue.getJob(jobIdForRow(String(row.id)));
      await queue.close();
      stored.push(String(job?.failedReason), JSON.stringify(job?.stacktrace), String(row.last_error));

      await redis.kill();
      await redis.start();
      await services.db.raw('select pg_terminate_backend(pid) from pg_stat_activity where application_name = ? and pid <> pg_backend_pid()', [appName]);
      await waitFor(async () => (await services.redis.ping()) === 'PONG');
      // emit's own insert can meet a pooled connection that was just terminated; an app retries.
      await waitFor(() => effects.emit('order_placed', 'after-restarts').then(() => true), 10_000);
      await waitFor(async () => (await statusOf('after-restarts')) === 'done', 20_000);
    } finally {
      await worker.close({ timeoutMs: 5000 });
      await effects.close();
    }
    const text = capture.raw.join('\n');
    expect(text).toContain('upstream postgres://postgres:***@127.0.0.1:5432/test');
    expectNoPassword(text);
    expect(stored).toHaveLength(3);
    expect(stored[0]).toContain('upstream postgres://postgres:***@127.0.0.1:5432/test');
    expectNoPassword(JSON.stringify(stored));
  });

  it('in every spelling a URL gives its password: as written, decoded, and in the query', () => {
    const scrub = secretScrubber([
      'postgres://u:p%21ss%2fword@db:5432/app',
      'redis://:50%off@cache:6379',
      'postgres://db/app?user=u&password=QuerySecret-1',
    ])!;
    const text = 'at postgres://u:p%21ss%2fword@db:5432/app, decoded p!ss/word, redis://:50%off@cache, ?password=QuerySecret-1';
    expect(scrub(text)).toBe('at postgres://u:***@db:5432/app, decoded ***, redis://:***@cache, ?password=***');
  });

  it('in the CLI: worker logs at debug, status, and a wrong password', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'effects-logs-'));
    writeFileSync(
      path.join(dir, 'effects.config.mjs'),
      `export default {
  effects: [{
    name: 'leaky', on: 'order_placed', attempts: 2, backoff: { type: 'fixed', delay: 10 },
    async run() {
      throw new Error('upstream ' + process.env.EFFECTS_DATABASE_URL + ' and ' + process.env.EFFECTS_REDIS_URL + ' refused');
    },
  }],
};\n`,
    );
    const env = {
      EFFECTS_REDIS_URL: redis.url,
      EFFECTS_DATABASE_URL: pgUrl,
      EFFECTS_PREFIX: `${services.prefix}_cli`,
      EFFECTS_SCHEMA: services.schema,
      EFFECTS_LOG_LEVEL: 'debug',
    };
    const effects = createEffects(
      { effects: [leakyEffect] },
      { flags: { redis: redis.url, db: pgUrl, prefix: env.EFFECTS_PREFIX, schema: services.schema } },
    );
    const worker = spawnCli(['worker'], { cwd: dir, env });
    try {
      await worker.waitForOutput(/worker started/);
      await effects.emit('order_placed', 'cli-leak');
      await worker.waitForOutput(/failed for good/);
      worker.child.kill('SIGTERM');
      expect((await worker.exited).code).toBe(0);
      expect(worker.stdout()).toContain('upstream postgres://postgres:***@');
      expectNoPassword(worker.stdout() + worker.stderr());

      const status = await runCli(['status', '--json'], { cwd: dir, env });
      expect(status.code).toBe(0);
      expectNoPassword(status.stdout + status.stderr);

      // A job failed by other code, its error stored as it came: the CLI prints it masked.
      const foreignQueue = new Queue('foreign', { connection: services.redis, prefix: env.EFFECTS_PREFIX });
      const foreign = new Worker(
        'foreign',
        async () => {
          throw new Error(`refused by ${pgUrl}`);
        },
        { connection: services.redis, prefix: env.EFFECTS_PREFIX },
      );
      try {
        const job = await foreignQueue.add('sync', { event: 'order_placed', id: 'f-1' }, { jobId: 'foreign-1' });
        await waitFor(async () => (await job.getState()) === 'failed');
      } finally {
        await foreign.close();
        await foreignQueue.close();
      }
      const list = await runCli(['poison', 'list', '--json', '--min-attempts', '1'], { cwd: dir, env });
      const show = await runCli(['poison', 'show', 'foreign', 'foreign-1'], { cwd: dir, env });
      expect(list.code).toBe(0);
      expect(show.code).toBe(0);
      expect(list.stdout).toContain('refused by postgres://postgres:***@');
      expectNoPassword(list.stdout + list.stderr + show.stdout + show.stderr);

      const wrong = await runCli(['status'], {
        cwd: dir,
        env: { ...env, EFFECTS_REDIS_URL: redis.url.replace(encodeURIComponent(REDIS_PASSWORD), 'Wrong-Secret-42') },
      });
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toContain('Cannot reach Redis at redis://:***@127.0.0.1');
      expect(wrong.stdout + wrong.stderr).not.toContain('Wrong-Secret-42');
    } finally {
      await worker.kill();
      await effects.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
