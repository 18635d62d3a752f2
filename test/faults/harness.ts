/**
 * Shared pieces of the fault-injection suite: the config a worker process loads, a supervisor that
 * restarts worker processes after a kill -9, a load generator, the oracle that counts what was owed
 * against what ran, and the per-scenario result row.
 *
 * The system under test is the example app (examples/orders): `placeOrder` writes an order and emits
 * `order_placed` in one transaction; ten effects each record their run in the sink table
 * `effect_runs` (unique per effect and order, with a run counter). The sink is the oracle: an owed
 * effect with no sink row is lost, a sink row with runs > 1 is a duplicate run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { RedisClient } from '../../src/queue/redis.js';
import type { Knex } from 'knex';
import { createAppTables, placeOrder } from '../../examples/orders/app.js';
import { orderEffects, type OrderEffectsOptions } from '../../examples/orders/effects.js';
import type { EffectsConfig } from '../../src/config/types.js';
import { createEffects, type Effects } from '../../src/core/effects.js';
import { jobIdForRow, redisKeys } from '../../src/queue/keys.js';
import { ROOT } from '../helpers.js';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * BullMQ's lock and stalled-check intervals, shortened so a killed worker's jobs come back in about
 * two seconds instead of 30-90, and no start-up jitter, so a replaced worker takes jobs at once.
 * Production keeps the defaults (see notes/faults-readme.md).
 */
export const FAST_WORKER = { lockDuration: 2000, stalledInterval: 1000, shutdownTimeout: '5s', startupJitter: 0 } as const;

/** The example's effects, fast: latencies scaled down, no built-in bug unless asked, short backoffs. */
export function effectOptions(appSchema: string, overrides: Partial<OrderEffectsOptions> = {}): OrderEffectsOptions {
  return {
    appSchema,
    latencyScale: 0.1,
    failureRate: 0.02,
    // The example's loyalty bug hits every 7th order; the fault scenarios want every effect to succeed.
    buggyEvery: Number.MAX_SAFE_INTEGER,
    attempts: 6,
    backoffMs: 50,
    ...overrides,
  };
}

/** Settings a worker process gets from its config file: everything but the effects, which it builds. */
export type ProcessConfig = Omit<EffectsConfig, 'effects'>;

export interface FaultConfig {
  /** The effects config file for `effects worker --config`. */
  path: string;
  dir: string;
  remove(): void;
}

/**
 * Writes an effects.config.ts that a worker process loads: the example's effects with the given
 * options, the connections and the worker timings of this scenario.
 */
export function writeConfig(config: ProcessConfig, effects: OrderEffectsOptions): FaultConfig {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'effects-faults-'));
  const file = path.join(dir, 'effects.config.ts');
  const source = [
    `import { orderEffects } from ${JSON.stringify(path.join(ROOT, 'examples/orders/effects.ts'))};`,
    `const config = ${JSON.stringify(config)};`,
    `export default { ...config, effects: orderEffects(${JSON.stringify(effects)}) };`,
    '',
  ].join('\n');
  writeFileSync(file, source);
  return { path: file, dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The emitting side of the app, in the test process, on the same prefix and schema as the workers. */
export function createEmitter(config: ProcessConfig, effects: OrderEffectsOptions): Effects {
  return createEffects({ ...config, effects: orderEffects(effects) });
}

export { createAppTables, orderEffects, placeOrder };

/** `fn` over `items`, at most `limit` at a time, results in order: spawning 20 CLIs at once on two cores starves them all. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

// ---------------------------------------------------------------------------------------------
// Supervisor

export interface WorkerExit {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** We killed it (kill -9 or stop). */
  expected: boolean;
}

export interface SupervisorOptions {
  /** Config file passed with --config. */
  config: string;
  /** The long-running command to keep running. @defaultValue 'worker' */
  command?: 'worker' | 'scheduler';
  /** Worker processes kept running. @defaultValue 1 */
  processes?: number;
  /** Extra arguments after `worker`. */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Delay before a dead process is replaced. @defaultValue 100 */
  restartDelayMs?: number;
  /** @defaultValue 'info' (every job logs its outcome: finished or skipping) */
  logLevel?: string;
}

interface Slot {
  child?: ChildProcess;
  startedAt: number;
  /** Resolves when the process logged that it started. */
  ready?: Promise<void>;
}

