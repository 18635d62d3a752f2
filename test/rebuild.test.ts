import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineEffect, type EffectDefinition } from '../src/index.js';
import { QueueSettings } from '../src/ledger/queue-settings.js';
import { rebuild, type RebuildResult } from '../src/ops/rebuild.js';
import { listOperations } from '../src/ops/audit.js';
import { jobIdForRow, redisKeys, SCHEDULER_QUEUE } from '../src/queue/keys.js';
import { startScheduler } from '../src/scheduler/scheduler.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { sleep } from '../src/core/sleep.js';
import { deleteKeys, runCli, setupServices, waitFor, type TestServices } from './helpers.js';

/** Effects as the CLI sees them (a config file) and as the in-process worker runs them. */
const runs = new Map<string, number>();
let failNext = new Set<string>();
const count = (key: string) => runs.set(key, (runs.get(key) ?? 0) + 1);

const definitions: EffectDefinition[] = [
  defineEffect({
    name: 'send-email',
    on: 'order_placed',
    backoff: { type: 'fixed', delay: 10 },
    async run(task) {
      count(`send-email:${task.id}`);
    },
  }),
  defineEffect({
    name: 'notify-crm',
    on: 'order_placed',
    globalConcurrency: 3,
    rateLimit: { max: 500, per: '1s' },
    attempts: 1,
    async run(task) {
      count(`notify-crm:${task.id}`);
      if (failNext.delete(`notify-crm:${task.id}`)) throw new Error('CRM said 503');
    },
  }),
];

const CONFIG_SOURCE = `export default {
  worker: { lockDuration: 2000, stalledInterval: 2000 },
  effects: [
    { name: 'send-email', on: 'order_placed', backoff: { type: 'fixed', delay: 10 }, run() {} },
    { name: 'notify-crm', on: 'order_placed', globalConcurrency: 3, rateLimit: { max: 500, per: '1s' }, attempts: 1, run() {} },
  ],
};
`;

