import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEffects, defineEffect, type Effects } from '../src/index.js';
import { createLogger } from '../src/core/logger.js';
import { Runtime } from '../src/core/runtime.js';
import { jobIdForRow } from '../src/queue/keys.js';
import { pushRows, type PushableRow } from '../src/queue/push.js';
import { sleep } from '../src/core/sleep.js';
import { startWorker } from '../src/worker/worker.js';
import { runsFile, slowEffectForEmit, spawnCli, writeSlowEffectConfig, type CliProcess, type RunsFile } from './cli-process.js';
import { DATABASE_URL, REDIS_URL, captureLogger, deleteKeys, setupServices, waitFor, type TestServices } from './helpers.js';

describe('worker recovery and shutdown', () => {
  let services: TestServices;
  let dir: string;
  let runs: RunsFile;
  const processes: CliProcess[] = [];
  const emitters: Effects[] = [];
  const prefixes: string[] = [];

  beforeAll(async () => {
    services = await setupServices('worker-recovery');
    await services.migrate();
    dir = mkdtempSync(path.join(os.tmpdir(), 'effects-recovery-'));
    writeSlowEffectConfig(dir);
    runs = runsFile(dir);
  });

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.kill()));
    await Promise.allSettled(emitters.map((e) => e.close()));
    for (const prefix of prefixes) await deleteKeys(services.redis, `${prefix}:*`);
    await services?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * A lane: its own BullMQ prefix (the ledger schema is shared), so jobs a test leaves stalled do
   * not wander into the next test's workers.
   */
  function lane(name: string) {
    const prefix = `${services.prefix}_${name}`;
    prefixes.push(prefix);
    const args = ['--redis', REDIS_URL, '--db', DATABASE_URL, '--prefix', prefix, '--schema', services.schema];
    const effects = createEffects(
      { effects: slowEffectForEmit },
      { flags: { redis: REDIS_URL, db: DATABASE_URL, prefix, schema: services.schema } },
    );
    emitters.push(effects);
    return {
      effects,
      worker(blockMs: number, extra: string[] = []) {
        const child = spawnCli(['worker', ...args, ...extra], { cwd: dir, env: { BLOCK_MS: String(blockMs) } });
        processes.push(child);
        return child;
      },
    };
  }

  const row = async (id: string) =>
    (await services.db.withSchema(services.schema).table('ledger').where({ event_id: id }).first()) as
      | { id: string; status: string; attempts: number }
      | undefined;
  const pidOf = (p: CliProcess) => String(p.child.pid);
  const started = (id: string, p: CliProcess) => runs.lines().includes(`start ${id} ${pidOf(p)}`);

  it("completes a SIGKILLed worker's job in another worker after the stalled check", async () => {
    const { effects, worker } = lane('killed');
    const first = worker(60_000);
    await first.waitForOutput(/worker started/);
    await effects.emit('order_placed', 'killed');
    await waitFor(() => started('killed', first));
    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    expect((await row('killed'))?.status).toBe('pending');

    const second = worker(0);
    await waitFor(async () => (await row('killed'))?.status === 'done', 20_000);
    expect(runs.lines().filter((l) => l.includes(' killed '))).toEqual([
      `start killed ${pidOf(first)}`,
      `start killed ${pidOf(second)}`,
      `end killed ${pidOf(second)}`,
    ]);
    second.child.kill('SIGTERM');
    expect(await second.exited).toEqual({ code: 0, signal: null });
  });

  it('SIGTERM lets the job in flight finish, then exits 0', async () => {
    const { effects, worker } = lane('graceful');
    const child = worker(1500);
    await child.waitForOutput(/worker started/);
    await effects.emit('order_placed', 'graceful');
    await waitFor(() => started('graceful', child));
    child.child.kill('SIGTERM');
    expect(await child.exited).toEqual({ code: 0, signal: null });
    expect(runs.lines()).toContain(`end graceful ${pidOf(child)}`);
    expect((await row('graceful'))?.status).toBe('done');
    const stopped = child.logs().find((l) => l.msg === 'worker stopped');
    expect(stopped).toMatchObject({ drained: true });
  });

  it('with a short --shutdown-timeout exits in time, and the unfinished job is recovered later', async () => {
    const { effects, worker } = lane('deadline');
    const child = worker(60_000, ['--shutdown-timeout', '500ms']);
    await child.waitForOutput(/worker started/);
    await effects.emit('order_placed', 'deadline');
    await waitFor(() => started('deadline', child));
    const signalledAt = Date.now();
    child.child.kill('SIGTERM');
    const exit = await child.exited;
    // 500 ms of waiting, then connections closed; the bin's exit timer ends the abandoned job's process.
    expect(Date.now() - signalledAt).toBeLessThan(8000);
    expect(exit.code).toBe(0);
    expect(child.logs().some((l) => String(l.msg).startsWith('shutdown deadline passed'))).toBe(true);
    expect(child.logs().find((l) => l.msg === 'worker stopped')).toMatchObject({ drained: false });
    expect(runs.lines()).not.toContain(`end deadline ${pidOf(child)}`);
    expect((await row('deadline'))?.status).toBe('pending');

    const recovering = worker(0);
    await waitFor(async () => (await row('deadline'))?.status === 'done', 20_000);
    expect(runs.lines()).toContain(`end deadline ${pidOf(recovering)}`);
    recovering.child.kill('SIGTERM');
    expect((await recovering.exited).code).toBe(0);
  });

  it('a second SIGTERM forces the exit without waiting for the job in flight', async () => {
    const { effects, worker } = lane('forced');
    const child = worker(60_000); // the default shutdown timeout (30 s) would wait
    await child.waitForOutput(/worker started/);
    await effects.emit('order_placed', 'forced');
    await waitFor(() => started('forced', child));
    child.child.kill('SIGTERM');
    await child.waitForOutput(/shutting down/);
    const forcedAt = Date.now();
    child.child.kill('SIGTERM');
    const exit = await child.exited;
    expect(Date.now() - forcedAt).toBeLessThan(6000);
    expect(exit.code).toBe(1);
    expect(child.logs().some((l) => String(l.msg).startsWith('second signal'))).toBe(true);
    expect((await row('forced'))?.status).toBe('pending');
  });
});