/**
 * Keeps N `effects worker` (or `scheduler`) processes running, as systemd or Kubernetes would: a process that dies
 * (killed by the test, or crashed) is replaced after a short delay. Every output line is kept, for
 * the secrets checks and for the poison log line.
 */
export class Supervisor {
  readonly lines: string[] = [];
  readonly exits: WorkerExit[] = [];
  /** Milliseconds from a kill to the replacement logging "worker started". */
  readonly restartTimes: number[] = [];
  private readonly slots: Slot[] = [];
  private readonly killed = new Set<number>();
  private readonly replacements: Array<Promise<unknown>> = [];
  private stopping = false;

  constructor(private readonly options: SupervisorOptions) {}

  /** Starts the processes and waits until each has logged that it started. */
  async start(): Promise<void> {
    for (let i = 0; i < (this.options.processes ?? 1); i++) this.slots.push({ startedAt: 0 });
    await Promise.all(this.slots.map((slot) => this.spawn(slot)));
  }

  get pids(): number[] {
    return this.slots.map((s) => s.child?.pid).filter((pid): pid is number => pid !== undefined);
  }

  /** Exits we did not cause: a worker process that crashed or gave up. */
  get unexpectedExits(): WorkerExit[] {
    return this.exits.filter((e) => !e.expected);
  }

  /** JSON log lines of the workers, parsed; other lines are skipped. */
  logRecords(): Array<Record<string, unknown>> {
    return this.lines.flatMap((line) => {
      try {
        const value = JSON.parse(line);
        return value && typeof value === 'object' ? [value as Record<string, unknown>] : [];
      } catch {
        return [];
      }
    });
  }

  /** kill -9 of one worker process; the supervisor replaces it. Resolves once it is dead. */
  async kill9(index = Math.floor(Math.random() * this.slots.length)): Promise<number> {
    const slot = this.slots[index];
    const child = slot.child;
    if (!child?.pid) throw new Error(`worker slot ${index} has no process`);
    this.killed.add(child.pid);
    const killedAt = Date.now();
    const dead = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await dead;
    // Measured in the background: the next kill need not wait for it.
    this.replacements.push(this.whenReplaced(slot, child).then(() => this.restartTimes.push(Date.now() - killedAt)));
    return child.pid;
  }

  /** Waits until every killed process has been replaced and the replacement logged its start. */
  async ready(): Promise<void> {
    await Promise.all(this.replacements);
  }

  /** SIGTERM to every process (a graceful drain) and their exit codes; SIGKILL after `timeoutMs`. */
  async stop(timeoutMs = 15_000): Promise<Array<number | null>> {
    this.stopping = true;
    return Promise.all(
      this.slots.map(async (slot) => {
        const child = slot.child;
        if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
        const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        const code = await exited;
        clearTimeout(timer);
        return code;
      }),
    );
  }

  private async whenReplaced(slot: Slot, old: ChildProcess): Promise<void> {
    while (slot.child === old || !slot.ready) await sleep(20);
    await slot.ready;
  }

