/**
 * `npm run demo`: places orders through the example endpoint, runs `effects worker` and
 * `effects scheduler` as real processes, waits until every owed effect is done or has failed for
 * good, then prints the status table and the poison pills it found. Uses the local Redis and
 * PostgreSQL at their default URLs, under its own prefix and schemas, and ends by itself.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import knexFactory from 'knex';
import { createEffects } from '../../src/index.js';
import { DEFAULTS } from '../../src/config/settings.js';
import { createAppTables, placeOrder } from './app.js';
import config, { APP_SCHEMA } from './effects.config.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CONFIG = path.join(ROOT, 'examples/orders/effects.config.ts');
const BIN = path.join(ROOT, 'bin/effects.js');
const LOG = path.join(ROOT, 'demo.log');
const ORDERS = Number(process.env.DEMO_ORDERS ?? 200);
const redisUrl = process.env.REDIS_URL ?? DEFAULTS.redis;
const databaseUrl = process.env.DATABASE_URL ?? DEFAULTS.database;
const prefix = config.prefix!;
const schema = config.schema!;

const say = (text: string) => process.stdout.write(`${text}\n`);
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [BIN, ...args, '--config', CONFIG], { stdio: 'inherit', cwd: ROOT });

async function resetDemoState(db: knexFactory.Knex, redis: Redis) {
  // Only the demo's own prefix and schemas: other data on these servers is left alone.
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
  await db.raw('drop schema if exists ?? cascade', [schema]);
  await db.raw('drop schema if exists ?? cascade', [APP_SCHEMA]);
}

function startProcess(command: 'worker' | 'scheduler', extra: string[] = []): ChildProcess {
  const log = openSync(LOG, 'a');
  return spawn(process.execPath, [BIN, command, '--config', CONFIG, ...extra], {
    cwd: ROOT,
    stdio: ['ignore', log, log],
  });
}

async function stopProcess(child: ChildProcess, name: string) {
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  say(`  ${name} exited with code ${await exited}`);
}

async function main() {
  const db = knexFactory({ client: 'pg', connection: databaseUrl, pool: { min: 0, max: 5 } });
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  await resetDemoState(db, redis);
  await createAppTables(db, APP_SCHEMA);

  say('\n$ effects migrate');
  if (cli('migrate').status !== 0) throw new Error('migrate failed');

  say(`\nStarting \`effects worker\` and \`effects scheduler\` (logs in ${path.relative(ROOT, LOG)})`);
  const worker = startProcess('worker');
  const scheduler = startProcess('scheduler', ['--every', '10s', '--lookback', '1h']);

  const effects = createEffects(config, { db });
  const latencies: number[] = [];
  for (let i = 0; i < ORDERS; i++) {
    const started = performance.now();
    await placeOrder(db, effects, APP_SCHEMA, { customer: `customer-${i % 37}`, totalCents: 1000 + i });
    latencies.push(performance.now() - started);
  }
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(1);
  say(
    `\nPlaced ${ORDERS} orders, each owing ${config.effects.length} effects: endpoint p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms` +
      ` (inline, ten 30-150 ms calls would take 300 ms or more each)`,
  );

  say('Waiting until every owed effect is done or has failed for good...');
  const deadline = Date.now() + 90_000;
  for (;;) {
    const [{ pending }] = await db
      .withSchema(schema)
      .table('ledger')
      .where('status', 'pending')
      .count<{ pending: string }[]>('* as pending');
    if (Number(pending) === 0) break;
    if (Date.now() > deadline) {
      say(`  giving up after 90 s with ${pending} rows still pending`);
      break;
    }
    if (process.stdout.isTTY) process.stdout.write(`  ${pending} pending   \r`);
    await new Promise((r) => setTimeout(r, 1000));
  }

  say('\n$ effects status');
  cli('status');
  say('\n$ effects poison list --by-error');
  const poison = cli('poison', 'list', '--by-error', '--limit', '5');
  if (poison.status !== 0) say('(poison list is not available in this build)');

  const sample = spawnSync(process.execPath, [BIN, 'poison', 'list', '--json', '--limit', '1', '--config', CONFIG], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  const pill = sample.status === 0 ? (JSON.parse(sample.stdout) as { jobs: Array<{ queue: string; id: string }> }).jobs[0] : undefined;

  say('\nStopping the processes with SIGTERM (graceful shutdown)');
  await stopProcess(worker, 'worker');
  await stopProcess(scheduler, 'scheduler');
  await effects.close();
  await db.destroy();
  redis.disconnect();
  say(
    `\nDone. Try: npx effects poison show ${pill ? `${pill.queue} ${pill.id}` : 'sync-loyalty-points <job id>'} --config examples/orders/effects.config.ts`,
  );
}

main().catch((error) => {
  process.stderr.write(`demo failed: ${error.stack ?? error}\n`);
  process.exitCode = 1;
});