describe('rebuild', () => {
  let services: TestServices;
  let configFile: string;
  let worker: WorkerHandle | undefined;
  const config = { effects: definitions, worker: { lockDuration: 2000, stalledInterval: 2000 } };

  const cli = (args: string[]) =>
    runCli(
      ['--config', configFile, '--prefix', services.prefix, '--schema', services.schema, ...args],
      { env: { EFFECTS_REDIS_URL: services.redisUrl, EFFECTS_DATABASE_URL: services.databaseUrl } },
    );
  const ledger = () => services.db.withSchema(services.schema).table('ledger');
  /** Owes both effects for each order, as an emit `ageMs` ago would have. */
  const owe = async (ids: string[], ageMs = 60_000) => {
    const emittedAt = new Date(Date.now() - ageMs);
    return (await ledger()
      .insert(
        ids.flatMap((id) =>
          ['send-email', 'notify-crm'].map((effect) => ({ event: 'order_placed', event_id: id, effect, created_at: emittedAt, pending_since: emittedAt })),
        ),
      )
      .returning('*')) as Array<{ id: string; effect: string; event_id: string }>;
  };

  beforeAll(async () => {
    services = await setupServices('rebuild');
    await services.migrate();
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'effects-rebuild-'));
    configFile = path.join(dir, 'effects.config.mjs');
    await fs.writeFile(configFile, CONFIG_SOURCE);
  });

  afterAll(async () => {
    await worker?.close({ timeoutMs: 3000 });
    await services?.cleanup();
    if (configFile) await fs.rm(path.dirname(configFile), { recursive: true, force: true });
  });

  it('after Redis is wiped, restores every pending row exactly once, with limits and paused state, and the worker completes them', async () => {
    const orders = Array.from({ length: 60 }, (_, i) => `wipe-${i}`);
    await owe(orders);
    // A first run enqueues them and records the queues' settings; an operator pauses notify-crm.
    expect(JSON.parse((await cli(['rebuild', '--since', '1h', '--yes', '--json'])).stdout).enqueued).toBe(120);
    const runtime = services.runtime(config);
    await runtime.queues.get('notify-crm').pause();
    await new QueueSettings(services.db, services.schema).setPaused('notify-crm', true, 'test');

    await deleteKeys(services.redis, `${services.prefix}:*`);
    // The status table alone would show only zeros; the hint names the rebuild (and the prefix
    // only as the other possibility, not first as when nothing is owed).
    const shownAfterWipe = (await cli(['status'])).stdout;
    expect(shownAfterWipe).toContain(
      '120 pending ledger row(s) of notify-crm, send-email have no waiting, active or delayed job in their queue. `effects rebuild --since <when it went wrong>` queues what Redis lost',
    );
    expect(shownAfterWipe).not.toContain('None of these queues exists in Redis');

    const first = await cli(['rebuild', '--since', '1h', '--yes', '--json', '--reason', 'redis wiped']);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const result = JSON.parse(first.stdout);
    expect(result).toMatchObject({ scanned: 120, enqueued: 120, alreadyQueued: 0, redriven: 0, dryRun: false });
    expect(result.restored).toEqual([
      { queue: 'notify-crm', paused: true, globalConcurrency: 3, rateLimit: { max: 500, durationMs: 1000 } },
    ]);
    const crm = new Queue('notify-crm', { connection: services.redis, prefix: services.prefix });
    expect(await crm.isPaused()).toBe(true);
    expect(await crm.getGlobalConcurrency()).toBe(3);
    expect(await crm.getWaitingCount()).toBe(60);
    // The status table shows the limits in jobs per second, as ramps and --rate speak of them.
    expect((await cli(['status'])).stdout).toMatch(/notify-crm\s+60\s.*paused\s+conc 3, 500\/s/);

    const second = JSON.parse((await cli(['rebuild', '--since', '1h', '--yes', '--json'])).stdout);
    expect(second).toMatchObject({ scanned: 120, enqueued: 0, alreadyQueued: 120, restored: [] });
    expect(second.operationId).toMatch(/^[0-9a-f-]{36}$/);
    // A dry run records nothing, and says so with the key still there.
    const dryRun = JSON.parse((await cli(['rebuild', '--since', '1h', '--dry-run', '--json'])).stdout);
    expect(dryRun).toMatchObject({ scanned: 120, enqueued: 0, dryRun: true, operationId: null });

    await crm.resume();
    await crm.close();
    worker = await startWorker(services.runtime(config));
    await waitFor(async () => (await ledger().where({ status: 'pending' }).count('* as n'))[0].n === '0', 20_000);
    for (const id of orders) {
      expect(runs.get(`send-email:${id}`)).toBe(1);
      expect(runs.get(`notify-crm:${id}`)).toBe(1);
    }

    const [operation] = await listOperations(runtime, { command: 'rebuild', limit: 2 });
    expect(operation).toMatchObject({ command: 'rebuild', reason: null, outcome: 'ok' });
    const wiped = (await listOperations(runtime, { command: 'rebuild' })).find((o) => o.reason === 'redis wiped');
    expect(wiped?.counts).toEqual({ scanned: 120, enqueued: 120, alreadyQueued: 0, redriven: 0, markedDone: 0, failedWithoutJob: 0, failedRedriven: 0 });
  });

  it('re-drives a job that BullMQ holds as failed or completed while its ledger row is pending', async () => {
    worker ??= await startWorker(services.runtime(config));
    const runtime = services.runtime(config);
    failNext = new Set(['notify-crm:redrive-1']);
    const rows = await owe(['redrive-1'], 1000);
    const crmRow = rows.find((r) => r.effect === 'notify-crm')!;
    const emailRow = rows.find((r) => r.effect === 'send-email')!;
    await rebuild(runtime, { since: Date.now() - 5000, audit: false });
    await waitFor(async () => (await ledger().where({ id: crmRow.id }).first()).status === 'failed');
    await waitFor(async () => (await ledger().where({ id: emailRow.id }).first()).status === 'done');
    const crm = runtime.queues.get('notify-crm');
    expect(await crm.getJobState(jobIdForRow(crmRow.id))).toBe('failed');

    // The ledger says both are owed again (a replay interrupted before it re-added the jobs): neither
    // job is alive, and both finished before the rows became pending.
    await ledger().whereIn('id', [crmRow.id, emailRow.id]).update({ status: 'pending', pending_since: services.db.fn.now() });
    // The window ends at the rebuild's start, in whole milliseconds; pending_since has microseconds.
    await sleep(5);
    const result = await rebuild(runtime, { since: Date.now() - 5000, audit: false });
    expect(result).toMatchObject({ scanned: 2, enqueued: 2, redriven: 2, alreadyQueued: 0, markedDone: 0 });

    await waitFor(async () => (await ledger().whereIn('id', [crmRow.id, emailRow.id])).every((r) => r.status === 'done'));
    expect(runs.get('notify-crm:redrive-1')).toBe(2);
    expect(runs.get('send-email:redrive-1')).toBe(2);
    expect(await crm.getJobState(jobIdForRow(crmRow.id))).toBe('completed');
  });

  it('counts failed rows whose jobs Redis no longer holds, and with --include-failed owes them again', async () => {
    worker ??= await startWorker(services.runtime(config));
    const runtime = services.runtime(config);
    const orders = ['lost-1', 'lost-2', 'kept-1'];
    failNext = new Set(orders.map((id) => `notify-crm:${id}`));
    const crmRows = (await owe(orders, 1000)).filter((r) => r.effect === 'notify-crm');
    await rebuild(runtime, { since: Date.now() - 5000, audit: false });
    const statuses = async () => Object.fromEntries((await ledger().whereIn('id', crmRows.map((r) => r.id))).map((r) => [r.event_id, r.status]));
    await waitFor(async () => Object.values(await statuses()).every((status) => status === 'failed'));
    // Two of the failed jobs are gone from Redis (a wipe, or retention); the third is where replay finds it.
    const crm = runtime.queues.get('notify-crm');
    const lost = crmRows.filter((r) => r.event_id !== 'kept-1');
    for (const row of lost) await crm.remove(jobIdForRow(row.id));

    const text = (await cli(['rebuild', '--since', '1h', '--dry-run'])).stdout;
    expect(text).toContain('2 failed row(s) of the window have no job in Redis (lost with it, or removed by retention)');
    expect(text).toContain('Add --include-failed to run them again.');
    expect((await cli(['rebuild', '--since', '1h', '--include-failed', '--dry-run'])).stdout).toContain(
      'would owe 2 failed row(s) again whose jobs Redis no longer held, and enqueue them',
    );
    const plan = JSON.parse((await cli(['rebuild', '--since', '1h', '--include-failed', '--dry-run', '--json'])).stdout);
    expect(plan).toMatchObject({ failedWithoutJob: 2, failedRedriven: 2, dryRun: true });
    expect(await statuses()).toEqual({ 'lost-1': 'failed', 'lost-2': 'failed', 'kept-1': 'failed' });

    const run = await cli(['rebuild', '--since', '1h', '--include-failed', '--yes', '--json', '--reason', 'failures lost with Redis']);
    expect(JSON.parse(run.stdout)).toMatchObject({ failedWithoutJob: 2, failedRedriven: 2, dryRun: false });
    // The cause is gone this time: they run once more and are done; the one still in Redis is replay's.
    await waitFor(async () => {
      const now = await statuses();
      return now['lost-1'] === 'done' && now['lost-2'] === 'done';
    });
    expect((await statuses())['kept-1']).toBe('failed');
    expect(runs.get('notify-crm:lost-1')).toBe(2);
    expect(runs.get('notify-crm:kept-1')).toBe(1);
    expect((await ledger().whereIn('id', lost.map((r) => r.id))).map((r) => r.replay_count)).toEqual([1, 1]);
    // poison list's replay count of their jobs agrees with the ledger's.
    expect(await services.redis.hmget(redisKeys(services.prefix).replayCount('notify-crm'), ...lost.map((r) => jobIdForRow(r.id)))).toEqual(['1', '1']);
    const recorded = (await listOperations(runtime, { command: 'rebuild' })).find((o) => o.reason === 'failures lost with Redis');
    expect(recorded?.filter).toMatchObject({ includeFailed: true });
    expect(recorded?.counts).toMatchObject({ failedWithoutJob: 2, failedRedriven: 2 });
    // Nothing left for a second run.
    expect(await rebuild(runtime, { since: Date.now() - 3_600_000, includeFailed: true, audit: false })).toMatchObject({ failedWithoutJob: 0, failedRedriven: 0 });
  });

  it('marks done, without running it again, a row whose job completed after the row became pending', async () => {
    worker ??= await startWorker(services.runtime(config));
    const runtime = services.runtime(config);
    // A window of its own: rows of the other tests became pending at other times.
    const rows = await owe(['lost-mark-1'], 200_000);
    const ids = rows.map((r) => r.id);
    const window = { since: Date.now() - 205_000, until: Date.now() - 195_000 };
    await rebuild(runtime, { ...window, audit: false });
    await waitFor(async () => (await ledger().whereIn('id', ids)).every((r) => r.status === 'done'));
    const runsBefore = runs.get('send-email:lost-mark-1');

    // A worker killed before it wrote its last done-marks: the jobs completed, the rows say pending.
    await ledger().whereIn('id', ids).update({ status: 'pending', finished_at: null });
    // Just completed: the mark may be on its way, so the rows are left to their worker.
    const fresh = await rebuild(runtime, { ...window, audit: false });
    expect(fresh).toMatchObject({ scanned: 2, enqueued: 0, markedDone: 0, alreadyQueued: 2 });

    // Completed a while ago, and still no mark: it was lost.
    const keys = redisKeys(services.prefix);
    for (const row of rows) await services.redis.hset(keys.job(row.effect, jobIdForRow(row.id)), 'finishedOn', Date.now() - 10_000);
    const dry = await rebuild(runtime, { ...window, dryRun: true });
    expect(dry).toMatchObject({ scanned: 2, enqueued: 0, markedDone: 2, alreadyQueued: 0 });
    const result = await rebuild(runtime, { ...window, audit: false });
    expect(result).toMatchObject({ scanned: 2, enqueued: 0, redriven: 0, markedDone: 2, alreadyQueued: 0 });

    const settled = await ledger().whereIn('id', ids);
    expect(settled.map((r) => r.status)).toEqual(['done', 'done']);
    expect(settled.every((r) => r.finished_at !== null)).toBe(true);
    await sleep(300);
    expect(runs.get('send-email:lost-mark-1')).toBe(runsBefore);
  });

  it('refuses more than 100 jobs without a terminal unless --yes, and a dry run needs none', async () => {
    const ids = Array.from({ length: 75 }, (_, i) => `old-${i}`);
    await owe(ids, 10 * 86_400_000);
    const window = ['--since', '11d', '--until', '9d'];

    const refused = await cli(['rebuild', ...window]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/150 jobs.*--yes/s);

    const dry = await cli(['rebuild', ...window, '--dry-run', '--json']);
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout)).toMatchObject({ scanned: 150, enqueued: 150, alreadyQueued: 0, dryRun: true });

    const human = await cli(['rebuild', ...window, '--dry-run', '--rate', '50/s']);
    expect(human.stdout).toContain('scanned 150, would enqueue 150, already queued 0');
    expect(human.stdout).toContain('at 50/s this takes about 3s');
  });

  it('pages through rows that share one pending_since (one emit transaction) reading each once', async () => {
    const ids = Array.from({ length: 23 }, (_, i) => `same-ts-${i}`);
    // One statement: every row gets the same now(), to the microsecond.
    const monthAgo = () => services.db.raw(`now() - interval '30 days'`);
    await ledger().insert(
      ids.map((id) => ({ event: 'order_placed', event_id: id, effect: 'send-email', created_at: monthAgo(), pending_since: monthAgo() })),
    );
    const runtime = services.runtime(config);
    const window = { since: Date.now() - 31 * 86_400_000, until: Date.now() - 29 * 86_400_000 };
    const result = await rebuild(runtime, { ...window, pageSize: 5, dryRun: true });
    expect(result).toMatchObject({ scanned: 23, enqueued: 23, alreadyQueued: 0 });
  });

  it('paces --rate with a token bucket', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => `paced-${i}`);
    await owe(ids, 20 * 86_400_000);
    const runtime = services.runtime(config);
    const started = performance.now();
    const result = await rebuild(runtime, {
      since: Date.now() - 21 * 86_400_000,
      until: Date.now() - 19 * 86_400_000,
      rate: 100,
      audit: false,
    });
    const seconds = (performance.now() - started) / 1000;
    expect(result.enqueued).toBe(80);
    // 80 jobs at 100/s, the first chunk (5) at once: at least 0.75 s.
    expect(seconds).toBeGreaterThan(0.7);
  });

  it('status and poison list / show under a prefix that holds nothing write nothing there (a mistyped --prefix)', async () => {
    const typo = `${services.prefix}_typo`;
    const args = ['--config', configFile, '--prefix', typo, '--schema', services.schema];
    const [status, table, poison, show] = await Promise.all([
      runCli([...args, 'status', '--json']),
      runCli([...args, 'status']),
      runCli([...args, 'poison', 'list', '--json']),
      runCli([...args, 'poison', 'show', 'notify-crm', 'ledger-1']),
    ]);
    const written = await services.redis.keys(`${typo}:*`);
    await deleteKeys(services.redis, `${typo}:*`);
    expect(written).toEqual([]);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout).queues.map((q: { name: string; waiting: number }) => [q.name, q.waiting])).toEqual([
      ['notify-crm', 0],
      ['send-email', 0],
    ]);
    expect(JSON.parse(status.stdout).queues.every((q: { exists: boolean }) => !q.exists)).toBe(true);
    expect(table.stdout).toContain(`None of these queues exists in Redis under prefix "${typo}": check --prefix`);
    expect(poison.code, poison.stderr).toBe(0);
    expect(show.code).toBe(1);
    expect(show.stderr).toContain('No job "ledger-1" in queue "notify-crm"');
  });

  it('stops when interrupted, reports what it did, records it, and a re-run enqueues the rest', async () => {
    const ids = Array.from({ length: 100 }, (_, i) => `stopped-${i}`);
    await owe(ids, 40 * 86_400_000);
    const runtime = services.runtime(config);
    const window = { since: Date.now() - 41 * 86_400_000, until: Date.now() - 39 * 86_400_000 };
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    const first = await rebuild(runtime, { ...window, rate: 200, signal: controller.signal, reason: 'interrupt me' });
    expect(first.interrupted).toBe(true);
    expect(first.enqueued).toBeGreaterThan(0);
    expect(first.enqueued).toBeLessThan(200);
    expect(first.scanned).toBe(first.enqueued + first.alreadyQueued);

    const [operation] = (await listOperations(runtime, { command: 'rebuild' })).filter((o) => o.reason === 'interrupt me');
    expect(operation).toMatchObject({ outcome: 'interrupted', counts: { enqueued: first.enqueued } });

    // The worker of the first test may have finished some of the first run's jobs meanwhile: either
    // way, each row was enqueued by exactly one of the two runs.
    const second = await rebuild(runtime, { ...window, audit: false });
    expect(second.interrupted).toBe(false);
    expect(first.enqueued + second.enqueued).toBe(200);
  });

  it('says when Redis lost its data while it ran, and records the run as interrupted', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => `lost-midway-${i}`);
    await owe(ids, 50 * 86_400_000);
    const runtime = services.runtime(config);
    const window = { since: Date.now() - 51 * 86_400_000, until: Date.now() - 49 * 86_400_000 };
    let flushed = false;
    const result = await rebuild(runtime, {
      ...window,
      chunkSize: 10,
      rate: 100,
      reason: 'flushed midway',
      // As a FLUSHALL midway would take it, with everything else (not done here: the Redis is shared).
      onProgress: () => {
        if (flushed) return;
        flushed = true;
        void deleteKeys(services.redis, redisKeys(services.prefix).rebuildRun('*'));
      },
    });
    expect(result).toMatchObject({ redisLost: true, interrupted: false });
    const [operation] = (await listOperations(runtime, { command: 'rebuild' })).filter((o) => o.reason === 'flushed midway');
    expect(operation.outcome).toBe('interrupted');
    // A run that nothing disturbed says nothing.
    expect((await rebuild(runtime, { ...window, audit: false })).redisLost).toBe(false);
  });

  it.each([
    [['--since', '2099-01-01T00:00:00Z'], /in the future/],
    [['--since', '2h', '--until', '3h'], /not before --until/],
    [['--since', '1h', '--rate', '0'], /positive rate/],
    [['--since', '1h', '--effect', 'send-fax'], /Unknown effect\(s\): send-fax\. Known: send-email, notify-crm/],
    [['--since', 'yesterday'], /expected a duration before now/],
  ])('exits 2 on bad input %j', async (args, message) => {
    const result = await cli(['rebuild', ...args, '--dry-run']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stdout).toBe('');
  });
});

