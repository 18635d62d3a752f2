import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotFoundError, UsageError } from '../src/core/errors.js';
import type { Runtime } from '../src/core/runtime.js';
import { listPoison, showPoison } from '../src/ops/poison.js';
import { redisKeys } from '../src/queue/keys.js';
import { settleJobs, tieFailedScores } from './failed-jobs.js';
import { DATABASE_URL, REDIS_URL, runCli, setupServices, type TestServices } from './helpers.js';

/**
 * `poison list` and `poison show` against queues and jobs that plain BullMQ code created and
 * failed, with no config file: the CLI must be useful on deployments it did not create.
 */
describe('poison list / poison show', () => {
  let services: TestServices;
  let runtime: Runtime;
  let noConfigDir: string;
  let emailIds: string[];
  let ledgerJobId: string;
  let ledgerRowId: string;

  const emailError = (n: number) =>
    n % 3 === 0 ? new Error(`SMTP 550 mailbox "u${n}@example.com" unavailable`) : new Error(`timeout after ${1000 + n}ms`);

  beforeAll(async () => {
    services = await setupServices('poison');
    await services.migrate();
    runtime = services.runtime();
    noConfigDir = mkdtempSync(path.join(os.tmpdir(), 'effects-poison-'));
    const { prefix } = services;

    // 12 jobs that fail all 5 attempts: 4 with an SMTP error, 8 with a timeout.
    emailIds = await settleJobs(
      prefix,
      'emails',
      Array.from({ length: 12 }, (_, n) => ({ name: 'send', data: { n, to: `u${n}@example.com` } })),
      (job) => emailError(job.data.n),
      { attempts: 5 },
    );
    // 3 jobs that failed for good after 2 attempts: failures, but not poison pills at threshold 5.
    await settleJobs(prefix, 'sms', [0, 1, 2].map((n) => ({ data: { n } })), () => new Error('carrier rejected'), {
      attempts: 2,
    });
    // 2 jobs on their 5th failure of 10, waiting an hour for the next retry: poison pills too.
    await settleJobs(prefix, 'webhooks', [0, 1].map((n) => ({ name: 'deliver', data: { n } })), () => new Error('HTTP 503'), {
      attempts: 10,
      backoff: (attemptsMade) => (attemptsMade >= 5 ? 3_600_000 : 0),
      settledStates: ['delayed'],
    });
    // A job the effects way: a ledger row, a job id derived from it, thin { event, id } data.
    const [row] = await runtime.ledger.owe('order_placed', '77', ['notify-crm']);
    ledgerRowId = row.id;
    ledgerJobId = `ledger-${row.id}`;
    await settleJobs(
      prefix,
      'notify-crm',
      [{ name: 'order_placed', data: { event: 'order_placed', id: '77' }, opts: { jobId: ledgerJobId } }],
      () => new Error('CRM said 500'),
      { attempts: 5 },
    );
  });

  afterAll(async () => {
    rmSync(noConfigDir, { recursive: true, force: true });
    await services?.cleanup();
  });

  const cli = (...args: string[]) =>
    runCli([...args, '--prefix', services.prefix, '--redis', REDIS_URL, '--db', DATABASE_URL, '--schema', services.schema], {
      cwd: noConfigDir,
    });

  it('finds failed and delayed poison pills on queues plain BullMQ created, and leaves out jobs below the threshold', async () => {
    const list = await listPoison(runtime);
    expect(list.total).toBe(12 + 2 + 1);
    expect(list.threshold).toBe(5);
    expect(list.queues).toEqual(['emails', 'notify-crm', 'sms', 'webhooks']);
    expect(list.jobs.filter((j) => j.queue === 'sms')).toEqual([]);
    const webhooks = list.jobs.filter((j) => j.queue === 'webhooks');
    expect(webhooks.map((j) => j.state)).toEqual(['delayed', 'delayed']);
    expect(webhooks.every((j) => j.attemptsMade === 5 && j.failedReason === 'HTTP 503')).toBe(true);
    const email = list.jobs.find((j) => j.queue === 'emails' && j.id === emailIds[3])!;
    expect(email).toMatchObject({
      name: 'send',
      data: { n: 3, to: 'u3@example.com' },
      attemptsMade: 5,
      failedReason: 'SMTP 550 mailbox "u3@example.com" unavailable',
      state: 'failed',
      replayCount: 0,
    });
    expect(email.finishedOn).toBeGreaterThanOrEqual(email.timestamp!);
  });

  it('lists the newest failures first and counts every match in total, whatever the limit', async () => {
    const list = await listPoison(runtime, { queues: ['emails'], limit: 5 });
    expect(list.total).toBe(12);
    expect(list.jobs).toHaveLength(5);
    const times = list.jobs.map((j) => j.finishedOn!);
    expect([...times].sort((a, b) => b - a)).toEqual(times);
  });

  it('takes the threshold from --threshold or --min-attempts', async () => {
    expect((await listPoison(runtime, { threshold: 2 })).total).toBe(18);
    expect((await listPoison(runtime, { minAttempts: 1, queues: ['sms'] })).total).toBe(3);
    expect((await listPoison(runtime, { threshold: 6 })).total).toBe(0);
  });

  it('says how many jobs failed for good below the threshold when none reached it', async () => {
    // The sms jobs failed for good after 2 attempts: the worker alerted on them, the list has none.
    expect(await listPoison(runtime, { queues: ['sms'] })).toMatchObject({ total: 0, failedBelowThreshold: 3 });
    expect((await listPoison(runtime, { queues: ['sms'], since: Date.now() - 3_600_000 })).failedBelowThreshold).toBeUndefined();
    expect((await listPoison(runtime, { queues: ['emails'] })).failedBelowThreshold).toBeUndefined();
    const text = await cli('poison', 'list', '--queue', 'sms');
    expect(text.stdout).toContain('No poison pills (jobs with 5+ attempts) in 1 queue(s).');
    expect(text.stdout).toContain('3 job(s) failed for good with fewer attempts');
    expect(text.stdout).toContain('`effects poison list --min-attempts 1` lists them.');
  });

  it('filters by queue, regular expression (message, name or data), ids and time', async () => {
    const smtp = await listPoison(runtime, { grep: 'SMTP \\d+' });
    expect(smtp.jobs.map((j) => j.data)).toEqual(expect.arrayContaining([{ n: 0, to: 'u0@example.com' }]));
    expect(smtp.total).toBe(4);
    expect((await listPoison(runtime, { grep: 'deliver' })).total).toBe(2);
    expect((await listPoison(runtime, { grep: 'u11@example' })).total).toBe(1);
    const ids = await listPoison(runtime, { queues: ['emails'], ids: [emailIds[0], emailIds[1], 'no-such-job'] });
    expect(ids.jobs.map((j) => j.id).sort()).toEqual([emailIds[0], emailIds[1]].sort());
    expect((await listPoison(runtime, { since: Date.now() - 60_000 })).total).toBe(15);
    expect((await listPoison(runtime, { until: Date.now() - 60_000 })).total).toBe(0);
  });

  it('groups by error fingerprint with counts, first and last seen and sample ids, and filters by group', async () => {
    const list = await listPoison(runtime, { byError: true, samplesPerGroup: 3 });
    const groups = list.groups!;
    expect(groups.map((g) => [g.queue, g.error, g.count])).toEqual([
      ['emails', 'timeout after <n>ms', 8],
      ['emails', 'SMTP <n> mailbox <str> unavailable', 4],
      ['webhooks', 'HTTP 503', 2],
      ['notify-crm', 'CRM said <n>', 1],
    ]);
    for (const g of groups) {
      expect(g.firstSeen).toBeLessThanOrEqual(g.lastSeen!);
      expect(g.sampleIds.length).toBe(Math.min(3, g.count));
      expect(g.id).toMatch(/^[0-9a-f]{8}$/);
    }
    const smtp = groups[1];
    const scoped = await listPoison(runtime, { errorGroup: smtp.id });
    expect(scoped.total).toBe(4);
    expect(scoped.jobs.every((j) => j.errorGroup === smtp.id && j.failedReason!.startsWith('SMTP'))).toBe(true);
  });

  it('pages through long runs of equal finishedOn without skipping or repeating a job', async () => {
    await tieFailedScores(services.redis, services.prefix, 'emails', 1_700_000_000_000);
    const list = await listPoison(runtime, { queues: ['emails'], pageSize: 5, limit: 100 });
    expect(list.total).toBe(12);
    expect(new Set(list.jobs.map((j) => j.id)).size).toBe(12);
  });

  it('shows each job\'s replay count', async () => {
    await services.redis.hset(redisKeys(services.prefix).replayCount('emails'), emailIds[2], 3);
    const list = await listPoison(runtime, { queues: ['emails'], ids: [emailIds[2]] });
    expect(list.jobs[0].replayCount).toBe(3);
  });

  it('refuses bad filters with usage errors that say what was expected', async () => {
    await expect(listPoison(runtime, { grep: '(unclosed' })).rejects.toThrow(/Invalid --grep.*Expected a JavaScript regular expression/);
    await expect(listPoison(runtime, { since: Date.now() + 3_600_000 })).rejects.toThrow(/--since is in the future/);
    await expect(listPoison(runtime, { since: Date.now() - 1000, until: Date.now() - 60_000 })).rejects.toThrow(
      /--since .* is not before --until/,
    );
    const unknown = listPoison(runtime, { queues: ['emials'] });
    await expect(unknown).rejects.toBeInstanceOf(UsageError);
    await expect(unknown).rejects.toThrow(/Unknown queue\(s\): emials\. Expected one of: emails, notify-crm, sms, webhooks/);
  });

  it('shows everything about one job: data, attempts, every error with its stack, timestamps', async () => {
    const detail = await showPoison(runtime, 'emails', emailIds[3]);
    expect(detail).toMatchObject({
      queue: 'emails',
      id: emailIds[3],
      name: 'send',
      data: { n: 3, to: 'u3@example.com' },
      state: 'failed',
      attemptsMade: 5,
      maxAttempts: 5,
      poison: true,
      replayCount: 0,
      ledger: null,
    });
    expect(detail.errors).toHaveLength(5);
    expect(detail.errors[4].message).toBe('Error: SMTP 550 mailbox "u3@example.com" unavailable');
    expect(detail.errors[4].stack).toMatch(/\n\s+at /);
    expect(detail.finishedOn).toBeGreaterThanOrEqual(detail.processedOn!);
    expect(detail.ledgerNote).toMatch(/not an effects job/);

    const delayed = await showPoison(runtime, 'webhooks', (await listPoison(runtime, { queues: ['webhooks'] })).jobs[0].id);
    expect(delayed.state).toBe('delayed');
    expect(delayed.retryAt).toBeGreaterThan(Date.now() + 3_000_000);
  });

  it('shows the ledger row of a job that has one', async () => {
    const detail = await showPoison(runtime, 'notify-crm', ledgerJobId);
    expect(detail.ledger).toMatchObject({ id: ledgerRowId, effect: 'notify-crm', event: 'order_placed', eventId: '77' });
    // Times are epoch ms, as everywhere else in the operator API and its JSON.
    expect(detail.ledger).toMatchObject({ createdAt: expect.any(Number), updatedAt: expect.any(Number), finishedAt: null });
    expect(Math.abs(detail.ledger!.createdAt - Date.now())).toBeLessThan(600_000);
  });

  it('says so when the job does not exist', async () => {
    await expect(showPoison(runtime, 'emails', 'no-such-job')).rejects.toBeInstanceOf(NotFoundError);
  });

  describe('CLI', () => {
    it('prints the DESIGN.md JSON shape, with groups under --by-error', async () => {
      const { code, stdout } = await cli('poison', 'list', '--json', '--by-error', '--queue', 'emails,webhooks');
      expect(code).toBe(0);
      const body = JSON.parse(stdout);
      expect(body.total).toBe(14);
      for (const job of body.jobs) {
        expect(Object.keys(job)).toEqual(
          expect.arrayContaining(['queue', 'id', 'name', 'data', 'attemptsMade', 'failedReason', 'state', 'timestamp', 'finishedOn']),
        );
      }
      for (const group of body.groups) {
        expect(Object.keys(group)).toEqual(expect.arrayContaining(['queue', 'error', 'count', 'firstSeen', 'lastSeen', 'sampleIds']));
      }
    });

    it('renders a table and the groups for people', async () => {
      const { code, stdout } = await cli('poison', 'list', '--by-error');
      expect(code).toBe(0);
      expect(stdout).toMatch(/15 poison pills \(5\+ attempts\), 4 queue/);
      expect(stdout).toContain('SMTP <n> mailbox <str> unavailable');
      // The table flags a job replayed more than once (one of the emails, replayed 3 times above).
      const table = await cli('poison', 'list', '--queue', 'emails');
      expect(table.stdout).toContain('1 of them replayed more than once and failed again: look at the cause before replaying them again');
    });

    it('shows one job, exits 1 for an unknown job and 2 for an unknown queue', async () => {
      const shown = await cli('poison', 'show', 'notify-crm', ledgerJobId);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toContain('CRM said 500');
      expect(shown.stdout).toMatch(/ledger row[\s\S]*status pending/);

      const json = JSON.parse((await cli('poison', 'show', 'emails', emailIds[0], '--json')).stdout);
      expect(json.errors).toHaveLength(5);

      const missing = await cli('poison', 'show', 'emails', 'no-such-job');
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/No job "no-such-job" in queue "emails"/);
      // A ledger row id for the job id: the hint names the job.
      const rowId = ledgerJobId.replace('ledger-', '');
      const byRow = await cli('poison', 'show', 'notify-crm', rowId);
      expect(byRow.code).toBe(1);
      expect(byRow.stderr).toContain(`Did you mean ${ledgerJobId}, the job of ledger row ${rowId}?`);

      const unknown = await cli('poison', 'show', 'emials', '1');
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toMatch(/Unknown queue\(s\): emials\. Expected one of: emails, notify-crm, sms, webhooks/);
    });

    it("poison show --json gives every time in epoch ms, the ledger row's too", async () => {
      const shown = await cli('poison', 'show', 'notify-crm', ledgerJobId, '--json');
      expect(shown.code).toBe(0);
      const json = JSON.parse(shown.stdout);
      expect(json.ledger).toMatchObject({ id: ledgerRowId, createdAt: expect.any(Number), updatedAt: expect.any(Number), finishedAt: null });
      expect(json).toMatchObject({ timestamp: expect.any(Number), finishedOn: expect.any(Number) });
      // No ISO string anywhere (the job's own data aside): DESIGN.md, "Times in JSON are epoch milliseconds".
      expect(JSON.stringify({ ...json, data: null })).not.toMatch(/"\d{4}-\d{2}-\d{2}T\d{2}:/);
    });

    it('exits 2 on each bad input, saying what was expected', async () => {
      const cases: Array<[string[], RegExp]> = [
        [['--grep', '[a-'], /Invalid --grep/],
        [['--since', '2999-01-01T00:00:00Z'], /--since is in the future/],
        [['--since', '1h', '--until', '2h'], /--since .* is not before --until/],
        [['--queue', 'nope'], /Unknown queue\(s\): nope\. Expected one of: /],
        [['--since', 'yesterday'], /expected a duration before now .* or an ISO-8601 timestamp/],
        [['--limit', '0'], /expected a positive integer/],
      ];
      const results = await Promise.all(cases.map(([args]) => cli('poison', 'list', ...args)));
      cases.forEach(([args, message], i) => {
        expect({ args, code: results[i].code }).toEqual({ args, code: 2 });
        expect(results[i].stderr).toMatch(message);
      });
    });
  });
});

