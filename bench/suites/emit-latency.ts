/**
 * What the endpoint pays: `emit` with ten subscribed effects inside the order's transaction,
 * against an inline endpoint that calls the ten effects itself.
 *
 * The emit endpoint is the example app's: one transaction inserts an order and emits
 * `order_placed`; ten effects subscribe, so each call writes one order and ten ledger rows and, after
 * commit, pushes ten thin jobs. Calls run one after another (latency, not throughput). After each
 * call the suite also waits, untimed, until all ten jobs exist in Redis, and records how long after
 * the commit that was.
 *
 * The inline endpoint inserts the same order, then calls ten simulated third parties of 30 ms each,
 * one after another and (a second variant) all at once with Promise.all; each call fails
 * transiently with probability 0.5%, which fails the request. Inline calls mostly wait on timers, so
 * they run ten at a time (the pool's size, so none waits for a connection) to keep the suite short.
 */
import knexFactory, { type Knex } from 'knex';
import { pino } from 'pino';
import type { Effects } from '../../src/index.js';
import { createAppTables } from '../../examples/orders/app.js';
import { deleteKeys } from '../../test/helpers.js';
import { DATABASE_URL, REDIS_URL, benchNamespace, percentile, progress, round, type BenchRow, type Suite } from '../lib.js';
import { effects as api, keys, redisConnections } from '../package.js';

const CALLS = Number(process.env.BENCH_EMIT_CALLS ?? 2000);
const INLINE_CALLS = Number(process.env.BENCH_INLINE_CALLS ?? 2000);
/** The sequential variant takes 300+ ms a call: fewer calls keep the suite under a minute. */
const INLINE_SEQUENTIAL_CALLS = Number(process.env.BENCH_INLINE_SEQUENTIAL_CALLS ?? 500);
const WARMUP = 100;
const EFFECT_COUNT = 10;
const EFFECT_MS = 30;
const FAILURE_RATE = 0.005;
/** As many callers as the pool has connections, so no inline call waits for a connection. */
const INLINE_PARALLELISM = 10;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One simulated third-party call: 30 ms, and a 0.5% chance of a transient error. */
async function thirdParty(): Promise<void> {
  await sleep(EFFECT_MS);
  if (Math.random() < FAILURE_RATE) throw new Error('upstream returned 503');
}

async function insertOrder(db: Knex | Knex.Transaction, schema: string): Promise<string> {
  const [order] = await db.withSchema(schema).table('orders').insert({ customer: 'bench', total_cents: 1999 }).returning('id');
  return String(order.id);
}

interface Timing {
  ms: number;
  failed: boolean;
}

/** Runs `call` `count` times, `parallelism` at a time, and times each one. */
async function timeCalls(count: number, parallelism: number, call: () => Promise<void>): Promise<Timing[]> {
  const timings: Timing[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: parallelism }, async () => {
      while (next < count) {
        next += 1;
        const started = performance.now();
        let failed = false;
        await call().catch(() => {
          failed = true;
        });
        timings.push({ ms: performance.now() - started, failed });
      }
    }),
  );
  return timings;
}

const summary = (timings: Timing[]) => {
  const ok = timings.filter((t) => !t.failed).map((t) => t.ms);
  return {
    p50: percentile(ok, 50),
    p99: percentile(ok, 99),
    failureRate: timings.filter((t) => t.failed).length / timings.length,
  };
};