describe('a done row is skipped when its job runs again', () => {
  let services: TestServices;
  let runtime: Runtime;
  let effects: Effects;
  let close: () => Promise<unknown>;
  const runs: string[] = [];
  const lines: Array<Record<string, unknown>> = [];

  const definitions = [
    defineEffect({
      name: 'once',
      on: 'order_placed',
      async run(task) {
        runs.push(task.id);
      },
    }),
  ];

  beforeAll(async () => {
    services = await setupServices('worker-skip');
    await services.migrate();
    const sink = new Writable({
      write(chunk, _encoding, done) {
        for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
        done();
      },
    });
    runtime = new Runtime(services.settings({ effects: definitions }), {
      logger: createLogger({ pretty: false, level: 'info', destination: sink }),
    });
    const handle = await startWorker(runtime);
    close = () => handle.close({ timeoutMs: 5000 });
    effects = createEffects(
      { effects: definitions },
      { flags: { redis: services.redisUrl, db: services.databaseUrl, prefix: services.prefix, schema: services.schema } },
    );
  });

  afterAll(async () => {
    await close?.();
    await effects?.close();
    await services?.cleanup();
  });

  const skipsOf = (jobId: string) => lines.filter((l) => l.msg === 'skipping' && l.jobId === jobId);

  it('after the job is removed from Redis and pushed again', async () => {
    const { ledgerIds } = await effects.emit('order_placed', 'again');
    const ledger = services.runtime().ledger;
    await waitFor(async () => (await ledger.findByIds(ledgerIds)).get(ledgerIds[0])?.status === 'done');
    expect(runs).toEqual(['again']);

    const jobId = jobIdForRow(ledgerIds[0]);
    await runtime.queues.get('once').remove(jobId);
    const [row] = await ledger.findByEvent('order_placed', 'again');
    await pushRows(runtime, [row]);
    await waitFor(() => skipsOf(jobId).length === 1);
    expect(skipsOf(jobId)[0]).toMatchObject({ reason: 'ledger row is done', effect: 'once', id: 'again' });
    expect(runs).toEqual(['again']);
  });

  it('when the row was marked done before the job ran', async () => {
    const ledger = services.runtime().ledger;
    const [row] = await ledger.owe('order_placed', 'done-first', ['once']);
    await ledger.setStatus([row.id], 'done');
    await pushRows(runtime, [row]);
    const jobId = jobIdForRow(row.id);
    await waitFor(() => skipsOf(jobId).length === 1);
    expect(runs).not.toContain('done-first');
    const job = await runtime.queues.get('once').getJob(jobId);
    expect(job?.returnvalue).toEqual({ status: 'skipped', reason: 'ledger row is done' });
  });
});

