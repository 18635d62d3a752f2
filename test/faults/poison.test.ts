import { Queue } from 'bullmq';
import { afterAll, describe, expect, it } from 'vitest';
import { setupServices, waitFor, type TestServices } from '../helpers.js';
import {
  createAppTables,
  createEmitter,
  effectOptions,
  FAST_WORKER,
  placeOrders,
  readOracle,
  reportRow,
  rowFrom,
  startWebhook,
  Supervisor,
  waitForSettled,
  writeConfig,
  type Oracle,
  type Webhook,
} from './harness.js';

const ATTEMPTS = 4;
const THRESHOLD = 3;
const ORDERS = 250;
const POISON_EFFECT = 'sync-loyalty-points';

interface Run {
  oracle: Oracle;
  /** Healthy effects' ledger rows done per second, first to last finish. */
  healthyRate: number;
  poisonRows: Array<{ id: string; status: string; attempts: number }>;
  /** BullMQ's view of each poison job: state and attempts made. */
  poisonJobs: Array<{ state: string; attemptsMade: number }>;
  /** Poison log lines per job id. */
  poisonLines: Map<string, number>;
  /** Alerts the webhook accepted, per job id. */
  alerts: Map<string, number>;
  unexpectedExits: number;
}

/**
 * A job that always throws must cost its configured attempts and no more, end `failed` in the
 * ledger, be reported once, and leave the other effects running at speed. The loyalty effect of the
 * example app has the bug; with `buggyEvery: 1` it throws for every order (one job in ten).
 */