describe('poison list with jobs that carry large data', () => {
  let services: TestServices;

  afterAll(async () => {
    await services?.cleanup();
  });

  it('cuts data over 2000 characters in the list and says so; poison show has all of it', async () => {
    services = await setupServices('poison-big-data');
    const rows = Array.from({ length: 500 }, (_, n) => ({ sku: `SKU-${n}`, qty: n }));
    const [bigId, smallId] = await settleJobs(
      services.prefix,
      'imports',
      [{ name: 'import', data: { rows } }, { name: 'import', data: { rows: rows.slice(0, 2) } }],
      () => new Error('row 17 rejected'),
      { attempts: 5 },
    );
    const runtime = services.runtime();
    const { jobs } = await listPoison(runtime, {});
    const big = jobs.find((j) => j.id === bigId)!;
    expect(big.dataTruncated).toBe(true);
    expect(typeof big.data).toBe('string');
    expect((big.data as string).length).toBeLessThan(2010);
    expect(big.data as string).toMatch(/^\{"rows":\[\{"sku":"SKU-0"/);
    const small = jobs.find((j) => j.id === smallId)!;
    expect(small.data).toEqual({ rows: rows.slice(0, 2) });
    expect(small).not.toHaveProperty('dataTruncated');

    expect((await showPoison(runtime, 'imports', bigId)).data).toEqual({ rows });
  });
});
