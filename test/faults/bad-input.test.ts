import { spawn } from 'node:child_process';
import path from 'node:path';
import { Queue, Worker } from 'bullmq';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, runCli, setupServices, type TestServices } from '../helpers.js';
import { argvArbitrary, hostileConfigFiles, removeHostileConfigFiles, runInProcess, STACK_FRAME, type CapturedRun } from './cli-fuzz.js';
import {
  createAppTables,
  createEmitter,
  effectOptions,
  FAST_WORKER,
  readOracle,
  reportRow,
  rowFrom,
  Supervisor,
  waitForSettled,
  writeConfig,
  type FaultConfig,
  type ProcessConfig,
} from './harness.js';
import type { Effects } from '../../src/core/effects.js';

const HELP_TOKENS = ['help', '-h', '--help', '-V', '--version'];

/** What every CLI run must satisfy, whatever its arguments. Returns a description of the breach. */
function breach(argv: string[], result: CapturedRun): string | undefined {
  const text = result.stdout + result.stderr;
  if (![0, 1, 2].includes(result.code)) return `exit ${result.code}`;
  if (STACK_FRAME.test(text)) return 'a stack trace';
  if (/EFFECTS_DEBUG/.test(result.stderr)) return `an internal error: ${result.stderr.split('\n')[0]}`;
  if (result.code !== 0 && !/^error: \S/m.test(result.stderr)) return 'a failure with no message';
  const helpish = argv.some((a) => HELP_TOKENS.includes(a));
  if (argv.includes('--json') && !helpish && result.stdout.trim()) {
    try {
      JSON.parse(result.stdout);
    } catch {
      return '--json output that is not JSON';
    }
  }
  return undefined;
}

const describeRun = (argv: string[], result: CapturedRun) =>
  `effects ${argv.map((a) => JSON.stringify(a.length > 80 ? `${a.slice(0, 80)}...` : a)).join(' ')}\n` +
  `exit ${result.code}\nstdout: ${result.stdout.slice(0, 500)}\nstderr: ${result.stderr.slice(0, 500)}`;

/**
 * Bad input from every side: hostile command lines (property-based), job data in Redis that is not
 * a thin task, and ids that look like SQL.
 */