describe('scenario 5: poison pills', () => {
  const services: TestServices[] = [];
  let webhook: Webhook;

  afterAll(async () => {
    for (const s of services) await s.cleanup();
    await webhook?.close();
  });

  /** The alerts of one run: the webhook is shared, the prefix in the message tells them apart. */
  const alertsOf = (prefix: string) =>
    webhook.requests.filter((r) => r.status === 200 && String((r.body as { text?: string }).text).endsWith(`--prefix ${prefix}`));

  interface Prepared {
    name: string;
    buggyEvery: number;
    measure(): Promise<Run>;
  }

  /**
   * A fresh namespace with its worker process started and idle, so that the timed part of a run is
   * only: a burst of orders, and the worker working it off.
   */
  async function prepare(name: string, buggyEvery: number): Promise<Prepared> {
    const s = await setupServices(name);
    services.push(s);
    await s.migrate();
    const appSchema = `${s.schema}_app`;
    await createAppTables(s.db, appSchema);
    const processConfig = {
      redis: s.redisUrl,
      database: s.databaseUrl,
      prefix: s.prefix,
      schema: s.schema,
      poison: { threshold: THRESHOLD },
      alerts: { webhook: webhook.url },
      worker: FAST_WORKER,
    };
    const options = effectOptions(appSchema, { buggyEvery, attempts: ATTEMPTS, failureRate: 0 });
    const config = writeConfig(processConfig, options);
    const effects = createEmitter(processConfig, options);
    const supervisor = new Supervisor({ config: config.path });
    await supervisor.start();

    const measure = async (): Promise<Run> => {
      try {
        // The whole backlog first (queues paused), then the worker works it off: the rate measured is
        // the worker's, not the emitter's.
        const queues = [...effects.runtime.effectsByName.keys()].map((q) => effects.runtime.queues.get(q));
        await Promise.all(queues.map((q) => q.pause()));
        await placeOrders(s.db, effects, appSchema, ORDERS);
        await Promise.all(queues.map((q) => q.resume()));
        await waitForSettled(s.db, s.schema, 60_000);
        // Alerts go out off the job's path: give the last ones a moment.
        const expected = buggyEvery === 1 ? ORDERS : 0;
        await waitFor(() => alertsOf(s.prefix).length >= expected, 15_000).catch(() => undefined);
        await supervisor.stop();
        const [{ n, seconds }] = (
          await s.db.raw(
            `select count(*)::int as n, extract(epoch from max(finished_at) - min(finished_at))::float as seconds
               from ??.ledger where status = 'done' and effect <> ?`,
            [s.schema, POISON_EFFECT],
          )
        ).rows as Array<{ n: number; seconds: number }>;
        const poisonRows = (await s.db
          .withSchema(s.schema)
          .table('ledger')
          .where({ effect: POISON_EFFECT })
          .whereNot('status', 'done')
          .select('id', 'status', 'attempts')) as Run['poisonRows'];
        const queue = new Queue(POISON_EFFECT, { connection: s.redis, prefix: s.prefix });
        const poisonJobs = await Promise.all(
          poisonRows.map(async (row) => {
            const job = await queue.getJob(`ledger-${row.id}`);
            return { state: String(await job?.getState()), attemptsMade: job?.attemptsMade ?? -1 };
          }),
        );
        await queue.close();
        const poisonLines = new Map<string, number>();
        for (const record of supervisor.logRecords()) {
          if (String(record.msg).startsWith('poison pill') && record.effect === POISON_EFFECT) {
            poisonLines.set(String(record.jobId), (poisonLines.get(String(record.jobId)) ?? 0) + 1);
          }
        }
        const oracle = await readOracle(s.db, {
          schema: s.schema,
          appSchema,
          expectFailed: (row) => row.effect === POISON_EFFECT && Number(row.eventId) % buggyEvery === 0,
        });
        const alerts = new Map<string, number>();
        for (const request of alertsOf(s.prefix)) {
          const jobId = /job (\S+) /.exec(String((request.body as { text?: string }).text))?.[1] ?? '?';
          alerts.set(jobId, (alerts.get(jobId) ?? 0) + 1);
        }
        return {
          oracle,
          alerts,
          healthyRate: n / Math.max(seconds, 0.001),
          poisonRows,
          poisonJobs,
          poisonLines,
          unexpectedExits: supervisor.unexpectedExits.length,
        };
      } finally {
        await supervisor.stop();
        await effects.close();
        await s.db.raw('drop schema if exists ?? cascade', [appSchema]);
        config.remove();
      }
    };
    return { name, buggyEvery, measure };
  }

  it('a job that always throws: exactly its attempts, failed in the ledger, reported once; the others keep their pace', async () => {
    webhook = await startWebhook();
    const runs = await Promise.all(
      [0, 1].flatMap((round) => [
        prepare(`faults-poison-clean-${round}`, Number.MAX_SAFE_INTEGER),
        prepare(`faults-poison-${round}`, 1),
      ]),
    );
    // Alternate runs without and with the poison effect, so a noisy neighbour hits both alike.
    const clean: Run[] = [];
    const poisoned: Run[] = [];
    for (const prepared of runs) {
      const result = await prepared.measure();
      (prepared.buggyEvery === 1 ? poisoned : clean).push(result);
    }
    const mean = (runs: Run[]) => runs.reduce((sum, r) => sum + r.healthyRate, 0) / runs.length;
    const ratio = mean(poisoned) / mean(clean);
    const last = poisoned[poisoned.length - 1];
    const poisonJobs = poisoned.reduce((sum, r) => sum + r.poisonRows.length, 0);
    reportRow(
      rowFrom(
        '5 poison pills',
        last.oracle,
        null,
        `poison jobs ${poisonJobs} (1 in 10); healthy done/s ${mean(clean).toFixed(0)} clean vs ` +
          `${mean(poisoned).toFixed(0)} poisoned, ratio ${ratio.toFixed(2)}; alerts ${webhook.requests.length}`,
      ),
    );

    for (const r of poisoned) {
      expect(r.oracle.lost, JSON.stringify(r.oracle.lostSample)).toBe(0);
      expect(r.poisonRows).toHaveLength(ORDERS);
      expect(new Set(r.poisonRows.map((row) => `${row.status}/${row.attempts}`))).toEqual(new Set([`failed/${ATTEMPTS}`]));
      expect(new Set(r.poisonJobs.map((job) => `${job.state}/${job.attemptsMade}`))).toEqual(new Set([`failed/${ATTEMPTS}`]));
      // One error line per poison job: at the attempt that reached the threshold.
      expect(r.poisonLines.size).toBe(ORDERS);
      expect(new Set(r.poisonLines.values())).toEqual(new Set([1]));
      // ...and one alert per poison job, for exactly those jobs.
      expect([...r.alerts.keys()].sort()).toEqual([...r.poisonLines.keys()].sort());
      expect(new Set(r.alerts.values())).toEqual(new Set([1]));
      expect(r.unexpectedExits).toBe(0);
    }
    for (const r of clean) {
      expect(r.oracle.lost).toBe(0);
      expect(r.alerts.size).toBe(0);
    }
    // The figure to watch is the ratio in the row (target: above 0.9). Asserted loosely, since a
    // shared two-core machine swings more than that between runs.
    expect(ratio).toBeGreaterThan(0.5);
  });
});
