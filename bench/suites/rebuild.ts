/**
 * Rebuild of pending ledger rows against raw BullMQ `addBulk` of the same jobs, in one run.
 *
 * The ledger holds ROWS pending rows (four effects, one `order_placed` each) and Redis holds none
 * of their jobs, as after a wipe. The raw side adds the very jobs rebuild would add (same queues,
 * names, thin data, job ids and `jobOptionsFor` options) with sequential `addBulk` calls in chunks of
 * 500 and of 1000, reading nothing from PostgreSQL. Rebuild reads the rows from the ledger in keyset
 * pages, checks each job's liveness in Redis and adds the missing ones; the clock covers the whole
 * call. The ledger table is read once first (so PostgreSQL's cache is as warm as in a real incident),
 * then raw and rebuild runs alternate, each side gets as many runs, and the medians are compared (the
 * machine is shared: a best would be whichever run met a quiet moment). `--rate`: rebuild of the
 * first PACED_ROWS rows at PACED_RATE jobs/s, timed. Memory: the real CLI (`effects rebuild --yes
 * --json`) runs as a child process over a quarter of the rows and over all of them; its RSS is
 * sampled from /proc every 50 ms.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { JobsOptions } from 'bullmq';
import knexFactory, { type Knex } from 'knex';
import { defineEffect } from '../../src/config/define.js';
import { validateConfig } from '../../src/config/schema.js';
import { resolveSettings } from '../../src/config/settings.js';
import { Runtime } from '../../src/core/runtime.js';
import { migrate } from '../../src/ledger/migrate.js';
import { rebuild } from '../../src/ops/rebuild.js';
import { jobIdForRow } from '../../src/queue/keys.js';
import { jobOptionsFor, QueueRegistry } from '../../src/queue/queues.js';
import { createRedis } from '../../src/queue/redis.js';
import { deleteKeys } from '../../test/helpers.js';
import { DATABASE_URL, REDIS_URL, benchNamespace, median, progress, round, type BenchRow, type Suite } from '../lib.js';

const ROWS = Number(process.env.BENCH_ROWS ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const EFFECTS = ['send-email', 'notify-crm', 'update-search', 'charge-card'];
const EVENT = 'order_placed';
const TARGET = 0.8;
const PACED_RATE = 4000;
const PACED_ROWS = 20_000;
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

export const suite: Suite = {
  name: 'rebuild',
  description: `rebuild of ${ROWS} pending ledger rows after a Redis wipe vs raw addBulk of the same jobs`,
  async run() {
    const { prefix, schema } = benchNamespace('rebuild');
    const rawPrefix = `${prefix}_raw`;
    const definitions = EFFECTS.map((name) => defineEffect({ name, on: EVENT, run() {} }));
    const flags = { redis: REDIS_URL, db: DATABASE_URL, prefix, schema };
    const settings = resolveSettings(validateConfig({ effects: definitions }), flags, {});
    const db = knexFactory({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 4 } });
    const redis = createRedis({ url: REDIS_URL, cluster: false });
    const configDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-rebuild-'));
    try {
      await migrate(db, schema);
      progress(`inserting ${ROWS} pending ledger rows`);
      const { firstId, since, firstCreatedAt } = await insertRows(db, schema);
      const rowIds = Array.from({ length: ROWS }, (_, i) => String(firstId + i));
      const rowEffect = (i: number) => EFFECTS[i % EFFECTS.length];

      const raw = async (chunk: number) => {
        const queues = new QueueRegistry(redis, rawPrefix);
        const options = new Map(settings.effects.map((e) => [e.name, (id: string) => jobOptionsFor(e, settings, id)]));
        const started = performance.now();
        for (let start = 0; start < ROWS; start += chunk) {
          const byQueue = new Map<string, Array<{ name: string; data: object; opts: JobsOptions }>>();
          for (let i = start; i < Math.min(ROWS, start + chunk); i++) {
            const effect = rowEffect(i);
            const list = byQueue.get(effect) ?? [];
            list.push({ name: EVENT, data: { event: EVENT, id: `order-${i >> 2}` }, opts: options.get(effect)!(jobIdForRow(rowIds[i])) });
            byQueue.set(effect, list);
          }
          await Promise.all([...byQueue].map(([name, jobs]) => queues.get(name).addBulk(jobs)));
        }
        const seconds = (performance.now() - started) / 1000;
        await queues.close();
        await deleteKeys(redis, `${rawPrefix}:*`);
        return ROWS / seconds;
      };

      const viaRebuild = async () => {
        const runtime = new Runtime(settings, { redis });
        const started = performance.now();
        const result = await rebuild(runtime, { since, reason: 'benchmark' });
        const seconds = (performance.now() - started) / 1000;
        await runtime.close();
        if (result.enqueued !== ROWS) throw new Error(`rebuild enqueued ${result.enqueued}, expected ${ROWS}`);
        await deleteKeys(redis, `${prefix}:*`);
        return ROWS / seconds;
      };

      progress('reading the ledger table once');
      await db.raw('select count(*) from ??.ledger', [schema]);
      const rawRates: Record<number, number[]> = { 500: [], 1000: [] };
      const rebuildRates: number[] = [];
      // raw and rebuild alternate, and each side gets as many runs (the best of more runs of a noisy
      // measure is higher, so unequal counts would favour one side).
      for (let round_ = 1; round_ <= ROUNDS; round_++) {
        for (const chunk of [500, 1000]) {
          rawRates[chunk].push(await raw(chunk));
          progress(`round ${round_}: raw addBulk x${chunk} ${Math.round(rawRates[chunk].at(-1)!)} jobs/s`);
          rebuildRates.push(await viaRebuild());
          progress(`round ${round_}: rebuild ${Math.round(rebuildRates.at(-1)!)} jobs/s`);
        }
      }
      // --rate: the first PACED_ROWS rows (one per ms from the first) at PACED_RATE jobs/s.
      const paced = await (async () => {
        const runtime = new Runtime(settings, { redis });
        const started = performance.now();
        const result = await rebuild(runtime, { since, until: firstCreatedAt + PACED_ROWS, rate: PACED_RATE, audit: false });
        const seconds = (performance.now() - started) / 1000;
        await runtime.close();
        await deleteKeys(redis, `${prefix}:*`);
        return { rate: result.enqueued / seconds, enqueued: result.enqueued };
      })();
      progress(`--rate ${PACED_RATE}/s: ${Math.round(paced.rate)} jobs/s over ${paced.enqueued} jobs`);
      const pacedError = Math.abs(paced.rate / PACED_RATE - 1);

      // Medians, not bests: on a shared machine one quiet moment makes an outlier of a best.
      const rawAll = [...rawRates[500], ...rawRates[1000]];
      const rawMedian = median(rawAll);
      const rebuildMedian = median(rebuildRates);
      const ratio = rebuildMedian / rawMedian;

      const configFile = path.join(configDir, 'effects.config.mjs');
      await fs.writeFile(
        configFile,
        `export default { effects: ${JSON.stringify(EFFECTS)}.map((name) => ({ name, on: '${EVENT}', run() {} })) };\n`,
      );
      const cli = async (extra: string[]) => {
        const figures = await runCliMeasured(
          ['--config', configFile, '--prefix', prefix, '--schema', schema, 'rebuild', '--since', '1d', '--yes', '--json', ...extra],
          { EFFECTS_REDIS_URL: REDIS_URL, EFFECTS_DATABASE_URL: DATABASE_URL },
        );
        await deleteKeys(redis, `${prefix}:*`);
        return figures;
      };
      progress('CLI memory: a quarter of the rows (one effect), then all of them');
      const quarter = await cli(['--effect', EFFECTS[0]]);
      const full = await cli([]);
      const flat = full.peakRssMb / quarter.peakRssMb;

      const rows: BenchRow[] = [
        { metric: `raw addBulk, median of ${rawAll.length} (chunks of 500 and 1000)`, value: round(rawMedian, 0), unit: 'jobs/s' },
        {
          metric: `rebuild from the ledger, median of ${rebuildRates.length}`,
          value: round(rebuildMedian, 0),
          unit: 'jobs/s',
          baseline: round(rawMedian, 0),
          ratio: round(ratio),
          target: `ratio >= ${TARGET}`,
          pass: ratio >= TARGET,
        },
        {
          metric: `rebuild --rate ${PACED_RATE}/s, achieved over ${paced.enqueued} jobs`,
          value: round(paced.rate, 0),
          unit: 'jobs/s',
          baseline: PACED_RATE,
          ratio: round(paced.rate / PACED_RATE, 3),
          target: 'within 5% of the asked rate',
          pass: pacedError <= 0.05,
        },
        { metric: `CLI peak RSS, ${quarter.enqueued} rows`, value: quarter.peakRssMb, unit: 'MB' },
        {
          metric: `CLI peak RSS, ${full.enqueued} rows`,
          value: full.peakRssMb,
          unit: 'MB',
          baseline: quarter.peakRssMb,
          ratio: round(flat),
          target: 'flat: <= 1.25x the quarter run',
          pass: flat <= 1.25,
        },
        { metric: `CLI wall time, ${full.enqueued} rows (process start included)`, value: round(full.seconds, 1), unit: 's' },
      ];
      return {
        rows,
        notes: [
          `rounds: raw x500 ${rawRates[500].map((r) => Math.round(r)).join(', ')}; raw x1000 ${rawRates[1000]
            .map((r) => Math.round(r))
            .join(', ')}; rebuild ${rebuildRates.map((r) => Math.round(r)).join(', ')} jobs/s`,
          `best rebuild / best raw: ${round(Math.max(...rebuildRates) / Math.max(...rawAll))}`,
          `${EFFECTS.length} effects; rebuild defaults: pages of 2000 rows (next page prefetched), addBulk chunks of 500`,
          'RSS is the whole CLI process (node, config loading, pg and ioredis pools included)',
        ],
      };
    } finally {
      await deleteKeys(redis, `${prefix}:*`).catch(() => undefined);
      await deleteKeys(redis, `${rawPrefix}:*`).catch(() => undefined);
      await db.raw('drop schema if exists ?? cascade', [schema]).catch(() => undefined);
      await db.destroy();
      redis.disconnect();
      await fs.rm(configDir, { recursive: true, force: true });
    }
  },
};

/** ROWS pending rows, four effects per order, one emitted a millisecond from an hour ago. */
async function insertRows(db: Knex, schema: string): Promise<{ firstId: number; since: number; firstCreatedAt: number }> {
  const since = Date.now() - 2 * 3_600_000;
  await db.raw(
    `insert into ??.ledger (event, event_id, effect, created_at, pending_since)
     select ?, 'order-' || (g / ?), (?::text[])[(g % ?) + 1], t, t
       from generate_series(0, ? - 1) as g,
            lateral (select now() - interval '1 hour' + (g * interval '1 millisecond') as t) as emitted`,
    [schema, EVENT, EFFECTS.length, EFFECTS, EFFECTS.length, ROWS],
  );
  await db.raw('analyze ??.ledger', [schema]);
  const { rows } = (await db.raw(
    'select min(id)::bigint as first, (extract(epoch from min(created_at)) * 1000)::bigint as first_at from ??.ledger',
    [schema],
  )) as { rows: Array<{ first: string; first_at: string }> };
  return { firstId: Number(rows[0].first), since, firstCreatedAt: Number(rows[0].first_at) };
}

/** Runs the built CLI and samples its resident set size from /proc. */
function runCliMeasured(args: string[], env: NodeJS.ProcessEnv): Promise<{ peakRssMb: number; seconds: number; enqueued: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/effects.js'), ...args], {
      env: { ...process.env, ...env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let peakKb = 0;
    const sample = async () => {
      const status = await fs.readFile(`/proc/${child.pid}/status`, 'utf8').catch(() => '');
      const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      peakKb = Math.max(peakKb, kb);
    };
    const timer = setInterval(sample, 50);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => {
      clearInterval(timer);
      if (code !== 0) return reject(new Error(`effects ${args.join(' ')} exited ${code}: ${stderr}`));
      const result = JSON.parse(stdout) as { enqueued: number };
      resolve({ peakRssMb: round(peakKb / 1024, 1), seconds: (performance.now() - started) / 1000, enqueued: result.enqueued });
    });
  });
}