describe('graceful shutdown under load', () => {
  it('a job abandoned at the deadline ends without a word: nothing recorded, logged or counted after the worker stops', async () => {
    const services = await setupServices('shutdown-abandon');
    try {
      await services.migrate();
      const config = {
        effects: [
          defineEffect({
            name: 'slow-write',
            on: 'tick',
            async run(_task, ctx) {
              await sleep(800);
              // The connections are closed by now: this fails, as an effect's own write would.
              await ctx.db.raw('select 1');
            },
          }),
        ],
      };
      const log = captureLogger();
      const runtime = new Runtime(services.settings(config), { logger: log.logger });
      const [row] = (await services.db
        .withSchema(services.schema)
        .table('ledger')
        .insert({ event: 'tick', event_id: 'abandoned-1', effect: 'slow-write' })
        .returning(['id', 'event', 'event_id as eventId', 'effect'])) as PushableRow[];
      await pushRows(runtime, [row]);
      const worker = await startWorker(runtime, { startupJitterMs: 0 });
      const queue = services.runtime(config).queues.get('slow-write');
      await waitFor(async () => (await queue.getActiveCount()) === 1);
      expect(await worker.close({ timeoutMs: 200 })).toEqual({ drained: false });
      const atStop = log.lines.length;
      const failedAtStop = (await worker.metrics.registry.getSingleMetricAsString('effects_jobs_total'));
      await sleep(1500);
      const after = log.lines.slice(atStop).map((line) => JSON.parse(line) as { level: number; msg: string });
      expect(after.filter((line) => line.level >= 40)).toEqual([]);
      expect(await worker.metrics.registry.getSingleMetricAsString('effects_jobs_total')).toBe(failedAtStop);
      // Untouched: another worker runs it once the lock lapses.
      expect(await services.db.withSchema(services.schema).table('ledger').where({ id: row.id }).first()).toMatchObject({
        status: 'pending',
        attempts: 0,
      });
    } finally {
      await services.cleanup();
    }
  });

  it('a drained shutdown leaves no job active in Redis: none is abandoned to the stalled check', async () => {
    const services = await setupServices('shutdown-window');
    try {
      await services.migrate();
      const config = {
        effects: [defineEffect({ name: 'quick', on: 'tick', concurrency: 1, async run() { await sleep(1); } })],
      };
      const rows = (await services.db
        .withSchema(services.schema)
        .table('ledger')
        .insert(Array.from({ length: 1000 }, (_, i) => ({ event: 'tick', event_id: String(i), effect: 'quick' })))
        .returning(['id', 'event', 'event_id as eventId', 'effect'])) as PushableRow[];
      const runtime = services.runtime(config);
      await pushRows(runtime, rows);
      const queue = runtime.queues.get('quick');

      // Shut down at random moments of a busy worker's life: a fetch or a completion that brings the
      // next job back can be on its way to Redis when the worker pauses.
      const abandoned: string[] = [];
      for (let round = 0; round < 40; round++) {
        const worker = await startWorker(services.runtime(config), { startupJitterMs: 0 });
        await sleep(5 + Math.random() * 30);
        const { drained } = await worker.close({ timeoutMs: 5000 });
        expect(drained).toBe(true);
        const active = await queue.getActive();
        abandoned.push(...active.filter((job) => !abandoned.some((a) => a.endsWith(`: ${job.id}`))).map((job) => `round ${round}: ${job.id}`));
      }
      expect(abandoned).toEqual([]);
    } finally {
      await services.cleanup();
    }
  }, 60_000);
});