describe('scenario 7: bad input', () => {
  let services: TestServices;
  let config: FaultConfig;
  let processConfig: ProcessConfig;
  let appSchema: string;
  let supervisor: Supervisor;
  let effects: Effects;
  const exits = { 0: 0, 1: 0, 2: 0 } as Record<number, number>;
  const notes: string[] = [];

  beforeAll(async () => {
    services = await setupServices('faults-bad-input');
    await services.migrate();
    appSchema = `${services.schema}_app`;
    await createAppTables(services.db, appSchema);
    processConfig = {
      redis: services.redisUrl,
      database: services.databaseUrl,
      prefix: services.prefix,
      schema: services.schema,
      worker: FAST_WORKER,
    };
    const options = effectOptions(appSchema, { failureRate: 0 });
    config = writeConfig(processConfig, options);
    effects = createEmitter(processConfig, options);
  });

  afterAll(async () => {
    removeHostileConfigFiles();
    await supervisor?.stop();
    await effects?.close();
    await services?.db.raw('drop schema if exists ?? cascade', [appSchema]);
    config?.remove();
    await services?.cleanup();
  });

  it('random and hostile arguments, servers unreachable: exit 0/1/2 with a message, never a stack trace', async () => {
    const files = hostileConfigFiles();
    // Every URL the fuzzer may pass, and the defaults, lead to closed ports: whatever command it
    // builds, nothing real is touched, and each case takes milliseconds.
    const env = {
      EFFECTS_REDIS_URL: 'redis://127.0.0.1:1',
      EFFECTS_DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none',
      EFFECTS_PREFIX: undefined,
      EFFECTS_SCHEMA: undefined,
      EFFECTS_CONFIG: undefined,
      NO_COLOR: '1',
    };
    await fc.assert(
      fc.asyncProperty(argvArbitrary(files), async (argv) => {
        const result = await runInProcess(argv, env);
        exits[result.code] = (exits[result.code] ?? 0) + 1;
        const problem = breach(argv, result);
        if (problem) throw new Error(`${problem}:\n${describeRun(argv, result)}`);
      }),
      { numRuns: 1500 },
    );
  });

  it('random and hostile arguments against live servers, in a namespace of their own', async () => {
    // Its own namespace: a fuzzed `pause` or `discard --yes` must not reach the other tests here.
    const fuzz = await setupServices('faults-fuzz');
    await fuzz.migrate();
    try {
      await fuzzLive(fuzz);
    } finally {
      await fuzz.cleanup();
    }
  });

  async function fuzzLive(services: TestServices) {
    // A few failed and waiting jobs for the operator commands to find.
    const queue = new Queue('fuzz-effect', { connection: services.redis, prefix: services.prefix });
    await queue.addBulk(Array.from({ length: 6 }, (_, i) => ({ name: 'fuzzed', data: { event: 'fuzzed', id: String(i) } })));
    const failing = new Worker('fuzz-effect', async () => {
      throw new Error('upstream said no (fuzz)');
    }, { connection: services.redis, prefix: services.prefix });
    await new Promise((resolve) => setTimeout(resolve, 500));
    await failing.close();
    await queue.add('fuzzed', { event: 'fuzzed', id: 'waiting' });
    await queue.close();

    const files = hostileConfigFiles();
    const env = {
      EFFECTS_REDIS_URL: services.redisUrl,
      EFFECTS_DATABASE_URL: services.databaseUrl,
      EFFECTS_PREFIX: services.prefix,
      EFFECTS_SCHEMA: services.schema,
      EFFECTS_CONFIG: undefined,
      NO_COLOR: '1',
    };
    // Namespace and servers are fixed; and long-running commands (which would run until a signal
    // this in-process runner cannot send) are left to the spawned cases.
    const pinned = new Set(['--redis', '--db', '--prefix', '--schema']);
    const longRunning = (argv: string[]) =>
      argv.some((a) => ['worker', 'scheduler', '--watch', '--ramp', '--wait'].includes(a) || a.startsWith('--watch=') || a.startsWith('--ramp='));
    const safe = argvArbitrary(files)
      .map((argv) => argv.filter((a, i) => !pinned.has(a.split('=')[0]) && !pinned.has(argv[i - 1])))
      .filter((argv) => !longRunning(argv));
    await fc.assert(
      fc.asyncProperty(safe, async (argv) => {
        const result = await runInProcess(argv, env);
        exits[result.code] = (exits[result.code] ?? 0) + 1;
        const problem = breach(argv, result);
        if (problem) throw new Error(`${problem}:\n${describeRun(argv, result)}`);
      }),
      { numRuns: 500 },
    );
  }

  it('the real binary: hostile arguments, hostile environment, a closed pipe', async () => {
    const unreachable = { EFFECTS_REDIS_URL: 'redis://127.0.0.1:1', EFFECTS_DATABASE_URL: 'postgres://postgres@127.0.0.1:1/x' };
    const cases: Array<{ args: string[]; env?: NodeJS.ProcessEnv; code: number }> = [
      { args: ['status', '--redis', 'redis://:x@[::1'], code: 2 },
      { args: ['status', '--watch', '-2'], env: unreachable, code: 2 },
      { args: ['rebuild', '--since', "1'; drop table ledger; --"], env: unreachable, code: 2 },
      { args: ['replay', '--rate', '-5/s', '--yes'], env: unreachable, code: 2 },
      { args: ['poison', 'list', '--limit', 'x'.repeat(100_000)], env: unreachable, code: 2 },
      { args: ['migrate', '--config', path.join(ROOT, 'package.json')], env: unreachable, code: 2 },
      { args: ['status', '--json'], env: unreachable, code: 1 },
      { args: ['worker', '--config', hostileConfigFiles()[0]], env: unreachable, code: 2 },
    ];
    const results = await Promise.all(cases.map((c) => runCli(c.args, { env: { ...c.env } })));
    results.forEach((result, i) => {
      const run = { code: result.code ?? -1, stdout: result.stdout, stderr: result.stderr };
      expect(breach(cases[i].args, run), describeRun(cases[i].args, run)).toBeUndefined();
      expect(result.code, describeRun(cases[i].args, run)).toBe(cases[i].code);
      exits[run.code] = (exits[run.code] ?? 0) + 1;
    });

    // `effects --help | head -1`: the reader goes away after one line.
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/effects.js'), 'poison', 'show', '--help'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(stderr).not.toMatch(STACK_FRAME);
    expect(code).toBe(0);
  });

  it('malformed payloads planted in Redis fail as poison pills, and the worker keeps running', async () => {
    supervisor = new Supervisor({ config: config.path });
    await supervisor.start();
    const name = 'notify-crm';
    const queue = new Queue(name, { connection: services.redis, prefix: services.prefix });
    const planted: Record<string, string> = {
      'not-json': '{"event":"order_placed","id":',
      'no-id': '{"event":"order_placed"}',
      null: 'null',
      array: '[1,2,3]',
      'object-id': '{"event":"order_placed","id":{"$ne":null}}',
      'extra-keys': '{"event":"order_placed","id":"1","customer":{"email":"a@example.com"}}',
      'megabytes-json': JSON.stringify({ event: 'order_placed', id: 'x'.repeat(4_000_000) }),
      'megabytes-garbage': `\u0000${'{'.repeat(3_000_000)}`,
    };
    // Paused, so no worker takes a job before its data is replaced with the bad one.
    await queue.pause();
    for (const [key, raw] of Object.entries(planted)) {
      await queue.add('order_placed', { event: 'order_placed', id: 'placeholder' }, { jobId: `planted-${key}`, attempts: 3 });
      await services.redis.hset(`${services.prefix}:${name}:planted-${key}`, 'data', raw);
    }
    await queue.resume();

    const deadline = Date.now() + 20_000;
    let states: string[] = [];
    while (Date.now() < deadline) {
      states = await Promise.all(Object.keys(planted).map((key) => queue.getJobState(`planted-${key}`)));
      if (states.every((s) => s === 'failed')) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await queue.close();
    expect(states).toEqual(Object.keys(planted).map(() => 'failed'));
    for (const key of Object.keys(planted)) {
      // Read raw: BullMQ's own getJob cannot build a job whose data is not JSON.
      const [failedReason, attemptsMade] = await services.redis.hmget(`${services.prefix}:${name}:planted-${key}`, 'failedReason', 'atm');
      expect(failedReason, key).toMatch(/not a thin task/);
      // Shown, not echoed: the reason stays short whatever the payload.
      expect(failedReason!.length, key).toBeLessThan(1000);
      expect(attemptsMade, key).toBe('1');
    }
    // An operator finds them: failed after one attempt, so below the default threshold.
    const listed = await runCli(['poison', 'list', '--queue', name, '--min-attempts', '1', '--json', '--config', config.path]);
    expect(listed.code, listed.stderr).toBe(0);
    const list = JSON.parse(listed.stdout) as { total: number; jobs: Array<{ id: string }> };
    expect(list.total).toBe(Object.keys(planted).length);
    notes.push(`planted ${Object.keys(planted).length} failed, poison list shows ${list.total}, output ${(listed.stdout.length / 1024).toFixed(0)} KiB`);

    // The same worker process goes on with real work.
    await effects.emit('order_placed', 'after-planted');
    await waitForSettled(services.db, services.schema, 20_000);
    const rows = await services.db.withSchema(services.schema).table('ledger').where({ event_id: 'after-planted' });
    expect(rows.map((r) => r.status)).toEqual(rows.map(() => 'done'));
    expect(supervisor.unexpectedExits).toEqual([]);
  });

  it('ids that look like SQL are stored and run as literals', async () => {
    const ids = [
      "1'; drop table ledger; --",
      '1 OR 1=1',
      '"; drop schema public cascade; --',
      "') or ('1'='1",
      '$1',
      '%',
      '_',
      '\\',
      '(select pg_sleep(5))',
      'ledger-1',
      'Robert\'); DROP TABLE "orders";--',
    ];
    for (const id of ids) await effects.emit('order_placed', id);
    await waitForSettled(services.db, services.schema, 30_000);

    const ledger = await services.db.withSchema(services.schema).table('ledger').whereIn('event_id', ids);
    expect(ledger).toHaveLength(ids.length * 10);
    expect(new Set(ledger.map((r) => r.event_id))).toEqual(new Set(ids));
    expect(ledger.every((r) => r.status === 'done')).toBe(true);
    const sink = await services.db.withSchema(appSchema).table('effect_runs').whereIn('order_id', ids);
    expect(sink).toHaveLength(ids.length * 10);
    expect(await services.db.schema.withSchema(services.schema).hasTable('ledger')).toBe(true);
    expect(await services.db.schema.withSchema(appSchema).hasTable('orders')).toBe(true);

    // ...and through the CLI, as job ids and filters: nothing matches, nothing breaks.
    const cli = (...args: string[]) => runCli([...args, '--json', '--config', config.path]);
    const [show, replay, status] = await Promise.all([
      cli('poison', 'show', 'notify-crm', "ledger-1' or '1'='1"),
      cli('replay', '--ids', "1' or '1'='1,ledger-1;drop", '--dry-run'),
      cli('status', '--schema', 'x"; drop table ledger; --'),
    ]);
    expect(show.code).toBe(1);
    expect(show.stderr).toMatch(/^error: /m);
    expect(replay.code, replay.stderr).toBe(0);
    expect(JSON.parse(replay.stdout)).toMatchObject({ matched: 0 });
    expect([0, 1, 2]).toContain(status.code);
    expect(status.stderr).not.toMatch(STACK_FRAME);
    expect(await services.db.schema.withSchema(services.schema).hasTable('ledger')).toBe(true);

    const oracle = await readOracle(services.db, { schema: services.schema, appSchema });
    reportRow({
      ...rowFrom(
        '7 bad input',
        oracle,
        null,
        `CLI runs by exit code 0/1/2: ${exits[0]}/${exits[1]}/${exits[2]}, no stack trace; ${notes.join('; ')}; ` +
          `${ids.length} SQL-looking ids run as literals`,
      ),
      // No orders here: the events are the ids emitted (and one after the planted payloads).
      events: ids.length + 1,
    });
    expect(oracle.lost, JSON.stringify(oracle.lostSample)).toBe(0);
  });
});
