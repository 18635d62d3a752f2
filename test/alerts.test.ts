import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PoisonAlerter } from '../src/alerts/webhook.js';
import { inspectCommand, type PoisonAlert } from '../src/alerts/poison-message.js';
import { Runtime } from '../src/core/runtime.js';
import { createEffects, defineEffect, type EffectsConfig } from '../src/index.js';
import { redisKeys } from '../src/queue/keys.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { captureLogger, setupServices, waitFor, type TestServices } from './helpers.js';

interface Received {
  path: string;
  authorization?: string;
  body: { text: string; blocks: Array<Record<string, unknown>> };
}

/** A real local webhook receiver: answers with `status()` (or never, while `hang` is set). */
async function startReceiver() {
  const received: Received[] = [];
  const state = { statuses: [] as number[], hang: false };
  const hanging: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (chunk) => (text += chunk));
    req.on('end', () => {
      received.push({ path: req.url ?? '', authorization: req.headers.authorization, body: JSON.parse(text) });
      if (state.hang) return void hanging.push(res);
      res.writeHead(state.statuses.shift() ?? 200).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    received,
    state,
    url: `http://alerts:hunter2@127.0.0.1:${port}/services/T000/B000/XSECRETX`,
    forJob: (jobId: string) => received.filter((r) => r.body.text.includes(`job ${jobId} `)),
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hanging) res.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const FAST_RETRIES = { minRetryDelayMs: 20, maxRetryDelayMs: 100 };

describe('the command an alert gives to inspect the job', () => {
  it('is one a shell runs as it is: a hash-tag or unusual prefix is quoted', () => {
    expect(inspectCommand({ prefix: 'effects', queue: 'charge-card', jobId: 'ledger-7' })).toBe('effects poison show charge-card ledger-7');
    expect(inspectCommand({ prefix: 'shop_v2', queue: 'q', jobId: 'j' })).toBe('effects poison show q j --prefix shop_v2');
    expect(inspectCommand({ prefix: '{effects}', queue: 'q', jobId: 'j' })).toBe("effects poison show q j --prefix '{effects}'");
    expect(inspectCommand({ prefix: "it's", queue: 'q', jobId: 'j' })).toBe("effects poison show q j --prefix 'it'\\''s'");
  });
});

describe('poison alerts', () => {
  let services: TestServices;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  const handles: WorkerHandle[] = [];
  const healthyRuns: string[] = [];

  const definitions = [
    defineEffect({
      name: 'charge-card',
      on: 'order_placed',
      attempts: 3,
      backoff: { type: 'fixed', delay: 10 },
      async run() {
        throw new Error('card processor said 402 for order');
      },
    }),
    defineEffect({
      name: 'send-email',
      on: 'order_placed',
      async run(task) {
        healthyRuns.push(task.id);
      },
    }),
  ];
  const config = (): Partial<EffectsConfig> => ({
    effects: definitions,
    poison: { threshold: 2 },
    alerts: { webhook: receiver.url },
    worker: { lockDuration: 2000, stalledInterval: 2000 },
  });
  const startLoggedWorker = async (options: Parameters<typeof startWorker>[1] = {}) => {
    const { lines, logger } = captureLogger();
    const handle = await startWorker(new Runtime(services.settings(config()), { logger }), { alerts: FAST_RETRIES, ...options });
    handles.push(handle);
    return { handle, lines };
  };
  const emitter = () =>
    createEffects(
      { effects: definitions },
      { flags: { redis: services.redisUrl, db: services.databaseUrl, prefix: services.prefix, schema: services.schema } },
    );
  const ledgerRow = async (event_id: string, effect: string) =>
    services.db.withSchema(services.schema).table('ledger').where({ event_id, effect }).first();

  beforeAll(async () => {
    services = await setupServices('alerts');
    await services.migrate();
    receiver = await startReceiver();
  });

  afterAll(async () => {
    await Promise.allSettled(handles.map((h) => h.close({ timeoutMs: 2000 })));
    await receiver?.close();
    await services?.cleanup();
  });

  it('posts once per job with two workers running, in a Slack-compatible body, never logging the URL secret', async () => {
    const a = await startLoggedWorker();
    const b = await startLoggedWorker();
    const effects = emitter();
    const orders = ['101', '102', '103', '104', '105', '106'];
    const { ledgerIds } = await effects.emit('order_placed', orders[0]);
    for (const id of orders.slice(1)) await effects.emit('order_placed', id);
    await effects.close();

    await waitFor(async () => (await Promise.all(orders.map((id) => ledgerRow(id, 'charge-card')))).every((r) => r.status === 'failed'));
    await waitFor(() => receiver.received.length >= orders.length);
    await new Promise((r) => setTimeout(r, 300)); // a duplicate would arrive by now
    expect(receiver.received).toHaveLength(orders.length);

    const jobId = `ledger-${ledgerIds[0]}`;
    const [first] = receiver.forJob(jobId);
    expect(first.path).toBe('/services/T000/B000/XSECRETX');
    expect(first.authorization).toBe(`Basic ${Buffer.from('alerts:hunter2').toString('base64')}`);
    expect(first.body.text).toContain('Poison pill in charge-card');
    expect(first.body.text).toContain('card processor said 402 for order');
    expect(first.body.text).toContain(`effects poison show charge-card ${jobId} --prefix ${services.prefix}`);
    const fields = (first.body.blocks.find((b) => b.type === 'section' && 'fields' in b)!.fields as Array<{ text: string }>).map((f) => f.text);
    expect(fields).toEqual(
      expect.arrayContaining([
        '*Queue*\ncharge-card',
        `*Job id*\n\`${jobId}\``,
        '*Event*\norder_placed',
        '*Id*\n`101`',
        '*Attempts*\n2 of 3 (still retrying)',
      ]),
    );

    const logged = [...a.lines, ...b.lines].join('\n');
    expect(logged).toContain('poison alert sent');
    expect(logged).toContain(`http://127.0.0.1:${receiver.port}/***`);
    expect(logged).not.toContain('XSECRETX');
    expect(logged).not.toContain('hunter2');
    expect(healthyRuns).toEqual(expect.arrayContaining(orders));
    await Promise.all([a.handle.close({ timeoutMs: 2000 }), b.handle.close({ timeoutMs: 2000 })]);
  });

  it('de-duplicates across processes: the same job alerted from two alerters posts once', async () => {
    const alert: PoisonAlert = {
      prefix: services.prefix,
      queue: 'charge-card',
      jobId: 'ledger-dup-1',
      event: 'order_placed',
      id: '7',
      attempts: 2,
      maxAttempts: 3,
      error: 'boom',
      at: Date.now(),
    };
    const one = new PoisonAlerter(services.redis, receiver.url, captureLogger().logger, FAST_RETRIES);
    const other = new PoisonAlerter(services.redis.duplicate(), receiver.url, captureLogger().logger, FAST_RETRIES);
    one.notify(alert);
    other.notify(alert);
    await Promise.all([one.close(), other.close()]);
    expect(receiver.forJob('ledger-dup-1')).toHaveLength(1);
    expect(one.stats.sent + other.stats.sent).toBe(1);
    expect(one.stats.deduplicated + other.stats.deduplicated).toBe(1);
    expect(await services.redis.pttl(redisKeys(services.prefix).alerted('charge-card', 'ledger-dup-1'))).toBeGreaterThan(3_600_000);
  });

  it('retries while the webhook is down and delivers once it is back', async () => {
    receiver.state.statuses = [503, 502, 500];
    const { lines, logger } = captureLogger();
    const alerter = new PoisonAlerter(services.redis, receiver.url, logger, FAST_RETRIES);
    alerter.notify({ prefix: services.prefix, queue: 'charge-card', jobId: 'ledger-retry-1', event: 'order_placed', id: '8', attempts: 2, maxAttempts: 3, error: 'boom', at: Date.now() });
    await alerter.close({ timeoutMs: 5000 });
    expect(receiver.forJob('ledger-retry-1')).toHaveLength(4);
    expect(alerter.stats).toMatchObject({ sent: 1, failed: 0 });
    expect(lines.filter((l) => l.includes('poison alert failed; retrying'))).toHaveLength(3);
    expect(lines.join('\n')).toContain('webhook answered HTTP 503');
  });

  it('gives up after the last retry, logs it, and lets a later poisoning alert again; a 4xx is not retried', async () => {
    receiver.state.statuses = [500, 500, 500];
    const { lines, logger } = captureLogger();
    const alerter = new PoisonAlerter(services.redis, receiver.url, logger, { ...FAST_RETRIES, retries: 2 });
    const alert = { prefix: services.prefix, queue: 'charge-card', event: 'order_placed', id: '9', attempts: 2, maxAttempts: 3, error: 'boom', at: Date.now() };
    alerter.notify({ ...alert, jobId: 'ledger-giveup-1' });
    await alerter.close();
    expect(receiver.forJob('ledger-giveup-1')).toHaveLength(3);
    expect(alerter.stats).toMatchObject({ sent: 0, failed: 1 });
    expect(lines.join('\n')).toMatch(/poison alert given up.*HTTP 500|HTTP 500.*poison alert given up/);
    expect(await services.redis.exists(redisKeys(services.prefix).alerted('charge-card', 'ledger-giveup-1'))).toBe(0);

    receiver.state.statuses = [404];
    const refused = new PoisonAlerter(services.redis, receiver.url, captureLogger().logger, FAST_RETRIES);
    refused.notify({ ...alert, jobId: 'ledger-refused-1' });
    await refused.close();
    expect(receiver.forJob('ledger-refused-1')).toHaveLength(1);
    expect(refused.stats.failed).toBe(1);
  });

  it('never holds up processing: with the webhook hanging, jobs run on and the queue of alerts stays bounded', async () => {
    receiver.state.hang = true;
    try {
      const { handle, lines } = await startLoggedWorker({ alerts: { ...FAST_RETRIES, timeoutMs: 60_000, maxQueued: 2, concurrency: 1 } });
      const effects = emitter();
      const orders = ['201', '202', '203', '204', '205'];
      for (const id of orders) await effects.emit('order_placed', id);
      await effects.close();
      // Every attempt of every poisoned job runs to its final failure, and the healthy effect completes,
      // while not a single POST has been answered.
      await waitFor(async () => (await Promise.all(orders.map((id) => ledgerRow(id, 'charge-card')))).every((r) => r.status === 'failed' && r.attempts === 3));
      await waitFor(async () => (await Promise.all(orders.map((id) => ledgerRow(id, 'send-email')))).every((r) => r.status === 'done'));
      // One POST in flight (unanswered), two queued, the other two dropped and logged.
      expect(receiver.received.filter((r) => /job ledger-\d+ \(order_placed 20\d\)/.test(r.body.text))).toHaveLength(1);
      expect(lines.filter((l) => l.includes('poison alert dropped') && l.includes('alert queue full'))).toHaveLength(2);
      const started = Date.now();
      await handle.close({ timeoutMs: 1000 });
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      receiver.state.hang = false;
    }
  });
});
