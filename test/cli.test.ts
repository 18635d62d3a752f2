import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Queue, Worker } from 'bullmq';
import type { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../src/cli/program.js';
import { Ledger } from '../src/ledger/ledger.js';
import { spawnCli, writeSlowEffectConfig } from './cli-process.js';
import { DATABASE_URL, REDIS_URL, deleteKeys, runCli, setupServices, waitFor, type TestServices } from './helpers.js';
import { freePort, startPrivateRedis } from './servers.js';

const PASSWORD = 'Sup3rSecretPw';

/** A TCP server that accepts connections and never says a word: the worst kind of unreachable. */
async function silentServer(): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

async function timed<T>(run: () => Promise<T>): Promise<T & { ms: number }> {
  const started = Date.now();
  const result = await run();
  return { ...result, ms: Date.now() - started };
}

/**
 * The 5 s promise is about how long the CLI waits for a server, not about how long Node takes to
 * start on a machine shared with other test runs: `--version`, started alongside the probes so it
 * meets the same load, measures startup, and the limit grows by whatever it takes beyond half a
 * second. On an idle machine the limit is 5 s.
 */
async function withStartupAllowance<T>(probes: Array<() => Promise<T>>, cwd: string) {
  const [startup, ...results] = await Promise.all([
    timed(() => runCli(['--version'], { cwd })),
    ...probes.map((probe) => timed(probe)),
  ]);
  return { limit: 5000 + Math.max(0, startup.ms - 500), results };
}

describe('effects CLI as a process', () => {
  let services: TestServices;
  let emptyDir: string;

  beforeAll(async () => {
    services = await setupServices('cli');
    // A working directory without a config file: the CLI must work on queues it did not create.
    emptyDir = mkdtempSync(path.join(os.tmpdir(), 'effects-cli-'));
  });

  afterAll(async () => {
    await services?.cleanup();
    rmSync(emptyDir, { recursive: true, force: true });
  });

  const connection = () => ['--redis', REDIS_URL, '--db', DATABASE_URL, '--prefix', services.prefix, '--schema', services.schema];

  it('--help lists examples, for the program and for every command', async () => {
    const [top, status] = await Promise.all([
      runCli(['--help'], { cwd: emptyDir }),
      runCli(['status', '--help'], { cwd: emptyDir }),
    ]);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain('Examples:');
    expect(top.stdout).toContain('Exit codes: 0 success, 1 runtime failure');
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('Examples:\n  $ effects status');

    // Every command, walked in-process (spawning each would take long): the help text a leaf
    // command prints has its own examples; a group such as `poison` lists subcommands that do.
    const program = buildProgram(() => {});
    const leaves: Array<[string, Command]> = [];
    const walk = (command: Command, path: string[]) => {
      const subcommands = command.commands.filter((c) => c.name() !== 'help');
      if (subcommands.length === 0) leaves.push([path.join(' '), command]);
      for (const sub of subcommands) walk(sub, [...path, sub.name()]);
    };
    walk(program, []);
    expect(leaves.map(([name]) => name)).toEqual(expect.arrayContaining(['worker', 'scheduler', 'status', 'migrate', 'rebuild']));
    for (const [name, command] of leaves) {
      let text = '';
      command.configureOutput({ writeOut: (chunk) => (text += chunk), writeErr: (chunk) => (text += chunk) });
      command.outputHelp();
      expect({ command: name, examples: text.includes(`Examples:\n  $ effects ${name}`) }).toEqual({ command: name, examples: true });
    }
  });

  it('exits 2 on an unknown flag or command, naming it', async () => {
    const [flag, command] = await Promise.all([
      runCli(['status', '--bogus'], { cwd: emptyDir }),
      runCli(['statsu'], { cwd: emptyDir }),
    ]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain("unknown option '--bogus'");
    expect(command.code).toBe(2);
    expect(command.stderr).toContain("unknown command 'statsu'");
    expect(command.stderr).toContain('status');
  });

  it('exits 2 on a bad duration, saying what was expected', async () => {
    const [since, timeout] = await Promise.all([
      runCli(['rebuild', '--since', '3x'], { cwd: emptyDir }),
      runCli(['worker', '--shutdown-timeout', '5'], { cwd: emptyDir }),
    ]);
    expect(since.code).toBe(2);
    expect(since.stderr).toContain('"3x"');
    expect(since.stderr).toContain('expected a duration before now (90s, 15m, 2h, 3d) or an ISO-8601 timestamp');
    expect(timeout.code).toBe(2);
    expect(timeout.stderr).toContain('expected a duration like 90s, 15m, 2h or 3d');
  });

  it('exits 2 on a scheduler period too short to be meant (a typo sets it for every scheduler of the fleet)', async () => {
    const config = 'examples/orders/effects.config.ts'; // the CLI runs in the repository's root
    const [zero, tiny, lookback] = await Promise.all([
      runCli(['scheduler', '--config', config, ...connection(), '--every', '0s']),
      runCli(['scheduler', '--config', config, ...connection(), '--every', '1ms']),
      runCli(['scheduler', '--config', config, ...connection(), '--lookback', '0s']),
    ]);
    expect([zero.code, tiny.code, lookback.code]).toEqual([2, 2, 2]);
    expect(zero.stderr).toContain('The rebuild period (--every, scheduler.every) is 0ms; it must be at least 1s.');
    expect(tiny.stderr).toContain('is 1ms; it must be at least 1s');
    expect(lookback.stderr).toContain('The rebuild lookback (--lookback, scheduler.lookback) must be longer than 0');
  });

  it('exits 2 when an option that needs a value is given another option instead (--actor --json)', async () => {
    const [actor, reason] = await Promise.all([
      runCli(['migrate', '--actor', '--json'], { cwd: emptyDir }),
      runCli(['replay', '--reason', '--yes', '--dry-run'], { cwd: emptyDir }),
    ]);
    expect(actor.code).toBe(2);
    expect(actor.stderr).toContain('--actor needs a value, but got the option --json.');
    expect(reason.code).toBe(2);
    expect(reason.stderr).toContain('--reason needs a value, but got the option --yes.');
  });

  it('exits 1 within 5 s on an unreachable Redis, with the URL minus password and a hint', async () => {
    const closedPort = await freePort();
    const silent = await silentServer();
    try {
      const urls = [`redis://default:${PASSWORD}@127.0.0.1:${closedPort}`, `redis://:${PASSWORD}@127.0.0.1:${silent.port}`];
      const { limit, results } = await withStartupAllowance(
        urls.map((url) => () => runCli(['status', '--redis', url], { cwd: emptyDir })),
        emptyDir,
      );
      expect(results[0].stderr).toContain(`Cannot reach Redis at redis://default:***@127.0.0.1:${closedPort}`);
      expect(results[1].stderr).toContain(`Cannot reach Redis at redis://:***@127.0.0.1:${silent.port}`);
      for (const result of results) {
        expect(result.code).toBe(1);
        expect(result.ms).toBeLessThan(limit);
        expect(result.stderr).toContain('hint: Is Redis running?');
        expect(result.stderr).not.toMatch(/\n\s+at /); // no stack trace
        expect(result.stdout + result.stderr).not.toContain(PASSWORD);
      }
    } finally {
      silent.close();
    }
  });

  it('exits 1 within 5 s on an unreachable PostgreSQL for migrate, with the URL minus password and a hint', async () => {
    const closedPort = await freePort();
    const silent = await silentServer();
    try {
      const urls = [
        `postgres://postgres:${PASSWORD}@127.0.0.1:${closedPort}/test`,
        `postgres://postgres:${PASSWORD}@127.0.0.1:${silent.port}/test`,
      ];
      const { limit, results } = await withStartupAllowance(
        urls.map((url) => () => runCli(['migrate', '--db', url], { cwd: emptyDir })),
        emptyDir,
      );
      results.forEach((result, i) => {
        expect(result.code).toBe(1);
        expect(result.ms).toBeLessThan(limit);
        expect(result.stderr).toContain(`Cannot reach PostgreSQL at ${urls[i].replace(PASSWORD, '***')}`);
        expect(result.stderr).toContain('hint: Is PostgreSQL running?');
        expect(result.stdout + result.stderr).not.toContain(PASSWORD);
      });
    } finally {
      silent.close();
    }
  });

  it('exits 2 on a database setting that is not a PostgreSQL URL, naming the setting', async () => {
    for (const args of [['migrate', '--db', 'localhost'], ['status', '--json', '--db', `pg:${PASSWORD}@db`]]) {
      const result = await runCli([...args, '--redis', REDIS_URL], { cwd: emptyDir });
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('Not a PostgreSQL URL');
      expect(result.stderr).toContain('Check --db, EFFECTS_DATABASE_URL');
      expect(result.stdout).toBe('');
      expect(result.stderr).not.toContain(PASSWORD);
    }
    // A password with # in it, not percent-encoded: the driver cannot parse the URL, which is not an outage.
    const unencoded = await runCli(['rebuild', '--since', '1h', '--json', '--db', `postgres://app:${PASSWORD}#1@127.0.0.1:5432/test`, '--redis', REDIS_URL], { cwd: emptyDir });
    expect(unencoded.code).toBe(2);
    expect(unencoded.stderr).toContain('Not a PostgreSQL URL');
    expect(unencoded.stderr).toContain('is written percent-encoded (%40 %3A %2F %3F %23 %25)');
    expect(unencoded.stderr).not.toContain(PASSWORD);
  });

  it('exits 2 on a Redis setting that is not redis://, rediss:// or a socket path, naming the setting', { timeout: 60_000 }, async () => {
    const runs = await Promise.all([
      runCli(['status', '--json', '--redis', 'notaurl', '--db', DATABASE_URL], { cwd: emptyDir }),
      runCli(['status', '--json', '--redis', `http://user:${PASSWORD}@x`, '--db', DATABASE_URL], { cwd: emptyDir }),
      runCli(['poison', 'list', '--json'], { cwd: emptyDir, env: { EFFECTS_REDIS_URL: 'localhost:6379' } }),
      runCli(['status', '--json', '--redis', `redis://:${PASSWORD}@[::1`], { cwd: emptyDir }),
      // A % that starts no escape: ioredis fails to decode it with only "URI malformed".
      runCli(['status', '--json', '--redis', `redis://:${PASSWORD}%Pw@127.0.0.1:6379`], { cwd: emptyDir }),
    ]);
    for (const result of runs) {
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('Not a Redis URL');
      expect(result.stderr).toContain('Expected redis://');
      expect(result.stderr).toContain('rediss://');
      expect(result.stderr).toContain('Unix socket path');
      expect(result.stderr).toContain('Check --redis, EFFECTS_REDIS_URL / REDIS_URL');
      expect(result.stdout).toBe('');
      expect(result.stderr).not.toContain(PASSWORD);
      expect(result.stderr).not.toMatch(/\n\s+at /);
    }
    expect(runs[1].stderr).toContain('Not a Redis URL: http://user:***@x');
    // A socket path is a Redis setting ioredis takes: not a usage error, only an unreachable server.
    const socket = await runCli(['status', '--redis', path.join(emptyDir, 'no-redis.sock')], { cwd: emptyDir });
    expect(socket.code).toBe(1);
    expect(socket.stderr).toContain('Cannot reach Redis at');
  });

  it('exits 2 on a time that is no calendar date or time, saying what was expected', { timeout: 60_000 }, async () => {
    // More forms in duration.test.ts; here, that the CLI turns them into exit 2 with the message.
    const times = ['2026-02-31', '2025-02-29T10:00:00Z'];
    const results = await Promise.all(times.map((t) => runCli(['poison', 'list', '--since', t, ...connection()], { cwd: emptyDir })));
    results.forEach((result, i) => {
      expect({ time: times[i], code: result.code }).toEqual({ time: times[i], code: 2 });
      expect(result.stderr).toContain(`"${times[i]}"`);
      expect(result.stderr).toContain('an ISO-8601 timestamp (2026-11-26T09:00:00Z)');
    });
  });

  it('exits 2 on an empty window: --since equal to --until, for poison list, replay and discard', { timeout: 60_000 }, async () => {
    const at = '2026-01-01T00:00:00Z';
    const window = ['--since', at, '--until', at];
    const results = await Promise.all([
      runCli(['poison', 'list', ...window, ...connection()], { cwd: emptyDir }),
      runCli(['replay', ...window, '--dry-run', ...connection()], { cwd: emptyDir }),
      runCli(['discard', ...window, '--dry-run', ...connection()], { cwd: emptyDir }),
    ]);
    for (const result of results) {
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(`--since ${new Date(at).toISOString()} is not before --until`);
    }
  });

  it('exits 2 when a command group is given no subcommand; --help and --version exit 0', { timeout: 60_000 }, async () => {
    const groups = [[], ['poison'], ['ramp'], ['help', 'nosuch']];
    const fine = [['poison', '--help'], ['--version'], ['help', 'poison'], ['ops', 'list', '--json', '-V']];
    const [missing, shown] = await Promise.all([
      Promise.all(groups.map((args) => runCli(args, { cwd: emptyDir }))),
      Promise.all(fine.map((args) => runCli(args, { cwd: emptyDir }))),
    ]);
    missing.forEach((result, i) => {
      expect({ args: groups[i], code: result.code }).toEqual({ args: groups[i], code: 2 });
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(/^error: \S/m);
    });
    expect(missing[1].stderr).toContain("error: missing subcommand: 'effects poison' expects one of: list, show");
    expect(missing[0].stderr).toMatch(/error: missing subcommand: 'effects' expects one of: worker, scheduler, status/);
    expect(missing[3].stderr).toContain("error: unknown command 'nosuch'");
    // The version, as JSON when --json asks for JSON on stdout (the fuzzer's find).
    expect(shown[1].stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    expect(JSON.parse(shown[3].stdout)).toEqual({ version: shown[1].stdout.trim() });

    // Every group, found by walking the program in-process (spawning each would take long).
    const groupsOf = (command: Command, path: string[] = []): string[][] => {
      const subs = command.commands.filter((c) => c.name() !== 'help');
      return subs.length ? [path, ...subs.flatMap((c) => groupsOf(c, [...path, c.name()]))] : [];
    };
    const all = groupsOf(buildProgram(() => {}));
    expect(all).toEqual(expect.arrayContaining([['poison'], ['ramp'], ['ops']]));
    for (const path of all) {
      const program = buildProgram(() => {});
      const quiet = (c: Command): void => {
        c.configureOutput({ writeOut: () => {}, writeErr: () => {} });
        c.commands.forEach(quiet);
      };
      quiet(program);
      await expect(program.parseAsync(['node', 'effects', ...path]), path.join(' ')).rejects.toMatchObject({ exitCode: 2 });
    }
    shown.forEach((result, i) => {
      expect({ args: fine[i], code: result.code }).toEqual({ args: fine[i], code: 0 });
      expect(result.stdout).not.toBe('');
    });
  });

  it('replay and discard --json always carry operationId: null on a dry run and with --no-ledger', { timeout: 60_000 }, async () => {
    // A prefix with no queues: nothing matches, nothing is changed, and the shape is what is tested.
    const prefix = `${services.prefix}_opid`;
    const args = ['--redis', REDIS_URL, '--db', DATABASE_URL, '--prefix', prefix, '--schema', services.schema, '--json'];
    try {
      const runs = await Promise.all([
        runCli(['replay', '--dry-run', ...args], { cwd: emptyDir }),
        runCli(['replay', '--no-ledger', '--yes', ...args], { cwd: emptyDir }),
        runCli(['discard', '--dry-run', ...args], { cwd: emptyDir }),
        runCli(['discard', '--no-ledger', '--yes', ...args], { cwd: emptyDir }),
      ]);
      for (const result of runs) {
        expect(result.stderr).toBe('');
        expect(result.code).toBe(0);
        const json = JSON.parse(result.stdout);
        expect(json).toHaveProperty('operationId', null);
        expect(json).toMatchObject({ matched: 0, skipped: 0 });
      }
    } finally {
      await deleteKeys(services.redis, `${prefix}:*`);
    }
  });

  it('status --watch --json prints one compact JSON object per line per tick (NDJSON), through a Redis restart', { timeout: 60_000 }, async () => {
    const redis = await startPrivateRedis();
    const args = ['--redis', redis.url, '--db', DATABASE_URL, '--prefix', services.prefix, '--schema', services.schema];
    const watch = spawnCli(['status', '--watch', '1s', '--json', ...args], { cwd: emptyDir });
    const objects = () => watch.stdout().split('\n').filter(Boolean).length;
    try {
      await waitFor(() => objects() >= 1, 15000);
      // Redis goes away for a moment: the dashboard says so and goes on.
      await redis.kill();
      await waitFor(() => /warning: Cannot reach Redis/.test(watch.stderr()), 15000);
      await redis.start();
      const before = objects();
      await waitFor(() => objects() > before, 15000);
      watch.child.kill('SIGINT');
      expect(await watch.exited).toEqual({ code: 0, signal: null });
      const lines = watch.stdout().split('\n');
      expect(lines.at(-1)).toBe(''); // every object ends its line
      for (const line of lines.slice(0, -1)) {
        expect(JSON.parse(line)).toMatchObject({ queues: expect.any(Array) });
      }
      const help = await runCli(['status', '--help'], { cwd: emptyDir });
      expect(help.stdout).toContain('one compact JSON object per line');
    } finally {
      await watch.kill();
      await redis.stop();
    }
  });

  it('status --watch: Ctrl-C ends a long wait at once; more often than every second is refused', { timeout: 60_000 }, async () => {
    const watch = spawnCli(['status', '--watch', '1h', ...connection()], { cwd: emptyDir });
    try {
      await waitFor(() => watch.stdout().includes('queue') || watch.stdout().includes('No queues'), 15000);
      watch.child.kill('SIGINT');
      const exited = await Promise.race([watch.exited, new Promise((resolve) => setTimeout(() => resolve('still waiting'), 10_000))]);
      expect(exited).toEqual({ code: 0, signal: null });
    } finally {
      await watch.kill();
    }
    const tooOften = await runCli(['status', '--watch', '200ms', ...connection()], { cwd: emptyDir });
    expect(tooOften.code).toBe(2);
    expect(tooOften.stderr).toContain('every 1s at the most');
    // Unreachable from the start: an error like any other command's, not a dashboard waiting forever.
    const unreachable = await runCli(['status', '--watch', '1s', '--redis', 'redis://127.0.0.1:1'], { cwd: emptyDir });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain('Cannot reach Redis at redis://127.0.0.1:1');
  });

  it('status --json reports queues made by plain BullMQ, with no config file', async () => {
    const conn = { connection: services.redis, prefix: services.prefix };
    const orders = new Queue('plain-orders', conn);
    const paused = new Queue('plain-paused', conn);
    const worker = new Worker(
      'plain-orders',
      async (job) => {
        if (job.name === 'bad') throw new Error('always broken');
      },
      { ...conn, connection: services.redis.duplicate() },
    );
    try {
      await orders.add('ok', { event: 'order_placed', id: '1' });
      await orders.add('bad', { event: 'order_placed', id: '2' }, { attempts: 5, backoff: { type: 'fixed', delay: 1 } });
      await waitFor(async () => (await orders.getJobCounts('completed', 'failed')).failed === 1);
      await worker.close();
      for (const id of ['3', '4', '5']) await orders.add('waiting', { event: 'order_placed', id });
      await orders.add('later', { event: 'order_placed', id: '6' }, { delay: 60_000 });
      await paused.pause();
      await paused.add('held', { event: 'order_placed', id: '7' });

      const unmigrated = await runCli(['status', '--json', ...connection()], { cwd: emptyDir });
      expect(unmigrated.stderr).toBe('');
      expect(unmigrated.code).toBe(0);
      const report = JSON.parse(unmigrated.stdout);
      expect(report.ledger).toBeNull();
      expect(report.ledgerProblem).toMatch(/^no ledger in schema ".*": run `effects migrate`, or check --schema$/);
      expect(report.queues.map((q: { name: string }) => q.name)).toEqual(['plain-orders', 'plain-paused']);
      const [ordersStatus, pausedStatus] = report.queues;
      expect(ordersStatus).toMatchObject({
        name: 'plain-orders',
        waiting: 3,
        active: 0,
        delayed: 1,
        failed: 1,
        poison: 1,
        completed: 1,
        paused: false,
        oldestWaitingMs: expect.any(Number),
      });
      expect(ordersStatus.oldestWaitingMs).toBeGreaterThanOrEqual(0);
      expect(pausedStatus).toMatchObject({ name: 'plain-paused', waiting: 1, paused: true, oldestWaitingMs: expect.any(Number) });

      await services.migrate();
      const ledger = new Ledger(services.db, services.schema);
      const rows = await ledger.owe('order_placed', '1', ['plain-orders']);
      await ledger.owe('order_placed', '2', ['plain-orders']);
      await ledger.setStatus([rows[0].id], 'done');
      const migrated = await runCli(['status', '--json', ...connection()], { cwd: emptyDir });
      expect(migrated.code).toBe(0);
      expect(JSON.parse(migrated.stdout).ledger).toEqual([
        { effect: 'plain-orders', pending: 1, done: 1, failed: 0, discarded: 0 },
      ]);
    } finally {
      await worker.close();
      await orders.close();
      await paused.close();
    }
  });

  it('the worker refuses an unmigrated ledger naming `effects migrate`; after migrate it runs and stops on SIGTERM', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'effects-cli-worker-'));
    const schema = `${services.schema}_w`;
    const args = ['--redis', REDIS_URL, '--db', DATABASE_URL, '--prefix', `${services.prefix}_w`, '--schema', schema];
    try {
      writeSlowEffectConfig(dir);
      const refused = await runCli(['worker', ...args], { cwd: dir });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(`The ledger in schema "${schema}" is not migrated`);
      expect(refused.stderr).toContain('`effects migrate`');

      const migrated = await runCli(['migrate', ...args], { cwd: dir });
      expect(migrated.code).toBe(0);
      expect(migrated.stdout).toContain(`Applied to schema "${schema}": 001_ledger`);
      const again = await runCli(['migrate', '--json', ...args], { cwd: dir });
      expect(again.code).toBe(0);
      expect(JSON.parse(again.stdout)).toMatchObject({ schema, applied: [] });

      const worker = spawnCli(['worker', ...args], { cwd: dir });
      try {
        await worker.waitForOutput(/worker started/);
        worker.child.kill('SIGTERM');
        expect(await worker.exited).toEqual({ code: 0, signal: null });
        // Log lines are written in chunks; the last ones, logged just before exit, are written too.
        expect(worker.logs().map((line) => line.msg).slice(-1)).toEqual(['worker stopped']);
      } finally {
        await worker.kill();
      }
    } finally {
      await services.db.raw('drop schema if exists ?? cascade', [schema]);
      await deleteKeys(services.redis, `${services.prefix}_w:*`);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
