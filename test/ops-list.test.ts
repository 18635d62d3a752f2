import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { audited, type OperationView } from '../src/ops/audit.js';
import { runCli, setupServices, type TestServices } from './helpers.js';

describe('audit trail: ops list, ops show, status', () => {
  let services: TestServices;
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    runCli(['--prefix', services.prefix, '--schema', services.schema, ...args], {
      env: { EFFECTS_REDIS_URL: services.redisUrl, EFFECTS_DATABASE_URL: services.databaseUrl, EFFECTS_ACTOR: '', ...env },
    });
  const list = async (args: string[] = []) => {
    const result = await cli(['ops', 'list', '--json', ...args]);
    expect(result.stderr).toBe('');
    return (JSON.parse(result.stdout) as { operations: OperationView[] }).operations;
  };

  beforeAll(async () => {
    services = await setupServices('ops-list');
    await services.migrate();
    const runtime = services.runtime();
    // What replay and discard record, as they do it.
    await audited(runtime, { command: 'discard', actor: 'bob', reason: 'known bad orders', filter: { queue: 'notify-crm' } }, async () => ({ discarded: 3 }), {
      counts: (r) => ({ matched: 3, discarded: r.discarded }),
    });
    await expect(
      audited(runtime, { command: 'replay', actor: 'carol', filter: { grep: 'ECONNRESET' } }, async () => {
        throw new Error('Redis went away');
      }, { counts: () => ({}) }),
    ).rejects.toThrow('Redis went away');
    // And a real command, run by the CLI: with --actor, then without (the OS user).
    expect((await cli(['--actor', 'alice', 'rebuild', '--since', '1h', '--reason', 'after failover', '--json'])).code).toBe(0);
    expect((await cli(['rebuild', '--since', '2h', '--json'])).code).toBe(0);
  });

  afterAll(async () => {
    await services?.cleanup();
  });

  it('lists operations newest first with who, why, what, counts, outcome and epoch-ms times', async () => {
    const before = Date.now();
    const operations = await list();
    expect(operations.map((o) => o.command)).toEqual(['rebuild', 'rebuild', 'replay', 'discard']);
    const [latest, byAlice, failed, discard] = operations;
    expect(latest.actor).toBe(os.userInfo().username);
    expect(byAlice).toMatchObject({
      actor: 'alice',
      reason: 'after failover',
      outcome: 'ok',
      counts: { scanned: 0, enqueued: 0, alreadyQueued: 0, redriven: 0 },
      filter: { since: expect.any(String), until: expect.any(String) },
    });
    expect(failed).toMatchObject({ actor: 'carol', outcome: 'failed', error: 'Redis went away', filter: { grep: 'ECONNRESET' } });
    expect(discard).toMatchObject({ actor: 'bob', reason: 'known bad orders', counts: { matched: 3, discarded: 3 }, outcome: 'ok' });
    for (const o of operations) {
      expect(Object.keys(o)).toEqual(
        expect.arrayContaining(['id', 'command', 'actor', 'reason', 'filter', 'counts', 'outcome', 'startedAt', 'finishedAt']),
      );
      expect(o.startedAt).toBeTypeOf('number');
      expect(o.startedAt).toBeLessThanOrEqual(before);
      expect(o.finishedAt).toBeGreaterThanOrEqual(o.startedAt);
    }
  });

  it('filters by --command, --limit and --since', async () => {
    expect((await list(['--command', 'rebuild'])).map((o) => o.actor)).toEqual([os.userInfo().username, 'alice']);
    expect(await list(['--limit', '1'])).toHaveLength(1);
    expect(await list(['--since', new Date(Date.now() + 60_000).toISOString()])).toEqual([]);
    expect(await list(['--since', '1h'])).toHaveLength(4);
  });

  it('prints a table a person can read', async () => {
    const result = await cli(['ops', 'list']);
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/started\s+command\s+actor\s+outcome\s+counts/);
    expect(lines).toHaveLength(5);
    expect(result.stdout).toMatch(/replay\s+carol\s+failed/);
    expect(result.stdout).toMatch(/discard\s+bob\s+ok\s+matched 3, discarded 3/);
  });

  it('shows one operation by id or a unique prefix, and exits 1 for one that does not exist', async () => {
    const [, byAlice] = await list();
    const full = await cli(['ops', 'show', byAlice.id, '--json']);
    expect(JSON.parse(full.stdout)).toEqual(byAlice);
    const short = await cli(['ops', 'show', byAlice.id.slice(0, 8)]);
    expect(short.code).toBe(0);
    expect(short.stdout).toContain('after failover');
    expect(short.stdout).toContain(byAlice.id);

    const missing = await cli(['ops', 'show', '00000000-0000-4000-8000-000000000000']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('No operation "00000000-0000-4000-8000-000000000000"');
    const garbage = await cli(['ops', 'show', 'not-an-id']);
    expect(garbage.code).toBe(1);
    expect(garbage.stderr).toContain('No operation "not-an-id"');
  });

  it('exits 2 on a bad --limit or an unknown --command, and 1 when the database is unreachable', async () => {
    const badLimit = await cli(['ops', 'list', '--limit', '0']);
    expect(badLimit.code).toBe(2);
    const typo = await cli(['ops', 'list', '--command', 'replya']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('Allowed choices are replay, discard, rebuild');
    const down = await cli(['ops', 'list'], { EFFECTS_DATABASE_URL: 'postgres://postgres:s3cret@127.0.0.1:1/test' });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('Cannot reach PostgreSQL');
    expect(down.stderr).not.toContain('s3cret');
  });

  it('effects status shows the last operations, and null when the database is unreachable', async () => {
    const status = await cli(['status', '--json']);
    expect(status.code).toBe(0);
    const report = JSON.parse(status.stdout);
    expect(report.recentOperations.map((o: OperationView) => o.command)).toEqual(['rebuild', 'rebuild', 'replay', 'discard']);
    expect(report).toHaveProperty('queues');
    expect(report).toHaveProperty('ledger');

    const human = await cli(['status']);
    expect(human.stdout).toContain('recent operations');
    expect(human.stdout).toMatch(/rebuild\s+alice\s+ok/);

    const down = await cli(['status', '--json'], { EFFECTS_DATABASE_URL: 'postgres://postgres:Hidden-pw-1@127.0.0.1:1/test' });
    expect(down.code).toBe(0);
    const downReport = JSON.parse(down.stdout);
    expect(downReport.recentOperations).toBeNull();
    expect(downReport.ledger).toBeNull();
    expect(downReport.ledgerProblem).toMatch(/^Cannot reach PostgreSQL at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/test \(.+\)/);
    expect(down.stdout).not.toContain('Hidden-pw-1');
  });
});
