import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEffects, defineEffect, type Effects } from '../src/index.js';
import { pushRows } from '../src/queue/push.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { spawnCli, writeSlowEffectConfig } from './cli-process.js';
import { DATABASE_URL, REDIS_URL, setupServices, waitFor, type TestServices } from './helpers.js';
import { freePort } from './servers.js';

/** The value of one sample in Prometheus text format, or undefined when it is absent. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(match[3]);
  }
  return undefined;
}

describe('worker metrics', () => {
  let services: TestServices;
  let worker: WorkerHandle;
  let effects: Effects;
  let base: string;

  const definitions = [
    defineEffect({
      name: 'metered',
      on: 'order_placed',
      attempts: 1,
      async run(task) {
        if (task.id === 'broken') throw new Error('always broken');
      },
    }),
  ];

  beforeAll(async () => {
    services = await setupServices('metrics');
    await services.migrate();
    worker = await startWorker(services.runtime({ effects: definitions }), { metricsPort: 0 });
    base = `http://127.0.0.1:${(worker.metricsServer!.address() as AddressInfo).port}`;
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

  it('counts jobs by effect and outcome, times them, and reports queue depths', async () => {
    const ledger = services.runtime().ledger;
    const emitted = await Promise.all(['ok-1', 'ok-2', 'broken'].map((id) => effects.emit('order_placed', id)));
    // A row already done: its job is skipped.
    const [doneRow] = await ledger.owe('order_placed', 'already-done', ['metered']);
    await ledger.setStatus([doneRow.id], 'done');
    await pushRows(services.runtime({ effects: definitions }), [doneRow]);
    // A delayed job shows in the depth gauge.
    await services.runtime({ effects: definitions }).queues.get('metered').add('order_placed', { event: 'order_placed', id: 'later' }, { delay: 60_000 });
    await waitFor(async () => {
      const rows = await ledger.findByIds(emitted.flatMap((e) => e.ledgerIds));
      return [...rows.values()].every((r) => r.status !== 'pending');
    });

    let text = '';
    await waitFor(async () => {
      const response = await fetch(`${base}/metrics`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toContain('text/plain');
      text = await response.text();
      return sample(text, 'effects_jobs_total', { effect: 'metered', outcome: 'skipped' }) === 1;
    });
    const jobs = (outcome: string) => sample(text, 'effects_jobs_total', { effect: 'metered', outcome });
    expect([jobs('done'), jobs('skipped'), jobs('failed')]).toEqual([2, 1, 1]);
    expect(sample(text, 'effects_job_duration_seconds_count', { effect: 'metered', outcome: 'done' })).toBe(2);
    expect(sample(text, 'effects_job_duration_seconds_bucket', { effect: 'metered', outcome: 'done', le: '+Inf' })).toBe(2);
    expect(sample(text, 'effects_job_duration_seconds_count', { effect: 'metered', outcome: 'failed' })).toBe(1);
    expect(sample(text, 'effects_queue_jobs', { queue: 'metered', state: 'delayed' })).toBe(1);
    expect(sample(text, 'effects_queue_jobs', { queue: 'metered', state: 'failed' })).toBe(1);
    expect(sample(text, 'effects_queue_jobs', { queue: 'metered', state: 'waiting' })).toBe(0);
    expect(text).toContain('# HELP effects_jobs_total');
    // Every mark is written within milliseconds of its job: none stays held.
    await waitFor(async () => sample(await (await fetch(`${base}/metrics`)).text(), 'effects_done_marks_held', {}) === 0);
  });

  it('answers /healthz with 200 while a worker waits out its start-up jitter', async () => {
    const waiting = await startWorker(services.runtime({ effects: definitions }), { metricsPort: 0, startupJitterMs: 600_000 });
    try {
      expect(waiting.workers.every((w) => !w.isRunning())).toBe(true);
      const health = await fetch(`http://127.0.0.1:${(waiting.metricsServer!.address() as AddressInfo).port}/healthz`);
      expect(health.status).toBe(200);
    } finally {
      await waiting.close({ timeoutMs: 1000 });
    }
  });

  it('fails to start on a metrics port in use, and then takes no job', async () => {
    // An effect of its own, so that only the worker whose start failed could take its job.
    const unstarted = defineEffect({ name: 'unstarted', on: 'invoice_sent', run() {} });
    const taken = (worker.metricsServer!.address() as AddressInfo).port;
    await expect(startWorker(services.runtime({ effects: [unstarted] }), { metricsPort: taken })).rejects.toThrow(/EADDRINUSE/);
    const emitter = createEffects(
      { effects: [unstarted] },
      { flags: { redis: services.redisUrl, db: services.databaseUrl, prefix: services.prefix, schema: services.schema } },
    );
    try {
      await emitter.emit('invoice_sent', 'after-failed-start');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const rows = await services.runtime().ledger.findByEvent('invoice_sent', 'after-failed-start');
      expect(rows.map((r) => r.status)).toEqual(['pending']);
    } finally {
      await emitter.close();
    }
  });

  it('answers /healthz with 200 while the worker runs, and 404 elsewhere', async () => {
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ ok: true });
    const other = await fetch(`${base}/nope`);
    expect(other.status).toBe(404);
  });
});

describe('effects worker --metrics-port', () => {
  it('serves /healthz and /metrics from the CLI process', async () => {
    const services = await setupServices('metrics-cli');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'effects-metrics-'));
    writeSlowEffectConfig(dir);
    const port = await freePort();
    const args = ['--redis', REDIS_URL, '--db', DATABASE_URL, '--prefix', services.prefix, '--schema', services.schema];
    await services.migrate();
    const child = spawnCli(['worker', ...args, '--metrics-port', String(port)], { cwd: dir });
    try {
      await child.waitForOutput(/worker started/);
      // Healthy once its queues run (a startup delay may come first).
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200, 10_000);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toContain('effects_queue_jobs{queue="slow",state="waiting"} 0');
      child.child.kill('SIGTERM');
      expect((await child.exited).code).toBe(0);
    } finally {
      await child.kill();
      await services.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