  private spawn(slot: Slot): Promise<void> {
    const child = spawn(
      process.execPath,
      [
        path.join(ROOT, 'bin/effects.js'),
        this.options.command ?? 'worker',
        '--config',
        this.options.config,
        ...(this.options.args ?? []),
      ],
      {
        cwd: ROOT,
        env: { ...process.env, NO_COLOR: '1', EFFECTS_LOG_LEVEL: this.options.logLevel ?? 'info', ...this.options.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    slot.child = child;
    slot.startedAt = Date.now();
    let started: () => void = () => {};
    slot.ready = new Promise<void>((resolve) => (started = resolve));
    const onLines = (stream: NodeJS.ReadableStream) => {
      let rest = '';
      stream.on('data', (chunk: Buffer) => {
        const text = rest + chunk.toString();
        const lines = text.split('\n');
        rest = lines.pop() ?? '';
        for (const line of lines) {
          this.lines.push(line);
          if (/"msg":"(worker|scheduler) started/.test(line)) started();
        }
      });
      stream.on('end', () => rest && this.lines.push(rest));
    };
    onLines(child.stdout!);
    onLines(child.stderr!);
    child.once('exit', (code, signal) => {
      const pid = child.pid ?? -1;
      this.exits.push({ pid, code, signal, expected: this.killed.has(pid) || this.stopping });
      // A process that never started would otherwise keep its waiters waiting.
      started();
      if (this.stopping) return;
      slot.ready = undefined;
      setTimeout(() => {
        if (!this.stopping) void this.spawn(slot);
      }, this.options.restartDelayMs ?? 100);
    });
    return slot.ready;
  }
}

// ---------------------------------------------------------------------------------------------
// Load

export interface LoadStats {
  /** Transactions that committed: orders placed, each owing every effect. */
  committed: number;
  /** Transactions the app rolled back on purpose. */
  rolledBack: number;
  /** Order ids written and then rolled back: they must leave no trace. */
  rolledBackIds: string[];
  /** Transactions that failed because a server was away (the endpoint reported an error). */
  failed: number;
  /** Slowest placeOrder, ms. */
  maxLatencyMs: number;
}

export interface LoadOptions {
  db: Knex;
  effects: Effects;
  appSchema: string;
  /** Orders per second. */
  perSecond: number;
  /** Share of transactions that roll back after emitting. @defaultValue 0 */
  rollbackRatio?: number;
  /** Cap on transactions in flight, so an outage does not pile up thousands. @defaultValue 20 */
  maxInFlight?: number;
}

class Rollback extends Error {}

/**
 * Places orders at a steady rate, as the endpoint would under traffic. Errors are counted, not
 * thrown: while PostgreSQL is away the endpoint fails, and those orders never existed.
 */
export function startLoad(options: LoadOptions): { stop(): Promise<LoadStats> } {
  const stats: LoadStats = { committed: 0, rolledBack: 0, rolledBackIds: [], failed: 0, maxLatencyMs: 0 };
  const inFlight = new Set<Promise<void>>();
  const tickMs = 100;
  let owed = 0;

  const placeOne = async () => {
    const started = Date.now();
    const rollback = Math.random() < (options.rollbackRatio ?? 0);
    try {
      if (rollback) {
        await options.db.transaction(async (trx) => {
          const [order] = await trx
            .withSchema(options.appSchema)
            .table('orders')
            .insert({ customer: 'load', total_cents: 100 })
            .returning('id');
          await options.effects.emit('order_placed', String(order.id), { trx });
          stats.rolledBackIds.push(String(order.id));
          throw new Rollback('declined');
        });
      } else {
        await placeOrder(options.db, options.effects, options.appSchema, { customer: 'load', totalCents: 100 });
        stats.committed++;
      }
    } catch (error) {
      if (error instanceof Rollback) stats.rolledBack++;
      else stats.failed++;
    } finally {
      stats.maxLatencyMs = Math.max(stats.maxLatencyMs, Date.now() - started);
    }
  };

  const timer = setInterval(() => {
    owed += (options.perSecond * tickMs) / 1000;
    while (owed >= 1) {
      owed--;
      if (inFlight.size >= (options.maxInFlight ?? 20)) continue;
      const p = placeOne().finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
  }, tickMs);

  return {
    async stop() {
      clearInterval(timer);
      await Promise.allSettled([...inFlight]);
      return stats;
    },
  };
}

/** A burst of orders, a few at a time: builds a backlog for a fault to hit. Returns the order ids. */
export async function placeOrders(db: Knex, effects: Effects, appSchema: string, count: number): Promise<string[]> {
  const ids: string[] = [];
  let next = 0;
  const lane = async () => {
    while (next++ < count) ids.push(await placeOrder(db, effects, appSchema, { customer: 'burst', totalCents: 100 }));
  };
  await Promise.all([lane(), lane(), lane()]);
  return ids;
}

// ---------------------------------------------------------------------------------------------
// Alert webhook

export interface WebhookRequest {
  at: number;
  status: number;
  body: unknown;
}

export interface Webhook {
  url: string;
  /** Every POST received, answered or refused. */
  readonly requests: WebhookRequest[];
  /** Answer with this status from now on (500: the receiver is down but listening). */
  respondWith(status: number): void;
  close(): Promise<void>;
}

/** A local alert receiver (Slack-style webhook) that records each POST. */
export async function startWebhook(status = 200): Promise<Webhook> {
  const requests: WebhookRequest[] = [];
  let answer = status;
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (chunk) => (text += chunk));
    req.on('end', () => {
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // Kept as text: the test says what it expected.
      }
      requests.push({ at: Date.now(), status: answer, body });
      res.writeHead(answer, { 'content-type': 'text/plain' }).end(answer < 300 ? 'ok' : 'unavailable');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/effects`,
    requests,
    respondWith: (code) => {
      answer = code;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

// ---------------------------------------------------------------------------------------------
// Oracle

export interface Oracle {
  /** Orders committed: each is one `order_placed` event. */
  events: number;
  /** Ledger rows: effects owed. */
  owed: number;
  /** Ledger rows marked done. */
  done: number;
  pending: number;
  failed: number;
  /** Owed effects (not expected to fail) that are not done, or done without a run in the sink. */
  lost: number;
  /** Sink runs beyond the first, summed: at-least-once shows here. */
  duplicateRuns: number;
  /** Distinct (effect, order) pairs in the sink. */
  sinkUnique: number;
  /** Sink rows no ledger row owes (e.g. a rolled-back order's effect ran). */
  phantom: number;
  /** A few lost rows, to say which. */
  lostSample: Array<{ id: string; effect: string; eventId: string; status: string }>;
}

export interface OracleOptions {
  schema: string;
  appSchema: string;
  /** Rows the scenario expects to fail (a poison pill): not counted as lost. */
  expectFailed?: (row: { effect: string; eventId: string }) => boolean;
}

/** Compares the ledger with the sink. Read in memory: the scenarios owe a few thousand rows at most. */
export async function readOracle(db: Knex, options: OracleOptions): Promise<Oracle> {
  const [{ count: events }] = await db.withSchema(options.appSchema).table('orders').count<{ count: string }[]>('* as count');
  const ledger = (await db
    .withSchema(options.schema)
    .table('ledger')
    .select('id', 'effect', 'event_id', 'status')) as Array<{ id: string; effect: string; event_id: string; status: string }>;
  const sink = (await db.withSchema(options.appSchema).table('effect_runs').select('effect', 'order_id', 'runs')) as Array<{
    effect: string;
    order_id: string;
    runs: number;
  }>;
  const ran = new Map(sink.map((r) => [`${r.effect}\u0000${r.order_id}`, r.runs]));
  const owedKeys = new Set(ledger.map((r) => `${r.effect}\u0000${r.event_id}`));
  const lostRows = ledger.filter((row) => {
    if (options.expectFailed?.({ effect: row.effect, eventId: row.event_id })) return false;
    return row.status !== 'done' || !ran.has(`${row.effect}\u0000${row.event_id}`);
  });
  const count = (status: string) => ledger.filter((r) => r.status === status).length;
  return {
    events: Number(events),
    owed: ledger.length,
    done: count('done'),
    pending: count('pending'),
    failed: count('failed'),
    lost: lostRows.length,
    duplicateRuns: sink.reduce((sum, r) => sum + (r.runs - 1), 0),
    sinkUnique: sink.length,
    phantom: sink.filter((r) => !owedKeys.has(`${r.effect}\u0000${r.order_id}`)).length,
    lostSample: lostRows
      .slice(0, 5)
      .map((r) => ({ id: String(r.id), effect: r.effect, eventId: r.event_id, status: r.status })),
  };
}

/** Waits until no ledger row is pending (or the time is up); returns how long it took. */
export async function waitForSettled(db: Knex, schema: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    const pending = await countPending(db, schema).catch(() => -1);
    if (pending === 0) return Date.now() - started;
    if (Date.now() - started > timeoutMs) return Date.now() - started;
    await sleep(200);
  }
}

async function countPending(db: Knex, schema: string, upToId?: string): Promise<number> {
  const query = db.withSchema(schema).table('ledger').where('status', 'pending');
  if (upToId) query.andWhere('id', '<=', upToId);
  const [{ count }] = await query.count<{ count: string }[]>('* as count');
  return Number(count);
}

/**
 * Recovery time of one fault: from the moment it struck (captured just before it is injected) until
 * nothing that was owed then is still pending, the outage itself included. Polls in the background
 * from the capture, so the time is right however late the test asks for it.
 */
export class Recovery {
  private readonly from = Date.now();
  private settledAt?: number;
  private readonly polling: Promise<void>;

  private constructor(
    private readonly db: Knex,
    private readonly schema: string,
    /** Highest ledger id when the fault struck: rows up to here were owed at that moment. */
    readonly upToId: string,
    private readonly giveUpAfterMs: number,
  ) {
    this.polling = this.poll();
  }

  /** Call just before injecting the fault. Polling stops when the rows settle or after `giveUpAfterMs`. */
  static async capture(db: Knex, schema: string, giveUpAfterMs = 120_000): Promise<Recovery> {
    const [{ max }] = await db.withSchema(schema).table('ledger').max<{ max: string | null }[]>('id as max');
    return new Recovery(db, schema, max ?? '0', giveUpAfterMs);
  }

  /** Milliseconds from the fault until every row owed at that moment left `pending`. */
  async wait(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.settledAt === undefined && Date.now() < deadline) {
      await Promise.race([this.polling, sleep(100)]);
    }
    if (this.settledAt === undefined) {
      throw new Error(`rows up to ledger id ${this.upToId} still pending ${Date.now() - this.from} ms after the fault`);
    }
    return Math.max(0, this.settledAt - this.from);
  }

  private async poll(): Promise<void> {
    const started = Date.now();
    while (Date.now() - started < this.giveUpAfterMs) {
      // While the database is away the count fails: that is not recovery.
      const pending = await countPending(this.db, this.schema, this.upToId).catch(() => -1);
      if (pending === 0) {
        this.settledAt = Date.now();
        return;
      }
      await sleep(100);
    }
  }
}

/** Jobs BullMQ holds as active in these queues right now: the jobs in flight at a kill. */
export async function activeJobIds(redis: RedisClient, prefix: string, queues: string[]): Promise<string[]> {
  const keys = redisKeys(prefix);
  const pipeline = redis.pipeline();
  for (const queue of queues) pipeline.lrange(keys.queue(queue, 'active'), 0, -1);
  const replies = (await pipeline.exec()) ?? [];
  return replies.flatMap(([, ids], i) => (ids as string[]).map((id) => `${queues[i]}/${id}`));
}

/**
 * Pending ledger rows whose job is not in Redis. Zero means every owed effect is queued (a job id is
 * derived from its row, so it cannot be queued twice).
 */
export async function pendingWithoutJob(db: Knex, schema: string, redis: RedisClient, prefix: string): Promise<number> {
  const rows = (await db.withSchema(schema).table('ledger').where('status', 'pending').select('id', 'effect')) as Array<{
    id: string;
    effect: string;
  }>;
  if (rows.length === 0) return 0;
  const keys = redisKeys(prefix);
  const pipeline = redis.pipeline();
  for (const row of rows) pipeline.exists(keys.job(row.effect, jobIdForRow(String(row.id))));
  const replies = (await pipeline.exec()) ?? [];
  return replies.filter(([, exists]) => exists === 0).length;
}

/**
 * The longest time without a single effect finishing, within a window: how long a fault held
 * processing up, as the users of the effects saw it.
 */
export async function longestCompletionGap(db: Knex, schema: string, from: number, to: number): Promise<number> {
  const { rows } = await db.raw(
    `select coalesce(max(gap), 0)::float as ms from (
       select extract(epoch from finished_at - lag(finished_at) over (order by finished_at)) * 1000 as gap
         from ??.ledger where status = 'done' and finished_at between ? and ?) as gaps`,
    [schema, new Date(from), new Date(to)],
  );
  return Math.round((rows as Array<{ ms: number }>)[0].ms);
}

/** Ledger rows done per second over a window, from the ledger's finished_at. */
export async function doneRate(db: Knex, schema: string, from: number, to: number, effects?: string[]): Promise<number> {
  const query = db
    .withSchema(schema)
    .table('ledger')
    .where('status', 'done')
    .andWhere('finished_at', '>=', new Date(from))
    .andWhere('finished_at', '<', new Date(to));
  if (effects) query.whereIn('effect', effects);
  const [{ count }] = await query.count<{ count: string }[]>('* as count');
  return Number(count) / ((to - from) / 1000);
}

export { renderRows, reportRow, rowFrom, type FaultRow } from './results.js';