describe('rebuild without a config file (an operator machine after a Redis wipe)', () => {
  it('makes jobs and puts limits back as the workers last started them; the defaults only for effects no worker recorded', async () => {
    const services = await setupServices('rebuild-no-config');
    const emptyDir = await fs.mkdtemp(path.join(os.tmpdir(), 'effects-rebuild-no-config-'));
    try {
      await services.migrate();
      // A worker's start records its queues' config in the ledger database; a second start with the
      // same config writes nothing.
      const workerConfig = { effects: definitions, retention: { completedAge: '2h' } };
      await (await startWorker(services.runtime(workerConfig))).close({ timeoutMs: 1000 });
      const recordedAt = async () =>
        (await services.db.withSchema(services.schema).table('queue_settings').orderBy('queue')).map((r) => [r.queue, r.config_updated_at.getTime()]);
      const first = await recordedAt();
      await (await startWorker(services.runtime(workerConfig))).close({ timeoutMs: 1000 });
      expect(await recordedAt()).toEqual(first);
      // The record of an effect removed long ago, with nothing owed and no queue: not brought back.
      await new QueueSettings(services.db, services.schema).recordConfigs(
        new Map([['removed-effect', { attempts: 1, backoff: { type: 'fixed', delay: 1, jitter: 0 }, retention: { completedAgeMs: 1, failedAgeMs: 1 }, rateLimit: { max: 5, durationMs: 1000 } }]]),
      );
      const emittedAt = new Date(Date.now() - 60_000);
      const rows = (await services.db
        .withSchema(services.schema)
        .table('ledger')
        .insert(
          ['send-email', 'notify-crm', 'legacy-effect'].map((effect) => ({
            event: 'order_placed',
            event_id: 'no-config-1',
            effect,
            created_at: emittedAt,
            pending_since: emittedAt,
          })),
        )
        .returning(['id', 'effect'])) as Array<{ id: string; effect: string }>;
      await deleteKeys(services.redis, `${services.prefix}:*`);

      const cli = (args: string[]) =>
        runCli(['--prefix', services.prefix, '--schema', services.schema, 'rebuild', '--since', '1h', ...args], {
          cwd: emptyDir,
          env: { EFFECTS_REDIS_URL: services.redisUrl, EFFECTS_DATABASE_URL: services.databaseUrl },
        });
      // Without a config file and with no queue left in Redis, status still says what is owed.
      const status = await runCli(['--prefix', services.prefix, '--schema', services.schema, 'status'], {
        cwd: emptyDir,
        env: { EFFECTS_REDIS_URL: services.redisUrl, EFFECTS_DATABASE_URL: services.databaseUrl },
      });
      expect(status.stdout).toContain('3 pending ledger row(s) of legacy-effect, notify-crm, send-email have no waiting, active or delayed job');
      expect(status.stdout).toMatch(/legacy-effect\s+1\s+0/);
      const dryRun = await cli(['--dry-run']);
      expect(dryRun.stdout).toContain(
        'jobs of legacy-effect would get the default job options (10 attempts, exponential backoff from 1s): no config file defines these effects and no worker has recorded their config',
      );
      const run = await cli(['--yes', '--json']);
      expect(run.stderr).toBe('');
      const result = JSON.parse(run.stdout);
      expect(result).toMatchObject({ scanned: 3, enqueued: 3, defaultJobOptions: ['legacy-effect'] });
      expect(result.restored).toEqual([
        { queue: 'notify-crm', paused: false, globalConcurrency: 3, rateLimit: { max: 500, durationMs: 1000 } },
      ]);

      const runtime = services.runtime();
      const opts = async (effect: string) => {
        const row = rows.find((r) => r.effect === effect)!;
        return (await runtime.queues.get(effect).getJob(jobIdForRow(row.id)))?.opts;
      };
      expect(await opts('notify-crm')).toMatchObject({ attempts: 1, removeOnComplete: { age: 7200 } });
      expect(await opts('send-email')).toMatchObject({ attempts: 10, backoff: { type: 'fixed', delay: 10 }, removeOnComplete: { age: 7200 } });
      expect(await opts('legacy-effect')).toMatchObject({ attempts: 10, backoff: { type: 'exponential', delay: 1000 }, removeOnComplete: { age: 3600 } });
      expect(await runtime.queues.get('notify-crm').getGlobalConcurrency()).toBe(3);
      expect(await services.redis.keys(`${services.prefix}:removed-effect:*`)).toEqual([]);
    } finally {
      await services.cleanup();
      await fs.rm(emptyDir, { recursive: true, force: true });
    }
  });
});

