import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineEffect } from '../src/index.js';
import { NotMigratedError } from '../src/core/errors.js';
import type { Runtime } from '../src/core/runtime.js';
import { listOperations } from '../src/ops/audit.js';
import { replay } from '../src/ops/replay.js';
import { jobIdForRow, redisKeys } from '../src/queue/keys.js';
import { pushRows } from '../src/queue/push.js';
import { trimReplayCounts } from '../src/queue/replay-counts.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { settleJobs, tieFailedScores } from './failed-jobs.js';
import { DATABASE_URL, REDIS_URL, ROOT, runCli, setupServices, waitFor, type TestServices } from './helpers.js';

/** The CRM is down while `crmDown` is true; every run is counted. */
let crmDown = true;
const runs = new Map<string, number>();

const definitions = [
  defineEffect({
    name: 'notify-crm',
    on: 'order_placed',
    attempts: 1,
    async run(task) {
      runs.set(task.id, (runs.get(task.id) ?? 0) + 1);
      if (crmDown) throw new Error(`CRM said 503 for order ${task.id}`);
    },
  }),
];
const config = { effects: definitions, worker: { lockDuration: 2000, stalledInterval: 2000 } };

describe('replay', () => {
  let services: TestServices;
  let runtime: Runtime;
  let worker: WorkerHandle;
  let noConfigDir: string;

  const failedCount = (queue: string) => services.redis.zcard(`${services.prefix}:${queue}:failed`);
  const replays = (queue: string) => services.redis.hgetall(redisKeys(services.prefix).replayCount(queue));
  const ledgerRows = (eventIds: string[]) =>
    services.db.withSchema(services.schema).table('ledger').whereIn('event_id', eventIds).orderBy('id');

  /** Owes notify-crm for these orders and lets the worker fail them (the CRM is down). */
  async function failOrders(ids: string[]) {
    crmDown = true;
    const rows = (await Promise.all(ids.map((id) => runtime.ledger.owe('order_placed', id, ['notify-crm'])))).flat();
    const before = await failedCount('notify-crm');
    await pushRows(runtime, rows);
    await waitFor(async () => (await failedCount('notify-crm')) >= before + ids.length);
    await waitFor(async () => (await ledgerRows(ids)).every((r) => r.status === 'failed'));
    return rows;
  }

  beforeAll(async () => {
    services = await setupServices('replay');
    await services.migrate();
    runtime = services.runtime(config);
    worker = await startWorker(services.runtime(config));
    noConfigDir = mkdtempSync(path.join(os.tmpdir(), 'effects-replay-'));
  });

  afterAll(async () => {
    await worker?.close({ timeoutMs: 3000 });
    rmSync(noConfigDir, { recursive: true, force: true });
    await services?.cleanup();
  });

  it('moves failed jobs back with attempts reset; the worker runs them; replay counts and the audit record are kept', async () => {
    const orders = ['r1', 'r2', 'r3'];
    await failOrders(orders);
    crmDown = false;
    const result = await replay(runtime, { queues: ['notify-crm'], reason: 'CRM is back', actor: 'alice', brake: { sample: 2 } });
    expect(result).toMatchObject({ matched: 3, replayed: 3, skipped: 0, dryRun: false, stopped: null });
    expect(result.brake!.verdict).toBe('passed');
    await waitFor(async () => (await ledgerRows(orders)).every((r) => r.status === 'done'));
    const rows = await ledgerRows(orders);
    expect(rows.map((r) => r.replay_count)).toEqual([1, 1, 1]);
    expect(orders.map((id) => runs.get(id))).toEqual([2, 2, 2]);
    const counts = await replays('notify-crm');
    expect(Object.values(counts)).toEqual(['1', '1', '1']);
    expect(await failedCount('notify-crm')).toBe(0);

    const [operation] = await listOperations(runtime, { command: 'replay' });
    expect(operation).toMatchObject({ id: result.operationId, actor: 'alice', reason: 'CRM is back', outcome: 'ok' });
    expect(operation.counts).toMatchObject({ matched: 3, replayed: 3, skipped: 0 });
    expect(operation.filter).toMatchObject({ queues: ['notify-crm'] });
  });

  it('drops the replay counts of jobs that no longer exist (the scheduler does, after its rebuild)', async () => {
    const before = await replays('notify-crm');
    const [gone, ...kept] = Object.keys(before);
    expect(kept.length).toBeGreaterThan(0);
    // As BullMQ's retention removes a completed job.
    await services.redis.del(redisKeys(services.prefix).job('notify-crm', gone));
    expect(await trimReplayCounts(services.redis, services.prefix, ['notify-crm', 'no-such-queue'])).toBe(1);
    expect(Object.keys(await replays('notify-crm')).sort()).toEqual(kept.sort());
    expect(await trimReplayCounts(services.redis, services.prefix, ['notify-crm'])).toBe(0);
  });

  it('stops at the brake when most of the first replayed jobs fail again, and says what it saw', async () => {
    const orders = Array.from({ length: 12 }, (_, i) => String(9000 + i));
    await failOrders(orders);
    crmDown = true; // The fix did not land: the effect is still broken.
    const result = await replay(runtime, { queues: ['notify-crm'], brake: { sample: 4, threshold: 0.5, waitMs: 10_000, pollMs: 50 } });
    expect(result.stopped).toBe('brake');
    expect(result.replayed).toBe(4);
    // The 8 it left failed matched too.
    expect(result.matched).toBe(12);
    expect(result.brake).toMatchObject({ verdict: 'tripped', size: 4, sampleTarget: 4, threshold: 0.5 });
    expect(result.brake!.failed).toBeGreaterThan(2);
    expect(result.brake!.topError).toBe('CRM said <n> for order <n>');
    // The other 8 were never touched; the 4 failed again.
    await waitFor(async () => (await failedCount('notify-crm')) === 12);
    expect(orders.filter((id) => runs.get(id) === 2)).toHaveLength(4);
    // The next dry run, where the operator decides, says that 4 of them were replayed before.
    const plan = await replay(runtime, { queues: ['notify-crm'], dryRun: true });
    expect(plan).toMatchObject({ matched: 12, replayedBefore: 4, plan: { replayedBefore: 4 } });
    const text = await runCli(['replay', '--queue', 'notify-crm', '--dry-run', '--prefix', services.prefix, '--redis', REDIS_URL, '--db', DATABASE_URL, '--schema', services.schema], { cwd: noConfigDir });
    expect(text.stdout).toContain('4 of them have been replayed before: `effects poison list` shows their replay counts');
    const [operation] = await listOperations(runtime, { command: 'replay' });
    expect(operation.outcome).toBe('interrupted');
    expect(operation.counts).toMatchObject({ matched: 12, replayed: 4, brakeSample: 4 });
  });

  it('replays each job once however far ahead --until is: jobs that fail again during the run are not taken again', async () => {
    const orders = ['u1', 'u2', 'u3', 'u4', 'u5'];
    const since = Date.now();
    const rows = await failOrders(orders);
    const ids = rows.map((r) => jobIdForRow(r.id));
    // Paced, so the first ones fail again while the run goes on; the limit bounds a run that would not end.
    const until = Date.now() + 3_600_000;
    const result = await replay(runtime, { queues: ['notify-crm'], since, until, rate: 10, limit: 20, pageSize: 2, brake: false });
    expect(result).toMatchObject({ matched: 5, replayed: 5 });
    await waitFor(async () => orders.every((id) => runs.get(id) === 2));
    expect(orders.map((id) => runs.get(id))).toEqual([2, 2, 2, 2, 2]);
    // They failed again: out of the failed set, so the tests after this one count as before.
    const queue = new Queue('notify-crm', { connection: services.redis, prefix: services.prefix });
    await waitFor(async () => (await Promise.all(ids.map((id) => queue.getJobState(id)))).every((state) => state === 'failed'));
    for (const id of ids) await queue.remove(id);
    await queue.close();
  });

  it('leaves the row of a replayed job that fails for good at once failed, not owed again', async () => {
    const orders = Array.from({ length: 300 }, (_, i) => `again-${i}`);
    const since = Date.now();
    const rows = await failOrders(orders);
    const ids = rows.map((r) => jobIdForRow(r.id));
    // Still broken: the worker fails each replayed job for good within milliseconds, while the
    // replay's ledger writes trail its moves in Redis.
    const result = await replay(runtime, { queues: ['notify-crm'], since, pageSize: 5, brake: false });
    expect(result).toMatchObject({ matched: 300, replayed: 300 });
    const queue = new Queue('notify-crm', { connection: services.redis, prefix: services.prefix });
    await waitFor(async () => (await Promise.all(ids.map((id) => queue.getJobState(id)))).every((state) => state === 'failed'));
    // Every job is failed, so no row may be pending: a pending row would be run once more by the next rebuild.
    const statuses = (await ledgerRows(orders)).map((r) => r.status);
    expect(statuses.filter((status) => status !== 'failed')).toEqual([]);
    for (const id of ids) await queue.remove(id);
    await queue.close();
  });

  it("owes again only rows written before the run began, by the database's clock", async () => {
    const rows = [...(await runtime.ledger.owe('order_placed', 'clock-1', ['notify-crm'])), ...(await runtime.ledger.owe('order_placed', 'clock-2', ['notify-crm']))];
    await runtime.ledger.recordFailures(rows.map((r) => ({ id: r.id, attempts: 1, error: 'CRM said 503', final: true })));
    const began = await runtime.ledger.now();
    await new Promise((resolve) => setTimeout(resolve, 5));
    // The second row's job was replayed and failed again before the replay's write reached it.
    await runtime.ledger.recordFailures([{ id: rows[1].id, attempts: 1, error: 'CRM said 503 again', final: true }]);
    const flipped = await runtime.ledger.setStatus(rows.map((r) => r.id), 'pending', { from: ['failed', 'pending'], updatedBy: began });
    expect([...flipped.keys()]).toEqual([rows[0].id]);
    expect((await ledgerRows(['clock-1', 'clock-2'])).map((r) => r.status)).toEqual(['pending', 'failed']);
  });

  it('forgets that a replayed job was alerted on, so a new poisoning alerts again', async () => {
    const [row] = await failOrders(['alerted-1']);
    const jobId = jobIdForRow(row.id);
    const alerted = redisKeys(services.prefix).alerted('notify-crm', jobId);
    await services.redis.set(alerted, '1', 'EX', 86_400);
    const result = await replay(runtime, { queues: ['notify-crm'], ids: [jobId], brake: false });
    expect(result.replayed).toBe(1);
    expect(await services.redis.exists(alerted)).toBe(0);
    // It fails again (the CRM is still down): out of the failed set, as the tests after this expect.
    const queue = new Queue('notify-crm', { connection: services.redis, prefix: services.prefix });
    await waitFor(async () => (await queue.getJobState(jobId)) === 'failed');
    await queue.remove(jobId);
    await queue.close();
  });

  it('waits for the brake before the next queue when the sample fills with the last jobs of one', async () => {
    const connection = { connection: services.redis, prefix: services.prefix };
    const queues = ['brake-a', 'brake-b'].map((name) => new Queue(name, connection));
    const failing = queues.map((q) => new Worker(q.name, async () => Promise.reject(new Error('down')), { ...connection, concurrency: 20 }));
    try {
      await queues[0].addBulk(Array.from({ length: 4 }, (_, i) => ({ name: 'x', data: { i } })));
      await queues[1].addBulk(Array.from({ length: 6 }, (_, i) => ({ name: 'x', data: { i } })));
      await waitFor(async () => (await queues[0].getFailedCount()) === 4 && (await queues[1].getFailedCount()) === 6);
      await Promise.all(failing.map((w) => w.close()));
      const waits: number[] = [];
      const result = await replay(runtime, {
        queues: ['brake-a', 'brake-b'],
        useLedger: false,
        brake: { sample: 4, threshold: 0.5, waitMs: 300, pollMs: 50 },
        onBrakeWait: (sample) => waits.push(sample),
      });
      expect(waits).toEqual([4]);
      expect(result.replayed).toBe(10);
      expect(result.brake?.verdict).not.toBe('all-in-sample');
    } finally {
      await Promise.all(failing.map((w) => w.close()));
      await Promise.all(queues.map((q) => q.obliterate({ force: true }).then(() => q.close())));
    }
  });

  it('plans a dry run by queue, job name and error group with the ETA at the rate, and changes nothing', async () => {
    const result = await replay(runtime, { queues: ['notify-crm'], dryRun: true, rate: 4 });
    expect(result).toMatchObject({ matched: 12, replayed: 12, skipped: 0, dryRun: true });
    expect(result.plan).toMatchObject({
      matched: 12,
      byQueue: [{ queue: 'notify-crm', count: 12 }],
      byName: [{ queue: 'notify-crm', name: 'order_placed', count: 12 }],
      etaMs: 3000,
      rate: 4,
    });
    expect(result.plan!.byError).toEqual([expect.objectContaining({ queue: 'notify-crm', error: 'CRM said <n> for order <n>', count: 12 })]);
    expect(await failedCount('notify-crm')).toBe(12);
  });

  it('refuses to run without a usable ledger unless told to go on without one', async () => {
    const unmigrated = services.runtime(config);
    Object.assign(unmigrated.settings, { schema: `${services.schema}_none` });
    await expect(replay(unmigrated, { queues: ['notify-crm'] })).rejects.toBeInstanceOf(NotMigratedError);
    await expect(replay(unmigrated, { queues: ['notify-crm'] })).rejects.toThrow(/not migrated/);
    expect(await failedCount('notify-crm')).toBe(12);
  });

  describe('on queues plain BullMQ created', () => {
    let ids: string[];

    beforeAll(async () => {
      ids = await settleJobs(
        services.prefix,
        'plain',
        Array.from({ length: 10 }, (_, n) => ({ name: n % 2 ? 'odd' : 'even', data: { n } })),
        (job) => new Error(`job ${job.data.n} broke`),
        { attempts: 3 },
      );
    });

    it('leaves each job as job.retry() with resetAttemptsMade would, and a plain worker runs it', async () => {
      const id = ids[0];
      const result = await replay(runtime, { queues: ['plain'], ids: [id], useLedger: false, brake: false });
      expect(result).toMatchObject({ matched: 1, replayed: 1, skipped: 0 });
      const key = `${services.prefix}:plain:${id}`;
      const hash = await services.redis.hgetall(key);
      for (const field of ['finishedOn', 'processedOn', 'failedReason', 'atm', 'ats']) expect(hash[field]).toBeUndefined();
      expect(JSON.parse(hash.stacktrace)).toHaveLength(3);
      expect(await services.redis.lrange(`${services.prefix}:plain:wait`, 0, -1)).toEqual([id]);
      const events = await services.redis.xrange(`${services.prefix}:plain:events`, '-', '+');
      expect(events.some(([, fields]) => fields.join(',') === `event,waiting,jobId,${id},prev,failed`)).toBe(true);

      const seen: Array<{ attemptsMade: number; attemptsStarted: number }> = [];
      const plainWorker = new Worker(
        'plain',
        async (job) => {
          seen.push({ attemptsMade: job.attemptsMade, attemptsStarted: job.attemptsStarted });
        },
        { connection: new Redis(REDIS_URL, { maxRetriesPerRequest: null }), prefix: services.prefix },
      );
      const queue = new Queue('plain', { connection: services.redis, prefix: services.prefix });
      try {
        await waitFor(async () => (await queue.getJobState(id)) === 'completed');
      } finally {
        await plainWorker.close();
        await queue.close();
      }
      expect(seen).toEqual([{ attemptsMade: 0, attemptsStarted: 1 }]);
    });

    it('filters by regular expression and never replays a job twice across runs, even through ties', async () => {
      await tieFailedScores(services.redis, services.prefix, 'plain', Date.now() - 1000);
      const first = await replay(runtime, { queues: ['plain'], grep: '"n":[0-4]\\b', limit: 2, pageSize: 3, useLedger: false, brake: false });
      expect(first).toMatchObject({ matched: 2, replayed: 2 });
      const second = await replay(runtime, { queues: ['plain'], grep: '"n":[0-4]\\b', pageSize: 3, useLedger: false, brake: false });
      // n = 0 went in the previous test; 1..4 remain, 2 of them replayed by the first run.
      expect(second).toMatchObject({ matched: 2, replayed: 2, skipped: 0 });
      const third = await replay(runtime, { queues: ['plain'], grep: '"n":[0-4]\\b', useLedger: false, brake: false });
      expect(third.matched).toBe(0);
      const counts = await replays('plain');
      expect(Object.keys(counts)).toHaveLength(5);
      expect(Object.values(counts).every((c) => c === '1')).toBe(true);
      expect(await failedCount('plain')).toBe(5);
    });

    it('replays page by page inside Redis through ties and limits, each job once', async () => {
      await settleJobs(services.prefix, 'ties', Array.from({ length: 10 }, (_, n) => ({ data: { n } })), () => new Error('x'));
      await tieFailedScores(services.redis, services.prefix, 'ties', Date.now() - 1000);
      const first = await replay(runtime, { queues: ['ties'], limit: 4, pageSize: 3, useLedger: false, brake: false });
      expect(first).toMatchObject({ matched: 4, replayed: 4, skipped: 0 });
      const rest = await replay(runtime, { queues: ['ties'], pageSize: 3, useLedger: false, brake: false });
      expect(rest).toMatchObject({ matched: 6, replayed: 6 });
      const counts = Object.values(await replays('ties'));
      expect(counts).toHaveLength(10);
      expect(counts.every((c) => c === '1')).toBe(true);
      expect(await services.redis.llen(`${services.prefix}:ties:wait`)).toBe(10);
    });

    it('goes on without a verdict when none of the sample finishes in time (no worker), and says so', async () => {
      await settleJobs(services.prefix, 'idle', Array.from({ length: 6 }, (_, n) => ({ data: { n } })), () => new Error('x'));
      const result = await replay(runtime, { queues: ['idle'], useLedger: false, brake: { sample: 2, waitMs: 200, pollMs: 50 } });
      expect(result).toMatchObject({ matched: 6, replayed: 6, stopped: null });
      expect(result.brake).toMatchObject({ verdict: 'undecided', size: 2, pending: 2, failed: 0 });
      expect(result.brake!.waitedMs).toBeGreaterThanOrEqual(200);
    });

    it('puts a prioritized job back in the prioritized set, as BullMQ would', async () => {
      const [id] = await settleJobs(services.prefix, 'prio', [{ data: { n: 1 }, opts: { priority: 3 } }], () => new Error('no'));
      await replay(runtime, { queues: ['prio'], useLedger: false, brake: false });
      expect(await services.redis.zscore(`${services.prefix}:prio:prioritized`, id)).not.toBeNull();
      expect(await services.redis.llen(`${services.prefix}:prio:wait`)).toBe(0);
    });
  });

  describe('CLI', () => {
    const cli = (...args: string[]) =>
      runCli([...args, '--prefix', services.prefix, '--redis', REDIS_URL, '--db', DATABASE_URL, '--schema', services.schema], {
        cwd: noConfigDir,
      });

    it('prints the JSON shape of DESIGN.md', async () => {
      const { code, stdout, stderr } = await cli('replay', '--queue', 'plain', '--grep', 'job 5 ', '--json', '--no-brake');
      expect(stderr).toBe('');
      expect(code).toBe(0);
      const body = JSON.parse(stdout);
      expect(body).toMatchObject({ matched: 1, replayed: 1, skipped: 0, dryRun: false });
      expect(body.operationId).toEqual(expect.any(String));
    });

    it('says that a replay small enough to fit the brake sample waited for nothing, not that it went cleanly', async () => {
      const { code, stdout } = await cli('replay', '--queue', 'plain', '--grep', 'job 6 ');
      expect(code).toBe(0);
      expect(stdout).toContain('brake: every match fitted in the sample, so nothing was held back or waited for; 0 failed again, 0 succeeded; 1 not finished yet');
    });

    it('needs --yes above 100 jobs without a terminal, and exits 2 saying so', async () => {
      await settleJobs(services.prefix, 'many', Array.from({ length: 101 }, (_, n) => ({ data: { n } })), () => new Error('x'));
      const refused = await cli('replay', '--queue', 'many');
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/would replay 101 jobs.*Pass --yes/s);
      expect(await failedCount('many')).toBe(101);
      const dry = await cli('replay', '--queue', 'many', '--dry-run', '--rate', '50/s');
      expect(dry.code).toBe(0);
      expect(dry.stdout).toMatch(/would replay 101 failed jobs/);
      expect(dry.stdout).toMatch(/at 50\/s this takes about 2s/);
    });

    it('exits 2 on bad input, saying what was expected', async () => {
      const cases: Array<[string[], RegExp]> = [
        [['--rate', '0'], /expected a positive rate/],
        [['--grep', '(x'], /Invalid --grep/],
        [['--since', '2999-01-01T00:00:00Z'], /--since is in the future/],
        [['--since', '10m', '--until', '1h'], /--since .* is not before --until/],
        [['--queue', 'nope'], /Unknown queue\(s\): nope\. Expected one of: /],
        [['--brake-threshold', '2'], /expected a share above 0 and below 1/],
        [['--error-group', 'xyz'], /Invalid --error-group/],
      ];
      const results = await Promise.all(cases.map(([args]) => cli('replay', ...args, '--dry-run')));
      cases.forEach(([args, message], i) => {
        expect({ args, code: results[i].code }).toEqual({ args, code: 2 });
        expect(results[i].stderr).toMatch(message);
      });
    });

    it('stops cleanly on Ctrl-C, reports what it did, and a re-run continues without replaying anything twice', async () => {
      const args = ['replay', '--queue', 'many', '--rate', '40/s', '--yes', '--json', '--no-brake', '--no-ledger'];
      const child = spawn(
        process.execPath,
        [path.join(ROOT, 'bin/effects.js'), ...args, '--prefix', services.prefix, '--redis', REDIS_URL],
        { cwd: noConfigDir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } },
      );
      let stdout = '';
      child.stdout.on('data', (d) => (stdout += d));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      await waitFor(async () => (await services.redis.llen(`${services.prefix}:many:wait`)) >= 10);
      child.kill('SIGINT');
      expect(await exited).toBe(1);
      const first = JSON.parse(stdout);
      expect(first.stopped).toBe('interrupted');
      expect(first.replayed).toBeGreaterThanOrEqual(10);
      expect(first.replayed).toBeLessThan(101);
      expect(await failedCount('many')).toBe(101 - first.replayed);

      const rest = await cli('replay', '--queue', 'many', '--yes', '--json', '--no-brake', '--no-ledger');
      expect(rest.code).toBe(0);
      expect(JSON.parse(rest.stdout)).toMatchObject({ replayed: 101 - first.replayed, stopped: null });
      const counts = Object.values(await replays('many'));
      expect(counts).toHaveLength(101);
      expect(counts.every((c) => c === '1')).toBe(true);
    });
  });
});
