import { afterAll, describe, expect, it } from 'vitest';
import { setupServices, waitFor, type TestServices } from '../helpers.js';
import {
  createAppTables,
  createEmitter,
  doneRate,
  effectOptions,
  FAST_WORKER,
  readOracle,
  reportRow,
  rowFrom,
  sleep,
  startLoad,
  startWebhook,
  Supervisor,
  waitForSettled,
  writeConfig,
  type FaultConfig,
  type Webhook,
} from './harness.js';

const POISON_EFFECT = 'sync-loyalty-points';
const DOWN_MS = 4000;

/**
 * The alert receiver answers 503 for a while, under load with poison pills: the alerts are retried
 * until it is back (one accepted per poison job, no more), and the jobs never wait for them.
 */
describe('scenario 6: the alert webhook down', () => {
  let services: TestServices;
  let webhook: Webhook;
  let config: FaultConfig;
  let supervisor: Supervisor;
  let appSchema: string;

  afterAll(async () => {
    await supervisor?.stop();
    await webhook?.close();
    await services?.db.raw('drop schema if exists ?? cascade', [appSchema]);
    config?.remove();
    await services?.cleanup();
  });

  it('alerts are retried until the webhook is back; processing goes on at its pace meanwhile', async () => {
    services = await setupServices('faults-webhook');
    await services.migrate();
    appSchema = `${services.schema}_app`;
    await createAppTables(services.db, appSchema);
    webhook = await startWebhook(503);
    const processConfig = {
      redis: services.redisUrl,
      database: services.databaseUrl,
      prefix: services.prefix,
      schema: services.schema,
      // Above the effects' attempts: each poison job is reported at its last attempt.
      poison: { threshold: 5 },
      alerts: { webhook: webhook.url },
      worker: FAST_WORKER,
    };
    // Every 4th order's loyalty effect is a poison pill, failed for good at its 3rd attempt.
    const options = effectOptions(appSchema, { buggyEvery: 4, attempts: 3, failureRate: 0 });
    config = writeConfig(processConfig, options);
    supervisor = new Supervisor({ config: config.path });
    await supervisor.start();
    const effects = createEmitter(processConfig, options);

    const downFrom = Date.now();
    const load = startLoad({ db: services.db, effects, appSchema, perSecond: 20 });
    await sleep(DOWN_MS);
    const downUntil = Date.now();
    webhook.respondWith(200);
    await sleep(DOWN_MS);
    const stats = await load.stop();
    const upUntil = Date.now();
    await effects.close();
    await waitForSettled(services.db, services.schema, 30_000);

    const [{ count }] = await services.db
      .withSchema(services.schema)
      .table('ledger')
      .where({ effect: POISON_EFFECT, status: 'failed' })
      .count<{ count: string }[]>('* as count');
    const poisonJobs = Number(count);
    const accepted = () => webhook.requests.filter((r) => r.status === 200);
    // Retries back off (1 s, 2 s, 4 s, ...): the last refused alert comes back within ~10 s.
    await waitFor(() => accepted().length >= poisonJobs, 20_000).catch(() => undefined);
    const jobOf = (r: { body: unknown }) => /job (\S+) /.exec(String((r.body as { text?: string }).text))?.[1] ?? '?';
    const perJob = new Map<string, number>();
    for (const r of accepted()) perJob.set(jobOf(r), (perJob.get(jobOf(r)) ?? 0) + 1);
    const refusedJobs = new Set(webhook.requests.filter((r) => r.status === 503).map(jobOf));
    const refused = refusedJobs.size;
    // Recovery: from the webhook's return until the last alert it had refused got through.
    const lastMadeUp = Math.max(...accepted().filter((r) => refusedJobs.has(jobOf(r))).map((r) => r.at));
    const effectNames = [...effects.runtime.effectsByName.keys()].filter((n) => n !== POISON_EFFECT);
    const rateDown = await doneRate(services.db, services.schema, downFrom + 1000, downUntil, effectNames);
    const rateUp = await doneRate(services.db, services.schema, downUntil + 1000, upUntil, effectNames);
    const oracle = await readOracle(services.db, {
      schema: services.schema,
      appSchema,
      expectFailed: (row) => row.effect === POISON_EFFECT && Number(row.eventId) % 4 === 0,
    });
    reportRow(
      rowFrom(
        '6 alert webhook down',
        oracle,
        lastMadeUp - downUntil,
        `poison jobs ${poisonJobs}; alerts refused while down ${refused} (${webhook.requests.length - accepted().length} POSTs), ` +
          `accepted ${accepted().length}; ` +
          `healthy done/s while down ${rateDown.toFixed(0)}, after ${rateUp.toFixed(0)}`,
      ),
    );

    expect(stats.committed).toBeGreaterThan(0);
    expect(poisonJobs).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
    // Every poison job alerted exactly once, the ones refused while the webhook was down included.
    expect([...refusedJobs].every((jobId) => perJob.get(jobId) === 1)).toBe(true);
    expect(perJob.size).toBe(poisonJobs);
    expect(new Set(perJob.values())).toEqual(new Set([1]));
    expect(oracle.lost, JSON.stringify(oracle.lostSample)).toBe(0);
    expect(supervisor.unexpectedExits).toEqual([]);
    // Loose on purpose (a shared two-core machine); the figures are in the row.
    expect(rateDown).toBeGreaterThan(rateUp * 0.5);
  });
});