export const suite = {
  name: 'emit-latency',
  description: `emit with ${EFFECT_COUNT} subscribed effects in the order's transaction vs calling them inline (${EFFECT_MS} ms each)`,
  async run() {
    const { prefix, schema } = benchNamespace('emit-latency');
    const db = knexFactory({ client: 'pg', connection: DATABASE_URL, pool: { min: 1, max: 10 } });
    const redis = redisConnections.createRedis({ url: REDIS_URL, cluster: false });
    const definitions = Array.from({ length: EFFECT_COUNT }, (_, i) =>
      api.defineEffect({ name: `bench-effect-${i + 1}`, on: 'order_placed', run() {} }),
    );
    // The app's own knex and a production-like logger: `scheduling` at info, written to /dev/null.
    const logger = api.createLogger({
      level: 'info',
      pretty: false,
      destination: pino.destination({ dest: '/dev/null', sync: true }),
    });
    const effects: Effects = api.createEffects(
      { effects: definitions },
      { flags: { redis: REDIS_URL, db: DATABASE_URL, prefix, schema }, db, logger },
    );
    const jobKey = keys.redisKeys(prefix).job;

    /** The example app's endpoint: the order and the ledger rows commit together. */
    const placeOrder = async () => {
      return db.transaction(async (trx) => {
        const id = await insertOrder(trx, schema);
        return effects.emit('order_placed', id, { trx });
      });
    };

    const emitTimings: Timing[] = [];
    const toRedisMs: number[] = [];
    let inlineSequential: Timing[] = [];
    let inlineParallel: Timing[] = [];
    try {
      await api.migrate(db, schema);
      await createAppTables(db, schema);
      for (let i = 0; i < WARMUP; i += 1) await placeOrder();

      progress(`emit: ${CALLS} orders, one at a time`);
      for (let i = 0; i < CALLS; i += 1) {
        const started = performance.now();
        const emitted = await placeOrder();
        const committed = performance.now();
        emitTimings.push({ ms: committed - started, failed: false });
        // Untimed for the endpoint: wait until every job is in Redis, to see how long after commit.
        const jobKeys = emitted.ledgerIds.map((id, k) => jobKey(emitted.effects[k], keys.jobIdForRow(id)));
        while ((await redis.exists(...jobKeys)) < jobKeys.length) {
          if (performance.now() - committed > 5000) throw new Error('jobs did not reach Redis within 5 s of commit');
        }
        toRedisMs.push(performance.now() - committed);
      }

      const inlineCall = (parallel: boolean) => async () => {
        await insertOrder(db, schema);
        if (parallel) await Promise.all(Array.from({ length: EFFECT_COUNT }, thirdParty));
        else for (let k = 0; k < EFFECT_COUNT; k += 1) await thirdParty();
      };
      progress(`inline: ${INLINE_SEQUENTIAL_CALLS} calls, sequential effects, ${INLINE_PARALLELISM} at a time`);
      inlineSequential = await timeCalls(INLINE_SEQUENTIAL_CALLS, INLINE_PARALLELISM, inlineCall(false));
      progress(`inline: ${INLINE_CALLS} calls, effects with Promise.all, ${INLINE_PARALLELISM} at a time`);
      inlineParallel = await timeCalls(INLINE_CALLS, INLINE_PARALLELISM, inlineCall(true));
    } finally {
      await effects.close();
      await deleteKeys(redis, `${prefix}:*`);
      await db.raw('drop schema if exists ?? cascade', [schema]);
      await db.destroy();
      redis.disconnect();
    }

    const emit = summary(emitTimings);
    const sequential = summary(inlineSequential);
    const parallel = summary(inlineParallel);
    const expectedFailure = 1 - (1 - FAILURE_RATE) ** EFFECT_COUNT;
    const pct = (rate: number) => round(rate * 100, 2);
    const rows: BenchRow[] = [
      { metric: 'emit endpoint p50 (order + 10 ledger rows, commit)', value: round(emit.p50, 2), unit: 'ms' },
      { metric: 'emit endpoint p99', value: round(emit.p99, 2), unit: 'ms' },
      {
        metric: 'inline, effects in sequence: p50',
        value: round(sequential.p50, 1),
        unit: 'ms',
        baseline: round(emit.p50, 2),
        ratio: round(sequential.p50 / emit.p50, 1),
      },
      { metric: 'inline, effects in sequence: p99', value: round(sequential.p99, 1), unit: 'ms' },
      {
        metric: 'inline, effects with Promise.all: p50',
        value: round(parallel.p50, 1),
        unit: 'ms',
        baseline: round(emit.p50, 2),
        ratio: round(parallel.p50 / emit.p50, 1),
      },
      { metric: 'inline, effects with Promise.all: p99', value: round(parallel.p99, 1), unit: 'ms' },
      { metric: 'emit endpoint failures (no third party called)', value: pct(emit.failureRate), unit: '%' },
      {
        metric: 'inline failures, in sequence (expected ~4.9%)',
        value: pct(sequential.failureRate),
        unit: '%',
      },
      { metric: 'inline failures, Promise.all', value: pct(parallel.failureRate), unit: '%' },
      { metric: 'commit → 10 jobs in Redis: p50', value: round(percentile(toRedisMs, 50), 2), unit: 'ms' },
      { metric: 'commit → 10 jobs in Redis: p99', value: round(percentile(toRedisMs, 99), 2), unit: 'ms' },
    ];
    return {
      rows,
      notes: [
        `emit: ${CALLS} calls one at a time after ${WARMUP} warm-up calls; the app's knex pool is shared with emit; emit logs at info to /dev/null`,
        `inline: ${INLINE_SEQUENTIAL_CALLS} calls in sequence, ${INLINE_CALLS} with Promise.all, ${INLINE_PARALLELISM} at a time; p50/p99 over successful calls; ` +
          `a call fails when any of its ${EFFECT_COUNT} effects fails (${FAILURE_RATE * 100}% each, ${pct(expectedFailure)}% expected)`,
        'commit → Redis is measured after each emit call by polling EXISTS on the ten job keys; it is not part of the endpoint latency',
      ],
    };
  },
} satisfies Suite;
