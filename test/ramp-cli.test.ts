import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueueSettings } from '../src/ledger/queue-settings.js';
import { readLimits } from '../src/queue/limits.js';
import type { QueueConfig } from '../src/queue/queues.js';
import { spawnCli } from './cli-process.js';
import { runCli, setupServices, waitFor, type TestServices } from './helpers.js';
import { sleep } from '../src/core/sleep.js';

// Run `npm run build` first: these spawn the built binary.
describe('effects pause / resume / ramp (CLI)', () => {
  let services: TestServices;
  let base: string[];
  let configFile: string;

  beforeAll(async () => {
    services = await setupServices('ramp-cli');
    await services.migrate();
    base = ['--redis', services.redisUrl, '--db', services.databaseUrl, '--prefix', services.prefix, '--schema', services.schema];
    // Queues this CLI has no config for: found in Redis.
    for (const name of ['cli-a', 'cli-b']) {
      const queue = new Queue(name, { connection: services.redis, prefix: services.prefix });
      await queue.add('x', {});
      await queue.close();
    }
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'effects-ramp-cli-'));
    configFile = path.join(dir, 'effects.config.mjs');
    await fs.writeFile(
      configFile,
      `export default { effects: [{ name: 'cli-conf', on: 'e', rateLimit: { max: 30, per: '1s' }, globalConcurrency: 6, run() {} }] };\n`,
    );
  });

  afterAll(async () => {
    await fs.rm(path.dirname(configFile), { recursive: true, force: true });
    await services?.cleanup();
  });

  const cli = (...args: string[]) => runCli([...base, ...args]);

  it('pause needs --queue or --all, and known queues (exit 2 saying what was expected)', async () => {
    const [none, unknown] = await Promise.all([cli('pause'), cli('pause', '--queue', 'nope')]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/Expected --queue Q \(repeatable\) or --all/);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/Unknown queue\(s\): nope\. Expected one of: cli-a, cli-b/);
  });

  it('pause --json pauses, writes an audit record and remembers the paused state in the database', async () => {
    const result = await cli('pause', '--queue', 'cli-a', '--actor', 'oncall', '--json');
    expect(result.code).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json).toMatchObject({ paused: ['cli-a'], alreadyPaused: [], removedFromRamp: [], auditSkipped: null });
    const operation = await services.db.withSchema(services.schema).table('operations').where({ id: json.operationId }).first();
    expect(operation).toMatchObject({ command: 'pause', actor: 'oncall', outcome: 'ok' });
    const setting = await services.db.withSchema(services.schema).table('queue_settings').where({ queue: 'cli-a' }).first();
    expect(setting).toMatchObject({ paused: true });
    expect(await new Queue('cli-a', { connection: services.redis, prefix: services.prefix }).isPaused()).toBe(true);
  });

  it('pauses with PostgreSQL down, and warns that no audit record was written', async () => {
    const result = await runCli([...base, '--db', 'postgres://postgres@127.0.0.1:1/nowhere', 'pause', '--queue', 'cli-b', '--json']);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ paused: ['cli-b'], operationId: null });
    expect(result.stderr).toMatch(/warning: no audit record written/);
  });

  it('refuses bad ramp input with exit 2 and what was expected', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--ramp', '10s'], /--to is needed: queue\(s\) cli-a have no configured rate limit/],
      [['--ramp', '10s', '--from', '0', '--to', '10'], /option '--from <rate>' argument '0' is invalid\. Invalid rate "0": expected a positive rate/],
      [['--ramp', '10s', '--from', '-5', '--to', '10'], /expected a positive rate/],
      [['--ramp', '10s', '--from', '50', '--to', '10'], /--from 50\/s is above queue cli-a's target of 10\/s/],
      [['--ramp', '10s', '--from', '5'], /--to is needed: queue\(s\) cli-a have no configured rate limit/],
      [['--from', '5'], /--from only makes sense with --ramp/],
      [['--ramp', '10s', '--from', '5', '--to', '10', '--curve', 'cubic'], /Allowed choices are linear, exponential/],
    ];
    // In parallel: each spawn mostly waits for node to load.
    const results = await Promise.all(cases.map(([args]) => cli('resume', '--queue', 'cli-a', ...args)));
    cases.forEach(([args, message], i) => {
      expect({ args, code: results[i].code }).toEqual({ args, code: 2 });
      expect(results[i].stderr).toMatch(message);
    });
  });

  it('starts a detached ramp, refuses a second one without --replace, shows and cancels it', async () => {
    const first = await cli('resume', '--queue', 'cli-a', '--queue', 'cli-b', '--ramp', '1m', '--from', '5', '--to', '10', '--detach', '--json');
    expect(first.code).toBe(0);
    const started = JSON.parse(first.stdout);
    expect(started).toMatchObject({ outcome: 'detached', replaced: null, auditSkipped: null, ramp: { active: true } });
    expect(started.operationId).toEqual(expect.any(String));
    expect(started.ramp.queues.map((q: { name: string }) => q.name)).toEqual(['cli-a', 'cli-b']);
    expect(first.stderr).toMatch(/no `effects scheduler` has applied ramps/);

    const [again, plain] = await Promise.all([
      cli('resume', '--all', '--ramp', '1m', '--from', '5', '--to', '10'),
      cli('resume', '--queue', 'cli-a'),
    ]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/A ramp is already active \(ramp-/);
    expect(plain.code).toBe(2);
    expect(plain.stderr).toMatch(/under the active ramp/);

    // Ramped anew: cli-b. cli-a, which this ramp does not name, goes on in it from where it was.
    const replaced = await cli('resume', '--queue', 'cli-b', '--ramp', '1m', '--from', '2', '--to', '8', '--detach', '--replace', '--json');
    expect(replaced.code).toBe(0);
    const second = JSON.parse(replaced.stdout);
    expect(second.replaced).toBe(started.ramp.plan.id);
    expect(second.carriedOver).toEqual(['cli-a']);
    // Taken out (pause), then back in: a queue that is not in the active ramp joins it, no --replace needed.
    expect((await cli('pause', '--queue', 'cli-a')).code).toBe(0);
    const joined = await cli('resume', '--queue', 'cli-a', '--ramp', '1m', '--from', '2', '--to', '8', '--detach', '--json');
    expect(joined.stderr).not.toMatch(/error/);
    const third = JSON.parse(joined.stdout);
    expect(third).toMatchObject({ replaced: second.ramp.plan.id, carriedOver: ['cli-b'] });
    expect((await cli('pause', '--queue', 'cli-a')).code).toBe(0);

    const [status, text, overall, overallText] = await Promise.all([
      cli('ramp', 'status', '--json'),
      cli('ramp', 'status'),
      cli('status', '--json'),
      cli('status'),
    ]);
    expect(JSON.parse(overall.stdout).ramp).toMatchObject({ holding: null, queues: [{ name: 'cli-b', to: 8 }] });
    expect(overallText.stdout).toMatch(/ramp \d+%, ends in \d+s \(cli-b [\d.]+\/8 per s\); details: effects ramp status/);
    expect(status.code).toBe(0);
    const shown = JSON.parse(status.stdout);
    expect(shown).toMatchObject({ active: true, plan: { id: third.ramp.plan.id, from: 2, curve: 'linear' }, holding: null });
    expect(shown.queues).toEqual([expect.objectContaining({ name: 'cli-b', phase: 'ramping', to: 8, paused: false })]);
    // cli-b goes on over what was left of its minute.
    expect(shown.etaMs).toBeGreaterThan(30_000);
    expect(shown.etaMs).toBeLessThanOrEqual(60_000);

    expect(text.stdout).toMatch(/jobs\/s \(all queues\)/);
    expect(text.stdout).toMatch(/cli-b\s+ramping/);
    expect(text.stdout).toMatch(/no scheduler seen/);

    const cancelled = await cli('ramp', 'cancel', '--restore', '--json');
    expect(cancelled.code).toBe(0);
    expect(JSON.parse(cancelled.stdout)).toMatchObject({ cancelled: true, restored: true, plan: { outcome: 'cancelled' } });
    const nothing = await cli('ramp', 'cancel', '--json');
    expect(nothing.code).toBe(0);
    expect(JSON.parse(nothing.stdout)).toMatchObject({ cancelled: false });
    const after = JSON.parse((await cli('ramp', 'status', '--json')).stdout);
    expect(after).toMatchObject({ active: false, plan: { outcome: 'cancelled' } });
    expect(JSON.parse((await cli('status', '--json')).stdout).ramp).toBeNull();
  });

  it('waits for a ramp from 1/s to the configured limit and ends with the configured limits in force', async () => {
    // As after an outage: only the duration, the rates from the default and the config.
    const result = await cli('--config', configFile, 'resume', '--queue', 'cli-conf', '--ramp', '1s', '--json');
    expect(result.code).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json).toMatchObject({ outcome: 'finished', ramp: { active: false, plan: { outcome: 'finished', from: 1 } } });
    expect(json.ramp.queues[0]).toMatchObject({ name: 'cli-conf', to: 30, afterSource: 'config' });
    expect(await readLimits(services.redis, services.prefix, 'cli-conf')).toEqual({
      rateLimit: { max: 30, durationMs: 1000 },
      concurrency: 6,
    });
  });

  it('resume --ramp --json says auditSkipped, like pause and resume, when PostgreSQL is down', async () => {
    const result = await runCli([
      ...base,
      '--db',
      'postgres://postgres@127.0.0.1:1/nowhere',
      'resume',
      '--queue',
      'cli-a',
      '--ramp',
      '1m',
      '--from',
      '5',
      '--to',
      '10',
      '--detach',
      '--json',
    ]);
    try {
      expect(result.code).toBe(0);
      const json = JSON.parse(result.stdout);
      expect(json).toMatchObject({ outcome: 'detached', operationId: null, auditSkipped: expect.stringMatching(/PostgreSQL/) });
      expect(result.stderr).toMatch(/warning: no audit record written, and the resumed state is not saved in the database/);
      expect(result.stderr).toContain('If Redis loses its data, workers and rebuilds put back what the database says: run this again once it is reachable.');
    } finally {
      await cli('ramp', 'cancel');
    }
  });

  it('without a config file, ramps to the rate limits the workers last started with; without the database, asks for --to', async () => {
    await new Queue('cli-recorded', { connection: services.redis, prefix: services.prefix }).add('x', {});
    const recorded: QueueConfig = {
      attempts: 3,
      backoff: { type: 'fixed', delay: 10, jitter: 0 },
      retention: { completedAgeMs: 1000, failedAgeMs: 1000 },
      rateLimit: { max: 25, durationMs: 1000 },
      globalConcurrency: 4,
    };
    await new QueueSettings(services.db, services.schema).recordConfigs(new Map([['cli-recorded', recorded]]));
    const withoutDb = await runCli([...base, '--db', 'postgres://postgres@127.0.0.1:1/nowhere', 'resume', '--queue', 'cli-recorded', '--ramp', '1m']);
    expect(withoutDb.code).toBe(2);
    expect(withoutDb.stderr).toMatch(/--to is needed: queue\(s\) cli-recorded have no configured rate limit/);
    expect(withoutDb.stderr).toMatch(/or --config: for queues the config file does not define, the rate limits come from the ledger database, which is unreachable/);

    const result = await cli('resume', '--queue', 'cli-recorded', '--ramp', '1m', '--detach', '--json');
    try {
      expect(result.stderr).not.toMatch(/error/i);
      expect(result.code).toBe(0);
      const [queue] = JSON.parse(result.stdout).ramp.queues;
      expect(queue).toMatchObject({ name: 'cli-recorded', to: 25, after: { rateLimit: { max: 25, durationMs: 1000 }, concurrency: 4 } });
    } finally {
      await cli('ramp', 'cancel');
    }
  });

  it('a waiting resume --ramp follows the plan that a join puts in its place, until it ends', async () => {
    for (const name of ['cli-follow-a', 'cli-follow-b']) await new Queue(name, { connection: services.redis, prefix: services.prefix }).add('x', {});
    const follower = spawnCli([...base, 'resume', '--queue', 'cli-follow-a', '--ramp', '30s', '--from', '2', '--to', '8']);
    try {
      await waitFor(async () => JSON.parse((await cli('ramp', 'status', '--json')).stdout).active === true, 10_000);
      const joined = await cli('resume', '--queue', 'cli-follow-b', '--ramp', '30s', '--from', '2', '--to', '8', '--detach', '--json');
      expect(JSON.parse(joined.stdout)).toMatchObject({ carriedOver: ['cli-follow-a'] });
      // Still applying: the new plan carries its queue on.
      await sleep(1500);
      expect(follower.child.exitCode).toBeNull();
      expect((await cli('ramp', 'cancel')).code).toBe(0);
      const exit = await follower.exited;
      expect(exit.code).toBe(1);
      expect(follower.stdout()).toContain('the ramp was cancelled');
    } finally {
      await follower.kill();
      await cli('ramp', 'cancel');
    }
  });
});
