/**
 * Controlled restart: a backlog over three queues, resumed under a ramp plan and, for comparison,
 * with a naive resume().
 *
 * Two queues are effects (ledger on, `startWorker`), the third is served by a plain BullMQ Worker
 * with no config: the ramp works through BullMQ's global rate limit, so it holds both alike. Every
 * worker has high concurrency and jobs take a few ms, so without a limit the backlog goes as fast as
 * the machine allows. Completions are bucketed per second from the moment of the resume and compared
 * with what the plan allows in that second (the plan's rate integrated over it, capped by each queue's
 * backlog). The ramp is applied by a ticker in this process, the code `effects resume` and every
 * `effects scheduler` run.
 *
 * The naive side resumes the same backlog with BullMQ's resume() and the configured limits in force
 * (200/s on the effects queues, none on the plain one), which is what an operator gets without a ramp.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Queue, Worker } from 'bullmq';
import knexFactory from 'knex';
import { createEffects } from '../../src/core/effects.js';
import { Runtime } from '../../src/core/runtime.js';
import { resolveSettings } from '../../src/config/settings.js';
import { validateConfig } from '../../src/config/schema.js';
import { defineEffect } from '../../src/config/define.js';
import { migrate } from '../../src/ledger/migrate.js';
import { applyLimits, readLimits } from '../../src/queue/limits.js';
import { jobOptionsFor } from '../../src/queue/queues.js';
import { createRedis } from '../../src/queue/redis.js';
import { startRamp } from '../../src/ops/ramp.js';
import { queueEndsAt, queuePhase, rateAt, rateWindow, type RampPlan } from '../../src/ramp/plan.js';
import { startRampTicker } from '../../src/ramp/ticker.js';
import { startWorker } from '../../src/worker/worker.js';
import { deleteKeys } from '../../test/helpers.js';
import { DATABASE_URL, REDIS_URL, RESULTS_DIR, benchNamespace, progress, round, type BenchRow, type Suite } from '../lib.js';
import { svgChart } from '../svg-chart.js';

const JOBS = Number(process.env.BENCH_RAMP_JOBS ?? 5_000);
const RAMP_MS = Number(process.env.BENCH_RAMP_MS ?? 20_000);
const FROM = 10;
const TO = 200;
const CONCURRENCY = 100;
const JOB_MS = 5;
const TOLERANCE = 0.1;
const EFFECT_QUEUES = ['ramp-a', 'ramp-b'];
const RAW_QUEUE = 'ramp-plain';
const QUEUES = [...EFFECT_QUEUES, RAW_QUEUE];
const PER_QUEUE = Math.floor(JOBS / QUEUES.length);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Run {
  /** Completion times, ms since the resume, per queue. */
  completions: Map<string, number[]>;
  plan?: RampPlan;
  startAt: number;
  /** When an applier put each queue's after-ramp limits in force (epoch ms). */
  finishedAt: Map<string, number>;
  limitsAfter: Map<string, string>;
}

