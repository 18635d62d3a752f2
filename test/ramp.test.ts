import { Queue, Worker, type Job } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { defineEffect } from '../src/config/define.js';
import { resolveEffect } from '../src/config/settings.js';
import type { Runtime } from '../src/core/runtime.js';
import { pauseQueues, resumeQueues } from '../src/ops/pause.js';
import { cancelRamp, getRampStatus, startRamp } from '../src/ops/ramp.js';
import { applyLimits, readLimits } from '../src/queue/limits.js';
import { jobOptionsFor } from '../src/queue/queues.js';
import { applyRamp } from '../src/ramp/apply.js';
import { limitRate, rateAt } from '../src/ramp/plan.js';
import { RampStore } from '../src/ramp/store.js';
import { startRampTicker, type RampTicker } from '../src/ramp/ticker.js';
import { startScheduler } from '../src/scheduler/scheduler.js';
import { startWorker } from '../src/worker/worker.js';
import { spawnCli } from './cli-process.js';
import { setupServices, waitFor, type TestServices } from './helpers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Configured queues: a rate limit and a global concurrency to come back to after a ramp. */
const effects = [
  defineEffect({ name: 'ramp-configured', on: 'ramped', rateLimit: { max: 50, per: '1s' }, globalConcurrency: 20, run() {} }),
];