describe('the periodic rebuild schedule', () => {
  it('stops a rebuild in progress when the scheduler is closed, rather than finishing a large window first', async () => {
    const services = await setupServices('scheduler-close');
    await services.migrate();
    const effect = defineEffect({ name: 'bulk-mail', on: 'newsletter_sent', run() {} });
    const rows = 50_000;
    await services.db.raw(
      `insert into ??.ledger (event, event_id, effect) select 'newsletter_sent', g::text, 'bulk-mail' from generate_series(1, ?) g`,
      [services.schema, rows],
    );
    const results: RebuildResult[] = [];
    const scheduler = await startScheduler(services.runtime({ effects: [effect] }), {
      everyMs: 3_600_000,
      lookbackMs: 3_600_000,
      onRebuild: (result) => results.push(result),
    });
    const queue = new Queue('bulk-mail', { connection: services.redis, prefix: services.prefix });
    try {
      await waitFor(async () => (await queue.getWaitingCount()) > 0);
      await scheduler.close();
      expect(results).toHaveLength(1);
      expect(results[0].interrupted).toBe(true);
      expect(results[0].enqueued).toBeLessThan(rows);
      // Every row it pushed has its job; the rest stay pending for the next period.
      expect(await queue.getWaitingCount()).toBe(results[0].enqueued);
    } finally {
      await queue.close();
      await services.cleanup();
    }
  });

  it('keeps the period of the scheduler started last: an older one re-checking its schedule does not reset it', async () => {
    const services = await setupServices('scheduler-every');
    await services.migrate();
    const older = await startScheduler(services.runtime(), { everyMs: 1_000, lookbackMs: 60_000 });
    const newer = await startScheduler(services.runtime(), { everyMs: 10_000, lookbackMs: 60_000 });
    try {
      // The older one checks its schedule every second.
      await sleep(2_500);
      const schedulers = await services.runtime().queues.get(SCHEDULER_QUEUE).getJobSchedulers();
      expect(schedulers.map((s) => s.every)).toEqual([10_000]);
    } finally {
      await older.close();
      await newer.close();
      await services.cleanup();
    }
  });
});