export const suite: Suite = {
  name: 'ramp',
  description: `${PER_QUEUE * QUEUES.length}-job backlog over ${QUEUES.length} queues, concurrency ${CONCURRENCY}: resume --ramp ${RAMP_MS / 1000}s --from ${FROM} --to ${TO} vs a naive resume()`,
  async run() {
    const { prefix, schema } = benchNamespace('ramp');
    const effects = EFFECT_QUEUES.map((name) =>
      defineEffect({
        name,
        on: `bench_${name}`,
        concurrency: CONCURRENCY,
        rateLimit: { max: TO, per: '1s' },
        run: () => sleep(JOB_MS),
      }),
    );
    const config = validateConfig({ effects, worker: { startupJitter: 0 } });
    const flags = { redis: REDIS_URL, db: DATABASE_URL, prefix, schema };
    const settings = resolveSettings(config, flags, {});
    const admin = knexFactory({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 2 } });
    const redis = createRedis({ url: REDIS_URL, cluster: false });
    const emitter = createEffects(config, { flags });
    const queues = new Map(QUEUES.map((name) => [name, new Queue(name, { connection: redis, prefix })]));

    const enqueue = async () => {
      for (const queue of queues.values()) await queue.pause();
      const rawOptions = jobOptionsFor(undefined, settings, 'x');
      const raw = queues.get(RAW_QUEUE)!;
      for (let start = 0; start < PER_QUEUE; start += 1000) {
        const n = Math.min(1000, PER_QUEUE - start);
        await raw.addBulk(
          Array.from({ length: n }, (_, i) => ({
            name: 'bench_plain',
            data: { event: 'bench_plain', id: String(start + i) },
            opts: { ...rawOptions, jobId: `plain-${start + i}` },
          })),
        );
      }
      let next = 0;
      const total = PER_QUEUE * EFFECT_QUEUES.length;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < total) {
            const n = next++;
            await emitter.emit(`bench_${EFFECT_QUEUES[n % EFFECT_QUEUES.length]}`, String(n));
          }
        }),
      );
      await waitFor(async () => {
        const counts = await Promise.all([...queues.values()].map((q) => q.getWaitingCount()));
        return counts.every((c) => c >= PER_QUEUE);
      });
    };

    const runVariant = async (kind: 'ramp' | 'naive'): Promise<Run> => {
      progress(`${kind}: enqueueing ${PER_QUEUE} jobs on each of ${QUEUES.join(', ')}`);
      await enqueue();
      const runtime = new Runtime(settings);
      if (kind === 'naive') {
        for (const effect of settings.effects) {
          await applyLimits(runtime.queues, effect.name, { concurrency: effect.globalConcurrency ?? null, rateLimit: effect.rateLimit ?? null });
        }
      }
      const handle = await startWorker(runtime, { concurrency: CONCURRENCY, startupJitterMs: 0 });
      const plain = new Worker(RAW_QUEUE, () => sleep(JOB_MS), { connection: redis, prefix, concurrency: CONCURRENCY });
      plain.on('error', () => {});
      await plain.waitUntilReady();
      const run: Run = { completions: new Map(QUEUES.map((q) => [q, []])), startAt: 0, finishedAt: new Map(), limitsAfter: new Map() };
      let done = 0;
      const record = (queue: string) => () => {
        run.completions.get(queue)!.push(Date.now());
        done += 1;
      };
      handle.workers.forEach((w) => w.on('completed', record(w.name)));
      plain.on('completed', record(RAW_QUEUE));

      let ticker: ReturnType<typeof startRampTicker> | undefined;
      if (kind === 'ramp') {
        const started = await startRamp(runtime, { queues: QUEUES, durationMs: RAMP_MS, from: FROM, to: TO, actor: 'bench' });
        run.plan = started.plan;
        run.startAt = started.plan.startAt;
        ticker = startRampTicker(runtime, {
          onTick: (tick) => tick.finished.forEach((q) => run.finishedAt.set(q, Date.now())),
        });
      } else {
        run.startAt = Date.now();
        await Promise.all([...queues.values()].map((q) => q.resume()));
      }
      await waitFor(() => done >= PER_QUEUE * QUEUES.length && (!run.plan || run.finishedAt.size === QUEUES.length), RAMP_MS * 4);
      await ticker?.stop();
      // Times since the resume (the plan's start for the ramp).
      for (const times of run.completions.values()) times.forEach((t, i) => (times[i] = t - run.startAt));
      for (const q of QUEUES) {
        const limits = await readLimits(redis, prefix, q);
        run.limitsAfter.set(q, limits.rateLimit ? `${limits.rateLimit.max}/${limits.rateLimit.durationMs}ms` : 'none');
      }
      await handle.close({ timeoutMs: 10_000 });
      await plain.close();
      for (const queue of queues.values()) await queue.obliterate({ force: true });
      await admin.withSchema(schema).table('ledger').del();
      progress(`${kind}: ${done} jobs done in ${round(Math.max(...[...run.completions.values()].flat()) / 1000, 1)} s`);
      return run;
    };

    let ramp: Run;
    let naive: Run;
    try {
      await migrate(admin, schema);
      ramp = await runVariant('ramp');
      naive = await runVariant('naive');
    } finally {
      await emitter.close();
      await Promise.allSettled([...queues.values()].map((q) => q.close()));
      await deleteKeys(redis, `${prefix}:*`);
      await admin.raw('drop schema if exists ?? cascade', [schema]);
      await admin.destroy();
      redis.disconnect();
    }

    // What the plan allows, per queue: its rate integrated over time, capped by the backlog.
    const plan = ramp.plan!;
    const planned = (t: number) => {
      let total = 0;
      for (const queue of plan.queues) {
        let jobs = 0;
        for (let s = 0; s < t; s += 10) {
          const at = plan.startAt + s + 5;
          if (queuePhase(plan, queue, at) !== 'pending') jobs += rateAt(plan, queue, at) / 100;
        }
        total += Math.min(PER_QUEUE, jobs);
      }
      return total;
    };
    const perSecond = (run: Run) => {
      const all = [...run.completions.values()].flat();
      const seconds = Math.ceil(Math.max(...all) / 1000);
      const buckets = Array.from({ length: seconds }, () => 0);
      for (const t of all) buckets[Math.min(seconds - 1, Math.floor(t / 1000))] += 1;
      return buckets;
    };
    const rampSeries = perSecond(ramp);
    const naiveSeries = perSecond(naive);
    const planSeries = rampSeries.map((_, k) => planned((k + 1) * 1000) - planned(k * 1000));
    // Seconds in which every queue still had a backlog by the plan: there the plan alone sets the pace.
    const cumulativeAt = (t: number) =>
      plan.queues.map((queue) => {
        let jobs = 0;
        for (let s = 0; s < t; s += 10) {
          const at = plan.startAt + s + 5;
          if (queuePhase(plan, queue, at) !== 'pending') jobs += rateAt(plan, queue, at) / 100;
        }
        return jobs;
      });
    const compared = planSeries
      .map((expected, k) => ({ k, expected, observed: rampSeries[k] }))
      .filter(({ k }) => cumulativeAt((k + 1) * 1000).every((jobs) => jobs < PER_QUEUE));
    const deviations = compared.map(({ expected, observed }) => (observed - expected) / expected);
    const worst = Math.max(...deviations.map(Math.abs));
    // BullMQ admits a whole window's jobs at its start, so a second can hold one window more or less
    // than the curve: allow 10%, or one window's jobs per queue where that is more (low rates).
    const windowJobs = (k: number) =>
      plan.queues.reduce((sum, q) => {
        const at = plan.startAt + k * 1000 + 500;
        return queuePhase(plan, q, at) === 'pending' ? sum : sum + rateWindow(rateAt(plan, q, at)).max;
      }, 0);
    const within = compared.filter(
      ({ k, expected, observed }) => Math.abs(observed - expected) <= Math.max(TOLERANCE * expected, windowJobs(k)),
    ).length;
    const drainedAt = (run: Run) => Math.max(...[...run.completions.values()].flat()) / 1000;
    let plannedDrain = 0;
    while (planned(plannedDrain * 1000) < PER_QUEUE * QUEUES.length && plannedDrain < 600) plannedDrain += 0.1;
    const lateness = plan.queues.map((q) => (ramp.finishedAt.get(q.name) ?? Infinity) - queueEndsAt(plan, q, Date.now()));
    const expectedAfter = new Map(QUEUES.map((q) => [q, EFFECT_QUEUES.includes(q) ? `${TO}/1000ms` : 'none']));
    const afterOk = QUEUES.every((q) => ramp.limitsAfter.get(q) === expectedAfter.get(q));

    const svgFile = path.join(RESULTS_DIR, 'ramp.svg');
    await fs.mkdir(RESULTS_DIR, { recursive: true });
    const points = (series: number[]) => series.map((y, k) => ({ x: k + 0.5, y }));
    await fs.writeFile(
      svgFile,
      svgChart(
        [
          {
            title: `resume --ramp ${RAMP_MS / 1000}s --from ${FROM} --to ${TO} (${QUEUES.length} queues, ${PER_QUEUE * QUEUES.length} jobs): completions vs plan`,
            yLabel: 'jobs completed per second',
            series: [
              { label: 'plan (per second, backlog-capped)', color: '#888', dashed: true, points: points(planSeries) },
              { label: 'ramp: completed', color: '#1f77b4', points: points(rampSeries) },
            ],
          },
          {
            title: 'the same backlog after a naive resume()',
            yLabel: 'jobs completed per second',
            series: [
              { label: 'naive resume(): completed', color: '#d62728', points: points(naiveSeries) },
              { label: 'ramp: completed', color: '#1f77b4', points: points(rampSeries) },
            ],
          },
        ],
        { xMax: Math.max(rampSeries.length, naiveSeries.length), xLabel: 'seconds after the resume' },
      ),
    );

    const rows: BenchRow[] = [
      {
        metric: 'ramp: seconds within 10% of plan (or one rate-limit window)',
        value: within,
        unit: `of ${compared.length}`,
        target: 'all',
        pass: within === compared.length,
      },
      {
        metric: 'ramp: seconds within 10% of plan, strictly',
        value: deviations.filter((d) => Math.abs(d) <= TOLERANCE).length,
        unit: `of ${compared.length}`,
      },
      { metric: 'ramp: worst per-second deviation from plan', value: round(worst * 100, 1), unit: '%' },
      {
        metric: 'ramp: mean absolute per-second deviation',
        value: round((deviations.reduce((s, d) => s + Math.abs(d), 0) / deviations.length) * 100, 1),
        unit: '%',
      },
      {
        metric: 'ramp: backlog drained after',
        value: round(drainedAt(ramp), 1),
        unit: 's',
        baseline: round(plannedDrain, 1),
        ratio: round(drainedAt(ramp) / plannedDrain, 3),
        target: 'ratio 0.9..1.1',
        pass: Math.abs(drainedAt(ramp) / plannedDrain - 1) <= TOLERANCE,
      },
      {
        metric: 'ramp: after-ramp limits in force, late by (worst queue)',
        value: Math.round(Math.max(...lateness)),
        unit: 'ms',
        target: '<= 500 ms (two ticks)',
        pass: Math.max(...lateness) <= 500,
      },
      {
        metric: 'ramp: configured limits in force at the end (none on the plain queue, as before)',
        value: afterOk ? 1 : 0,
        unit: 'bool',
        target: '= 1',
        pass: afterOk,
      },
      { metric: 'completed in the first second, ramp', value: rampSeries[0], unit: 'jobs', baseline: naiveSeries[0], ratio: round(rampSeries[0] / naiveSeries[0], 3) },
      { metric: 'peak completions per second, ramp', value: Math.max(...rampSeries), unit: 'jobs/s', baseline: Math.max(...naiveSeries) },
      { metric: 'naive resume(): backlog drained after', value: round(drainedAt(naive), 1), unit: 's' },
    ];
    const pad = (v: number | string, n = 7) => String(v).padStart(n);
    const seconds = Math.max(rampSeries.length, naiveSeries.length);
    return {
      rows,
      notes: [
        `per-second completions (all ${QUEUES.length} queues) from the resume; plan = the plan's rate integrated over the second, capped by each queue's ${PER_QUEUE}-job backlog`,
        `compared: the ${deviations.length} seconds in which every queue still had a backlog by the plan (after that, the backlog, not the ramp, sets the pace)`,
        'the ramp sets BullMQ rate limits in windows of about 200 ms, every 250 ms (the applier tick); BullMQ admits a window\'s jobs at its start and a window starts only when a worker wakes after the previous one, so windows drift a few ms late and now and then a second holds one window more or less than the curve: that is the allowance',
        `limits after: ${QUEUES.map((q) => `${q}=${ramp.limitsAfter.get(q)}`).join(', ')}`,
        `${pad('second', 6)}${pad('plan')}${pad('ramp')}${pad('naive')}`,
        ...Array.from(
          { length: seconds },
          (_, k) => `${pad(k + 1, 6)}${pad(k < planSeries.length ? Math.round(planSeries[k]) : '-')}${pad(rampSeries[k] ?? '-')}${pad(naiveSeries[k] ?? '-')}`,
        ),
      ],
      artifacts: [path.relative(process.cwd(), svgFile)],
    };
  },
};

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms`);
    await sleep(50);
  }
}