describe('pause, resume and ramps', () => {
  let services: TestServices;
  let runtime: Runtime;
  const workers: Worker[] = [];
  const tickers: RampTicker[] = [];

  beforeAll(async () => {
    services = await setupServices('ramp');
    await services.migrate();
    runtime = services.runtime({ effects });
  });

  afterEach(async () => {
    await Promise.all(tickers.splice(0).map((t) => t.stop()));
    await Promise.all(workers.splice(0).map((w) => w.close(true)));
    await cancelRamp(runtime).catch(() => undefined);
  });

  afterAll(async () => {
    await services?.cleanup();
  });

  /** A paused queue with `count` jobs, and a plain BullMQ worker (high concurrency) recording completions. */
  async function backlog(name: string, count: number, run: (job: Job) => Promise<unknown> = () => sleep(2)) {
    const queue = new Queue(name, { connection: services.redis, prefix: services.prefix });
    await queue.pause();
    await queue.addBulk(Array.from({ length: count }, (_, i) => ({ name: 'x', data: { i }, opts: { removeOnComplete: false } })));
    const completed: number[] = [];
    const failed: number[] = [];
    const worker = new Worker(name, run, { connection: services.redis, prefix: services.prefix, concurrency: 50 });
    worker.on('completed', () => completed.push(Date.now()));
    worker.on('failed', () => failed.push(Date.now()));
    worker.on('error', () => {});
    workers.push(worker);
    await worker.waitUntilReady();
    return { queue, worker, completed, failed };
  }
  const within = (times: number[], from: number, ms: number) => times.filter((t) => t >= from && t < from + ms).length;

  it('a 4 s ramp lets through a fraction of what a naive resume does in the first second, and ends with the configured limits', async () => {
    const naive = await backlog('ramp-naive', 300);
    const ramped = await backlog('ramp-configured', 300);

    const naiveStart = Date.now();
    await naive.queue.resume();
    await waitFor(() => naive.completed.length === 300);

    const { plan } = await startRamp(runtime, { queues: ['ramp-configured'], durationMs: 4_000, from: 5, to: 50 });
    tickers.push(startRampTicker(runtime));
    await waitFor(async () => (await new RampStore(services.redis, services.prefix).read()) === null, 10_000);

    // The naive resume's busiest second (its first, unless the machine stalled then).
    const peakNaive = Math.max(...naive.completed.map((t) => within(naive.completed, t, 1_000)));
    const firstSecondRamp = within(ramped.completed, plan.startAt, 1_000);
    // The plan allows about 5.6 jobs plus one window in its first second; the stampede takes them all.
    expect(naive.completed[0] - naiveStart).toBeLessThan(1_000);
    expect(peakNaive).toBeGreaterThan(150);
    expect(firstSecondRamp).toBeLessThan(30);
    expect(firstSecondRamp).toBeGreaterThan(0);
    expect(await readLimits(services.redis, services.prefix, 'ramp-configured')).toEqual({
      rateLimit: { max: 50, durationMs: 1000 },
      concurrency: 20,
    });
    expect(await ramped.queue.isPaused()).toBe(false);
    const last = await new RampStore(services.redis, services.prefix).readLast();
    expect(last).toMatchObject({ id: plan.id, outcome: 'finished' });
    expect(last!.queues[0]).toMatchObject({ afterSource: 'config' });
  });

  it('is applied by a running scheduler: a detached ramp starts its staggered queues and ends without the CLI', async () => {
    const a = await backlog('ramp-sched-a', 50);
    const b = await backlog('ramp-sched-b', 50);
    await a.queue.setGlobalRateLimit(7, 1000); // what an unconfigured queue gets back after its ramp
    const scheduler = await startScheduler(services.runtime({ effects }), { rampTickMs: 100 });
    try {
      const { plan } = await startRamp(runtime, {
        queues: ['ramp-sched-b', 'ramp-sched-a'],
        durationMs: 1_000,
        from: 10,
        to: 40,
        staggerMs: 1_000,
      });
      expect(plan.queues.map((q) => q.name)).toEqual(['ramp-sched-b', 'ramp-sched-a']);
      // The first queue starts at once (by startRamp itself); the second waits for its turn.
      expect(await b.queue.isPaused()).toBe(false);
      expect(await a.queue.isPaused()).toBe(true);
      await waitFor(async () => !(await a.queue.isPaused()), 3_000);
      await waitFor(async () => (await new RampStore(services.redis, services.prefix).read()) === null, 5_000);
      expect(await readLimits(services.redis, services.prefix, 'ramp-sched-a')).toEqual({
        rateLimit: { max: 7, durationMs: 1000 },
        concurrency: null,
      });
      expect(await readLimits(services.redis, services.prefix, 'ramp-sched-b')).toEqual({ rateLimit: null, concurrency: null });
    } finally {
      await scheduler.close();
    }
  });

  it('takes a paused queue out of the ramp, so its turn does not resume it', async () => {
    await backlog('ramp-pause-a', 10);
    const b = await backlog('ramp-pause-b', 10);
    const { plan } = await startRamp(runtime, {
      queues: ['ramp-pause-a', 'ramp-pause-b'],
      durationMs: 2_000,
      from: 5,
      to: 10,
      staggerMs: 300,
    });
    const paused = await pauseQueues(runtime, { queues: ['ramp-pause-b'] });
    expect(paused).toMatchObject({ alreadyPaused: ['ramp-pause-b'], removedFromRamp: ['ramp-pause-b'], rampCancelled: false });
    expect(paused.operationId).toEqual(expect.any(String));
    tickers.push(startRampTicker(runtime, { everyMs: 50 }));
    await sleep(800);
    expect(await b.queue.isPaused()).toBe(true);
    const status = await getRampStatus(runtime);
    expect(status.plan).toMatchObject({ id: plan.id, removed: ['ramp-pause-b'] });
    expect(status.queues.map((q) => q.name)).toEqual(['ramp-pause-a']);
  });

  it("gives a queue paused or resumed out of a ramp its after-ramp limits, not the ramp's rate of the moment", async () => {
    await backlog('ramp-pause-limits', 10);
    const { plan } = await startRamp(runtime, { queues: ['ramp-pause-limits'], durationMs: 60_000, from: 5, to: 10 });
    // Started at once, at the ramp's first rate.
    expect((await readLimits(services.redis, services.prefix, 'ramp-pause-limits')).rateLimit).not.toBeNull();
    const paused = await pauseQueues(runtime, { queues: ['ramp-pause-limits'] });
    expect(paused).toMatchObject({ paused: ['ramp-pause-limits'], removedFromRamp: ['ramp-pause-limits'], rampCancelled: true });
    expect(await readLimits(services.redis, services.prefix, 'ramp-pause-limits')).toEqual(plan.queues[0].after);

    // The same for a queue that `resume --replace` takes out of a ramp to run it now.
    await backlog('ramp-replace-limits', 10);
    const second = await startRamp(runtime, { queues: ['ramp-replace-limits'], durationMs: 60_000, from: 5, to: 10 });
    const resumed = await resumeQueues(runtime, { queues: ['ramp-replace-limits'], replace: true });
    expect(resumed.removedFromRamp).toEqual(['ramp-replace-limits']);
    expect(await readLimits(services.redis, services.prefix, 'ramp-replace-limits')).toEqual(second.plan.queues[0].after);
  });

  it('holds while the failure rate is above --hold-on-errors and rises again when it falls', async () => {
    let failing = true;
    const q = await backlog('ramp-hold', 2_000, async () => {
      if (failing) throw new Error('provider down');
    });
    const { plan } = await startRamp(runtime, {
      queues: ['ramp-hold'],
      durationMs: 4_000,
      from: 40,
      to: 80,
      holdOnErrors: 0.2,
      holdWindowMs: 1_000,
      holdMinSample: 10,
    });
    tickers.push(startRampTicker(runtime, { everyMs: 100 }));

    const held = (await waitFor(async () => {
      const status = await getRampStatus(runtime);
      return status.holding ? status : undefined;
    }, 5_000))!;
    expect(held.holding!.reason).toMatch(/failure rate 100% \(\d+ of \d+ attempts in the last 1s\) is above 20%/);
    expect(q.failed.length).toBeGreaterThan(0);
    // Held: the plan's rate does not rise.
    const frozen = (await new RampStore(services.redis, services.prefix).read())!;
    expect(rateAt(frozen, frozen.queues[0], Date.now() + 1_000)).toBe(rateAt(frozen, frozen.queues[0], Date.now()));

    failing = false;
    const released = (await waitFor(async () => {
      const current = await new RampStore(services.redis, services.prefix).read();
      return current && current.holds.length > 0 && current.holds.at(-1)!.end !== null ? current : undefined;
    }, 5_000))!;
    expect(released.id).toBe(plan.id);
    const now = Date.now();
    expect(rateAt(released, released.queues[0], now + 500)).toBeGreaterThan(rateAt(released, released.queues[0], now));
  });

  it('holds on failures whatever the clock of the process applying the ramp says (90 s ahead here)', async () => {
    await backlog('ramp-skewed', 3_000, async () => {
      throw new Error('provider down');
    });
    // `resume --ramp` follows the ramp it starts, so it is the applier, on a clock 90 s ahead.
    const cli = spawnCli(
      ['--redis', services.redisUrl, '--db', services.databaseUrl, '--prefix', services.prefix, '--schema', services.schema,
        'resume', '--queue', 'ramp-skewed', '--ramp', '20s', '--from', '20', '--to', '40', '--hold-on-errors', '20%'],
      { env: { NODE_OPTIONS: `--import=data:text/javascript,${encodeURIComponent('const now = Date.now; Date.now = () => now() + 90_000;')}` } },
    );
    try {
      const held = await waitFor(async () => {
        const plan = await new RampStore(services.redis, services.prefix).read();
        return plan && plan.holds.length > 0 ? plan : undefined;
      }, 10_000).catch(() => undefined);
      expect(held, `no hold; the CLI said:\n${cli.stdout()}\n${cli.stderr()}`).toBeDefined();
      // The schedule is on the same clock: the ramp started now, not 90 s ago.
      expect(Math.abs(held!.createdAt - Date.now())).toBeLessThan(15_000);
    } finally {
      await cli.kill();
    }
  });

  it('wakes idle workers when a limit is raised: a job starts while the one holding the only slot still runs', async () => {
    const queue = new Queue('ramp-wake', { connection: services.redis, prefix: services.prefix });
    await queue.setGlobalConcurrency(1);
    const started: number[] = [];
    const worker = new Worker(
      'ramp-wake',
      async () => {
        started.push(Date.now());
        await sleep(4_000);
      },
      { connection: services.redis, prefix: services.prefix, concurrency: 5 },
    );
    worker.on('error', () => {});
    workers.push(worker);
    await queue.addBulk([1, 2, 3].map((i) => ({ name: 'x', data: { i } })));
    await waitFor(() => started.length === 1);
    // Let the worker block on the marker: maxed by the global concurrency, nothing will wake it.
    await sleep(300);
    expect(started).toHaveLength(1);
    const { raised } = await applyLimits(runtime.queues, 'ramp-wake', { rateLimit: null, concurrency: 3 });
    expect(raised).toBe(true);
    await waitFor(() => started.length === 3, 6_000);
    // While the first job (4 s) still runs: unwoken, the others would wait for it to finish (or for a
    // drain-delay poll, 5 s).
    expect(started[1] - started[0]).toBeLessThan(3_500);
  });

  it('resumes a queue whose start an applier recorded but did not live to carry out', async () => {
    const a = await backlog('ramp-orphan', 5);
    const { plan } = await startRamp(runtime, { queues: ['ramp-orphan'], durationMs: 10_000, from: 5, to: 10, now: Date.now() });
    // As an applier that marked the queue started and died (or met a Redis error) before resuming
    // it: the plan says started, the queue is still paused.
    const store = new RampStore(services.redis, services.prefix);
    await store.update(plan.id, (p) => ({ ...p, queues: p.queues.map((q) => ({ ...q, startedAt: q.startedAt ?? Date.now() })) }));
    await a.queue.pause();
    const tick = await applyRamp(runtime);
    expect(tick.plan?.id).toBe(plan.id);
    expect(await a.queue.isPaused()).toBe(false);
  });

  it("puts the after-ramp limits back when another applier's late tick wrote ramping ones after the ramp ended", async () => {
    await backlog('ramp-configured', 5);
    const start = Date.now();
    const { plan } = await startRamp(runtime, { queues: ['ramp-configured'], durationMs: 1_000, from: 5, to: 10, now: start });
    const store = new RampStore(services.redis, services.prefix);
    const stale = await store.read();
    // One applier ends the ramp: the configured limits are in force.
    const ended = await applyRamp(runtime, { now: start + 5_000 });
    expect(ended.ended?.id).toBe(plan.id);
    const configured = { rateLimit: { max: 50, durationMs: 1000 }, concurrency: 20 };
    expect(await readLimits(services.redis, services.prefix, 'ramp-configured')).toEqual(configured);
    // Another read the plan before that and writes the limits of mid-ramp after it.
    const read = vi.spyOn(RampStore.prototype, 'read').mockResolvedValueOnce(stale);
    try {
      await applyRamp(runtime, { now: start + 500 });
    } finally {
      read.mockRestore();
    }
    expect(await readLimits(services.redis, services.prefix, 'ramp-configured')).toEqual(configured);
  });

  it("keeps the after-ramp limits of a queue taken out of the ramp while an applier's tick was on its way", async () => {
    for (const name of ['ramp-late-a', 'ramp-late-b', 'ramp-late-c']) await backlog(name, 5);
    const start = Date.now();
    const { plan } = await startRamp(runtime, { queues: ['ramp-late-a', 'ramp-late-b', 'ramp-late-c'], durationMs: 60_000, from: 5, to: 10, now: start });
    const after = (name: string) => plan.queues.find((q) => q.name === name)!.after;
    const limitsOf = (name: string) => readLimits(services.redis, services.prefix, name);
    const stale = await new RampStore(services.redis, services.prefix).read();
    const lateTick = async () => {
      const read = vi.spyOn(RampStore.prototype, 'read').mockResolvedValueOnce(stale);
      try {
        await applyRamp(runtime, { now: start + 30_000 });
      } finally {
        read.mockRestore();
      }
    };
    // An operator pauses one queue and resumes another with --replace; a tick that read the plan
    // before then writes its mid-ramp limits after theirs.
    await pauseQueues(runtime, { queues: ['ramp-late-a'] });
    await resumeQueues(runtime, { queues: ['ramp-late-b'], replace: true });
    await lateTick();
    expect(await limitsOf('ramp-late-a')).toEqual(after('ramp-late-a'));
    expect(await limitsOf('ramp-late-b')).toEqual(after('ramp-late-b'));
    // The queue still in the ramp keeps its ramping limit.
    expect((await limitsOf('ramp-late-c')).rateLimit).not.toEqual(after('ramp-late-c').rateLimit);

    // A ramp that replaces this one for ramp-late-a carries ramp-late-c over (at its rate of now,
    // about 5/s): the old plan's late tick (7.5/s, mid-ramp) is not undone into after-ramp limits,
    // and the new plan's next tick sets the rate it goes on from.
    const replacing = await startRamp(runtime, { queues: ['ramp-late-a'], durationMs: 60_000, from: 5, to: 10, replace: true });
    expect(replacing.carriedOver).toEqual(['ramp-late-c']);
    await lateTick();
    expect(limitRate((await limitsOf('ramp-late-c')).rateLimit!)).toBeCloseTo(7.5, 0);
    await applyRamp(runtime);
    expect(limitRate((await limitsOf('ramp-late-c')).rateLimit!)).toBeCloseTo(5, 0);
  });

  it('--replace carries over the queues it does not name: one waiting for its turn keeps its place, paused until then', async () => {
    await backlog('ramp-replace-a', 5);
    const b = await backlog('ramp-replace-b', 5);
    const now = Date.now();
    const queues = ['ramp-replace-a', 'ramp-replace-b'];
    await startRamp(runtime, { queues, durationMs: 60_000, from: 5, to: 10, staggerMs: 30_000, now });
    const replaced = await startRamp(runtime, { queues: ['ramp-replace-a'], durationMs: 20_000, from: 5, to: 10, replace: true, now: now + 1 });
    expect(replaced).toMatchObject({ carriedOver: ['ramp-replace-b'], leftRunning: [], leftPaused: [] });
    expect(await b.queue.isPaused()).toBe(true);
    // Its turn is where it was (30 s after the old start), and its ramp as long as the old one's.
    const carried = replaced.plan.queues.find((q) => q.name === 'ramp-replace-b')!;
    expect(carried).toMatchObject({ offsetMs: 29_999, durationMs: 60_000, from: 5, to: 10, startedAt: null });
  });

  it('a join does not undo a pause that came while it was starting: the paused queue stays out', async () => {
    for (const name of ['ramp-join-a', 'ramp-join-b', 'ramp-join-c']) await backlog(name, 5);
    await startRamp(runtime, { queues: ['ramp-join-a', 'ramp-join-b'], durationMs: 60_000, from: 5, to: 10 });
    const store = new RampStore(services.redis, services.prefix);
    const stale = await store.read();
    await pauseQueues(runtime, { queues: ['ramp-join-a'] });
    // The join read the plan before the pause, and stores its own after it.
    const read = vi.spyOn(RampStore.prototype, 'read').mockResolvedValueOnce(stale);
    let joined;
    try {
      joined = await startRamp(runtime, { queues: ['ramp-join-c'], durationMs: 60_000, from: 5, to: 10 });
    } finally {
      read.mockRestore();
    }
    expect(joined.carriedOver).toEqual(['ramp-join-b']);
    expect(joined.plan.removed).toContain('ramp-join-a');
    await applyRamp(runtime);
    expect(await runtime.queues.get('ramp-join-a').isPaused()).toBe(true);
  });

  it('cancel keeps the limits in force now; --restore puts the configured ones back', async () => {
    await backlog('ramp-configured', 5);
    await startRamp(runtime, { queues: ['ramp-configured'], durationMs: 60_000, from: 5, to: 50 });
    const kept = await cancelRamp(runtime);
    expect(kept.cancelled).toBe(true);
    // The ramp's opening limit (about 5/s) stays, not the configured 50/s.
    expect(limitRate(kept.queues[0].limits.rateLimit!)).toBeGreaterThan(4.5);
    expect(limitRate(kept.queues[0].limits.rateLimit!)).toBeLessThan(6);
    // Thought better of: --restore with no ramp active puts back what the cancelled one would have.
    const late = await cancelRamp(runtime, { restore: true });
    expect(late).toMatchObject({ cancelled: false, restored: true, plan: { id: kept.plan!.id, restored: true } });
    expect(late.queues[0].limits).toEqual({ rateLimit: { max: 50, durationMs: 1000 }, concurrency: 20 });
    expect(await cancelRamp(runtime, { restore: true })).toMatchObject({ cancelled: false, restored: false });

    await startRamp(runtime, { queues: ['ramp-configured'], durationMs: 60_000, from: 5, to: 50 });
    await expect(startRamp(runtime, { queues: ['ramp-configured'], durationMs: 1_000, from: 5 })).rejects.toThrow(
      /A ramp is already active/,
    );
    const restored = await cancelRamp(runtime, { restore: true });
    expect(restored.queues[0].limits).toEqual({ rateLimit: { max: 50, durationMs: 1000 }, concurrency: 20 });
    expect(await cancelRamp(runtime)).toMatchObject({ cancelled: false });
  });
});

