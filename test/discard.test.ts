import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineEffect } from '../src/index.js';
import type { Runtime } from '../src/core/runtime.js';
import { listOperations } from '../src/ops/audit.js';
import { discard } from '../src/ops/discard.js';
import { rebuild } from '../src/ops/rebuild.js';
import { jobIdForRow, redisKeys } from '../src/queue/keys.js';
import { settleJobs } from './failed-jobs.js';
import { DATABASE_URL, REDIS_URL, ROOT, runCli, setupServices, waitFor, type TestServices } from './helpers.js';

const definitions = [
  defineEffect({ name: 'send-sms', on: 'order_placed', attempts: 1, run() {} }),
];
const config = { effects: definitions };

describe('discard', () => {
  let services: TestServices;
  let runtime: Runtime;
  let noConfigDir: string;

  const ledger = () => services.db.withSchema(services.schema).table('ledger');
  const failed = (queue: string) => services.redis.zrange(`${services.prefix}:${queue}:failed`, 0, -1);

  /**
   * Ledger rows still pending whose jobs BullMQ holds as failed: what a crash between the job's
   * failure and the ledger update leaves behind. A rebuild re-drives exactly these, unless discarded.
   */
  async function pendingRowsWithFailedJobs(orders: string[], error: (order: string) => string) {
    const rows = (await Promise.all(orders.map((id) => runtime.ledger.owe('order_placed', id, ['send-sms'])))).flat();
    await settleJobs(
      services.prefix,
      'send-sms',
      rows.map((row) => ({ name: 'order_placed', data: { event: 'order_placed', id: row.eventId }, opts: { jobId: jobIdForRow(row.id) } })),
      (job) => new Error(error(job.data.id)),
    );
    return rows;
  }

  beforeAll(async () => {
    services = await setupServices('discard');
    await services.migrate();
    runtime = services.runtime(config);
    noConfigDir = mkdtempSync(path.join(os.tmpdir(), 'effects-discard-'));
  });

  afterAll(async () => {
    rmSync(noConfigDir, { recursive: true, force: true });
    await services?.cleanup();
  });

  it('removes matching failed jobs and marks their ledger rows discarded, so a rebuild does not bring them back', async () => {
    const rows = await pendingRowsWithFailedJobs(['501', '502', '503', '504'], (id) =>
      Number(id) % 2 ? `invalid phone number "+1555${id}"` : `carrier timeout after ${id}ms`,
    );
    await services.redis.hset(redisKeys(services.prefix).replayCount('send-sms'), jobIdForRow(rows[0].id), 2);

    const plan = await discard(runtime, { queues: ['send-sms'], grep: 'invalid phone', dryRun: true });
    expect(plan).toMatchObject({ matched: 2, discarded: 2, skipped: 0, dryRun: true });
    expect(plan.plan!.byError).toEqual([expect.objectContaining({ error: 'invalid phone number <str>', count: 2 })]);
    expect(await failed('send-sms')).toHaveLength(4);

    const result = await discard(runtime, { queues: ['send-sms'], grep: 'invalid phone', reason: 'numbers never valid', actor: 'bob' });
    expect(result).toMatchObject({ matched: 2, discarded: 2, skipped: 0, dryRun: false, ledgerRowsDiscarded: 2, stopped: null });

    const [odd1, even1, odd2, even2] = rows;
    expect((await failed('send-sms')).sort()).toEqual([jobIdForRow(even1.id), jobIdForRow(even2.id)].sort());
    expect(await services.redis.exists(`${services.prefix}:send-sms:${jobIdForRow(odd1.id)}`)).toBe(0);
    expect(await services.redis.hget(redisKeys(services.prefix).replayCount('send-sms'), jobIdForRow(odd1.id))).toBeNull();
    const statuses = Object.fromEntries((await ledger().select('id', 'status')).map((r) => [String(r.id), r.status]));
    expect(statuses).toEqual({ [odd1.id]: 'discarded', [odd2.id]: 'discarded', [even1.id]: 'pending', [even2.id]: 'pending' });

    // The rebuild re-drives the two pending rows whose jobs failed, and leaves the discarded ones be.
    const rebuilt = await rebuild(runtime, { since: Date.now() - 3_600_000, audit: false });
    expect(rebuilt).toMatchObject({ scanned: 2, enqueued: 2 });
    expect(await services.redis.exists(`${services.prefix}:send-sms:${jobIdForRow(odd1.id)}`)).toBe(0);

    const [operation] = await listOperations(runtime, { command: 'discard' });
    expect(operation).toMatchObject({ id: result.operationId, actor: 'bob', reason: 'numbers never valid', outcome: 'ok' });
    expect(operation.counts).toMatchObject({ matched: 2, discarded: 2, ledgerRowsDiscarded: 2 });
  });

  it('stops when the ledger refuses its marks, and the audit record counts what it had removed', async () => {
    const orders = Array.from({ length: 20 }, (_, i) => String(601 + i));
    const rows = await pendingRowsWithFailedJobs(orders, (id) => `refused ${id}`);
    const ids = rows.map((r) => jobIdForRow(r.id));
    await waitFor(async () => {
      const now = await failed('send-sms');
      return ids.every((id) => now.includes(id));
    });
    // A refusal that no retry changes: a trigger that rejects the discarded status.
    await services.db.raw(
      `create function ??.refuse_discard() returns trigger language plpgsql as $$ begin raise exception 'no discards here'; end $$`,
      [services.schema],
    );
    await services.db.raw(
      `create trigger refuse_discard before update on ??.ledger for each row when (new.status = 'discarded') execute function ??.refuse_discard()`,
      [services.schema, services.schema],
    );
    try {
      await expect(discard(runtime, { queues: ['send-sms'], ids, pageSize: 1, reason: 'refused' })).rejects.toThrow(/no discards here/);
    } finally {
      await services.db.raw('drop trigger refuse_discard on ??.ledger', [services.schema]);
      await services.db.raw('drop function ??.refuse_discard()', [services.schema]);
    }
    const left = (await failed('send-sms')).filter((id) => ids.includes(id));
    const [operation] = await listOperations(runtime, { command: 'discard' });
    expect(operation).toMatchObject({ outcome: 'failed', reason: 'refused' });
    // The record tells how many jobs left Redis, though their rows stayed pending.
    expect(operation.counts.discarded).toBe(orders.length - left.length);
    expect(operation.counts.discarded).toBeGreaterThan(0);
    expect(left.length).toBeGreaterThan(0);
  });

  it('discards only failed jobs, never one waiting for a retry', async () => {
    await settleJobs(services.prefix, 'retrying', [{ data: { n: 1 } }], () => new Error('later'), {
      attempts: 3,
      backoff: () => 3_600_000,
      settledStates: ['delayed'],
    });
    const result = await discard(runtime, { queues: ['retrying'], useLedger: false });
    expect(result.matched).toBe(0);
    expect(await services.redis.zcard(`${services.prefix}:retrying:delayed`)).toBe(1);
  });

  describe('CLI, on a queue plain BullMQ created', () => {
    const cli = (...args: string[]) =>
      runCli([...args, '--prefix', services.prefix, '--redis', REDIS_URL, '--db', DATABASE_URL, '--schema', services.schema], {
        cwd: noConfigDir,
      });

    it('on a terminal, acts on the jobs it asked to confirm, not on those that failed while it asked', { timeout: 60_000 }, async () => {
      const jobs = Array.from({ length: 101 }, (_, n) => ({ data: { n } }));
      await settleJobs(services.prefix, 'asked', jobs, () => new Error('no'));
      const args = ['discard', '--queue', 'asked', '--reason', 'asked on a terminal', '--prefix', services.prefix, '--schema', services.schema, '--redis', REDIS_URL, '--db', DATABASE_URL];
      // `script` runs the CLI on a pseudo-terminal, as an operator's shell does.
      const command = [process.execPath, path.join(ROOT, 'bin', 'effects.js'), ...args].map((a) => `'${a}'`).join(' ');
      const child = spawn('script', ['-qec', command, '/dev/null'], { cwd: noConfigDir, env: { ...process.env, NO_COLOR: '1' } });
      let output = '';
      child.stdout.on('data', (chunk) => (output += String(chunk)));
      const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
      try {
        await waitFor(() => output.includes('Discard 101 jobs? [y/N]'), 20_000);
        // One more fails while the question is open: not among the 101 the operator is answering for.
        const [late] = await settleJobs(services.prefix, 'asked', [{ data: { n: 'late' } }], () => new Error('no'));
        child.stdin.write('y\n');
        expect(await exited).toBe(0);
        expect(output).toContain('matched 101, discarded 101');
        expect(await failed('asked')).toEqual([late]);
        // The audit record keeps the filter the operator gave: no --until that they did not type.
        const [operation] = await listOperations(runtime, { command: 'discard' });
        expect(operation).toMatchObject({ reason: 'asked on a terminal', filter: { queues: ['asked'] } });
        expect(operation.filter).not.toHaveProperty('until');
      } finally {
        child.kill();
      }
    });

    it('discards by id with the JSON shape of DESIGN.md; exits 2 on bad input', async () => {
      const ids = await settleJobs(services.prefix, 'plain', [0, 1, 2].map((n) => ({ data: { n } })), () => new Error('no'));
      const dry = await cli('discard', '--queue', 'plain', '--dry-run');
      expect(dry.code).toBe(0);
      expect(dry.stdout).toMatch(/would discard 3 failed jobs/);

      // A mistyped id among them is named, on stderr, and the rest goes ahead.
      const { code, stdout, stderr } = await cli('discard', '--queue', 'plain', '--ids', `${ids[1]},nope-1`, '--json', '--reason', 'test');
      expect(code).toBe(0);
      const body = JSON.parse(stdout);
      expect(body).toMatchObject({ matched: 1, discarded: 1, skipped: 0, dryRun: false });
      expect(stderr).toContain('warning: no failed job has the id(s) nope-1; mistyped, or no longer failed? Job ids made by effects look like ledger-123');
      expect(await failed('plain')).toEqual(expect.not.arrayContaining([ids[1]]));
      expect(await failed('plain')).toHaveLength(2);
      // An id of the ledger's form was likely right once: the warning asks what became of it.
      const gone = await cli('discard', '--queue', 'plain', '--ids', 'ledger-999999', '--dry-run');
      expect(gone.stderr).toContain('no failed job has the id(s) ledger-999999; replayed, discarded or removed since? `effects poison show QUEUE ID`');

      const [unknown, since] = await Promise.all([
        cli('discard', '--queue', 'nope', '--dry-run'),
        cli('discard', '--since', '2999-01-01', '--dry-run'),
      ]);
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toMatch(/Unknown queue\(s\): nope\. Expected one of: .*plain/);
      expect(since.code).toBe(2);
      expect(since.stderr).toMatch(/--since is in the future/);
    });
  });
});