describe('jitter', () => {
  let services: TestServices;
  beforeAll(async () => {
    services = await setupServices('ramp-jitter');
    await services.migrate();
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await services?.cleanup();
  });

  it('retries back off exponentially with jitter by default, and the jitter reaches the job', async () => {
    const effect = resolveEffect(defineEffect({ name: 'jittered', on: 'e', run() {} }));
    expect(effect.backoff).toEqual({ type: 'exponential', delay: 1000, jitter: 0.5 });
    expect(jobOptionsFor(undefined, services.settings(), 'ledger-1').backoff).toMatchObject({ jitter: 0.5 });
    const queue = new Queue('jittered', { connection: services.redis, prefix: services.prefix });
    const job = await queue.add('e', {}, jobOptionsFor(effect, services.settings(), 'ledger-1'));
    const stored = await queue.getJob(job.id!);
    expect(stored!.opts.backoff).toMatchObject({ type: 'exponential', jitter: 0.5 });
    await queue.close();
  });

  it('a worker waits its random start-up delay before taking jobs', async () => {
    const config = { effects: [defineEffect({ name: 'late-starter', on: 'e', run() {} })], worker: { startupJitter: '1s' } };
    expect(services.settings(config).worker.startupJitterMs).toBe(1000);
    const queue = new Queue('late-starter', { connection: services.redis, prefix: services.prefix });
    await queue.add('e', { event: 'e', id: '1' });
    vi.spyOn(Math, 'random').mockReturnValue(1);
    const startedAt = Date.now();
    const handle = await startWorker(services.runtime(config));
    vi.restoreAllMocks();
    let activeAt = 0;
    handle.workers[0].on('active', () => (activeAt ||= Date.now()));
    try {
      await sleep(500);
      expect(activeAt).toBe(0);
      await waitFor(() => activeAt > 0, 5_000);
      expect(activeAt - startedAt).toBeGreaterThanOrEqual(900);
    } finally {
      await handle.close({ timeoutMs: 2_000 });
      await queue.close();
    }
  });
});
