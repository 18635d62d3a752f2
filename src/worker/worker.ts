import type http from 'node:http';
import { Worker, type Job, type JobJson, type WorkerOptions as WorkerOptionsOfBullMQ } from 'bullmq';
import { startPoisonAlerts } from '../alerts/poison-alerts.js';
import type { PoisonAlerterOptions } from '../alerts/webhook.js';
import type { ResolvedEffect } from '../config/settings.js';
import type { Runtime } from '../core/runtime.js';
import { asError, UsageError } from '../core/errors.js';
import { errorSummary } from '../core/logger.js';
import { LedgerHotPath } from '../ledger/hot-path.js';
import { assertMigrated } from '../ledger/migrate.js';
import { QueueSettings } from '../ledger/queue-settings.js';
import { restoreQueueSettings } from '../ops/restore-queues.js';
import { rowIdFromJobId } from '../queue/keys.js';
import { queueConfigOf } from '../queue/queues.js';
import { isServing } from '../queue/redis.js';
import { LedgerBatcher } from './ledger-batcher.js';
import { createMetrics, outcomeRecorder, serveMetrics, type WorkerMetrics } from './metrics.js';
import { watchQueueSettings, type SettingsWatch } from './settings-watch.js';
import { createTaskFunction, UnparseableData, type Outcome, type TaskHooks } from './task-function.js';

export interface WorkerOptions {
  /** Only these effects' queues. @defaultValue every effect in the config */
  queues?: string[];
  /** Overrides every effect's per-process concurrency. */
  concurrency?: number;
  /** Serve `/metrics` and `/healthz` on this port. @defaultValue no server */
  metricsPort?: number;
  /**
   * Wait a random 0..N ms before taking jobs, so a fleet restarted together does not start in step.
   * @defaultValue settings.worker.startupJitterMs, else 0 (`effects worker` defaults to 2 s)
   */
  startupJitterMs?: number;
  hooks?: TaskHooks;
  /** Retry, queue and de-duplication settings of poison alerts (sent when `alerts.webhook` is set). @defaultValue PoisonAlerter's */
  alerts?: PoisonAlerterOptions;
}

export interface WorkerHandle {
  readonly workers: Worker[];
  readonly metrics: WorkerMetrics;
  readonly metricsServer?: http.Server;
  /** Puts back the queues' paused state and limits when Redis loses them (see watchQueueSettings). */
  readonly settingsWatch: SettingsWatch;
  /**
   * Stops taking jobs and waits for the ones in flight, at most `timeoutMs`; after that their locks
   * are released so another worker picks them up after the stalled check. Closes connections.
   * Returns whether every in-flight job finished.
   */
  close(options?: { timeoutMs?: number }): Promise<{ drained: boolean }>;
}

/** BullMQ's reason for a job failed by its stalled-job check (moveStalledJobsToWait). */
const STALLED_TOO_OFTEN = /job stalled more than allowable limit/;

/** Starts one BullMQ worker per effect queue, each running the smart task function. */
export async function startWorker(runtime: Runtime, options: WorkerOptions = {}): Promise<WorkerHandle> {
  const effects = selectEffects(runtime, options.queues);
  await runtime.assertReachable({ redis: true, db: true });
  await assertMigrated(runtime.db, runtime.settings.schema);
  // For the processes that run without the app's config file: a rebuild from an operator's machine
  // makes these queues' jobs with these options and puts these limits back after a Redis wipe.
  await new QueueSettings(runtime.db, runtime.settings.schema).recordConfigs(
    new Map(effects.map((effect) => [effect.name, queueConfigOf(effect, runtime.settings)])),
  );
  // Fleet-wide limits live only in Redis: the first worker of a new deploy (or after a wipe) puts the
  // configured ones in force, rather than waiting for the scheduler's first rebuild.
  const restored = await restoreQueueSettings(runtime, { queues: effects.map((e) => e.name) });
  if (restored.length) runtime.logger.info({ restored }, 'applied configured queue settings');

  const log = runtime.logger;
  const { databaseUrl, schema, worker: workerSettings } = runtime.settings;
  const hotPath = new LedgerHotPath(databaseUrl, schema, { preparedStatements: workerSettings.preparedStatements });
  const batcher = new LedgerBatcher(runtime.ledger, hotPath, log);
  const metrics = createMetrics(
    runtime,
    effects.map((e) => e.name),
    () => batcher.heldDoneMarks,
  );
  const { lockDurationMs, stalledIntervalMs } = runtime.settings.worker;

  const inFlight = new InFlight();
  const settingsWatch = watchQueueSettings(runtime, effects.map((e) => e.name));
  const alerts = startPoisonAlerts(runtime, options.hooks, options.alerts);
  /** Set when shutdown's deadline passes with jobs still running (see TaskHooks.abandoned). */
  let abandoned = false;
  const hooks: TaskHooks = { ...alerts.hooks, abandoned: () => abandoned };

  /**
   * BullMQ fails a job whose worker died while running it more than once (maxStalledCount: a job
   * that crashes its process, say out of memory) without calling the task function, so nothing
   * recorded it: its ledger row stayed pending, no alert went out, and every periodic rebuild sent
   * it round again to crash another worker. It is a poison pill: record it and report it as one.
   */
  const recordStalledTooOften = async (job: Job, error: Error) => {
    const effect = runtime.effectsByName.get(job.queueName);
    const message = `${error.message}: its worker process died while running it, more than once`;
    log.error({ effect: job.queueName, jobId: job.id, err: { type: error.name, message } }, 'poison pill: stalled too often');
    const rowId = rowIdFromJobId(job.id);
    try {
      if (rowId) await batcher.recordFailure({ id: rowId, attempts: job.attemptsMade, error: message, final: true });
    } catch (recordError) {
      log.error({ jobId: job.id, err: errorSummary(asError(recordError)) }, 'cannot record the stalled job in the ledger');
    }
    if (effect) alerts.hooks.onPoison?.(job, effect, new Error(message));
  };

  const workers = effects.map((effect) => {
    const runTask = createTaskFunction(runtime, effect, batcher, hooks);
    const record = outcomeRecorder(metrics, effect.name);
    const worker = new EffectsWorker(
      effect.name,
      async (job: Job) => {
        const startedAt = performance.now();
        const seconds = () => (performance.now() - startedAt) / 1000;
        try {
          const outcome: Outcome = await runTask(job, startedAt);
          record(outcome.status, seconds());
          return outcome;
        } catch (error) {
          if (!abandoned) record('failed', seconds());
          throw error;
        }
      },
      {
        connection: runtime.redis,
        prefix: runtime.settings.prefix,
        concurrency: options.concurrency ?? effect.concurrency,
        lockDuration: lockDurationMs,
        stalledInterval: stalledIntervalMs,
        autorun: false,
      },
      inFlight,
      () => settingsWatch.checked(),
    );
    // Redis going away is reported here; BullMQ reconnects by itself.
    worker.on('error', (error) => log.warn({ queue: effect.name, err: errorSummary(error) }, 'worker error'));
    worker.on('failed', (job, error) => {
      if (job && STALLED_TOO_OFTEN.test(error.message)) void recordStalledTooOften(job, error);
    });
    return worker;
  });

  let closing: Promise<{ drained: boolean }> | undefined;
  let started = false;
  let metricsServer: http.Server | undefined;
  try {
    await Promise.all(workers.map((w) => w.waitUntilReady()));
    if (options.metricsPort !== undefined) {
      metricsServer = await serveMetrics(metrics, options.metricsPort, () =>
        // Waiting out its start-up jitter is healthy: a liveness probe must not restart it for that.
        isServing(runtime.redis, runtime.settings.prefix) && (!started || workers.every((w) => w.isRunning())),
      );
    }
  } catch (error) {
    // No job has been taken yet (a metrics port in use, Redis gone): close what was opened, so that
    // a failed start leaves no worker running that nobody can stop.
    await Promise.allSettled(workers.map((w) => w.close(true)));
    await settingsWatch.stop();
    await batcher.close({ timeoutMs: 0 });
    await alerts.close({ timeoutMs: 0 });
    throw error;
  }

  // A fleet restarted together would otherwise take its first jobs, and hit Redis, the database and
  // every downstream service, in the same instant.
  const jitterMs = options.startupJitterMs ?? runtime.settings.worker.startupJitterMs ?? 0;
  const startDelayMs = Math.round(Math.random() * jitterMs);
  const startTimer = setTimeout(() => {
    started = true;
    if (!closing) for (const worker of workers) void worker.run();
  }, startDelayMs);
  log.info(
    { queues: effects.map((e) => e.name), prefix: runtime.settings.prefix, startDelayMs },
    `worker started on ${effects.length} queue(s)`,
  );

  return {
    workers,
    metrics,
    metricsServer,
    settingsWatch,
    close({ timeoutMs = runtime.settings.worker.shutdownTimeoutMs } = {}) {
      closing ??= (async () => {
        clearTimeout(startTimer);
        const watchStopped = settingsWatch.stop();
        // Stop taking jobs now, then wait for ours with a deadline. Not worker.close() first: it
        // waits for active jobs without limit, and a later close(true) returns that same promise.
        await Promise.all(workers.map((w) => w.pause(true)));
        let timer: NodeJS.Timeout | undefined;
        const drained = await Promise.race([
          inFlight.idle().then(() => true),
          new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(false), timeoutMs);
          }),
        ]);
        clearTimeout(timer);
        if (!drained) {
          abandoned = true;
          log.warn(
            { timeoutMs, inFlight: inFlight.count },
            'shutdown deadline passed; abandoning in-flight jobs to the stalled check: the outcome of an effect still running is not recorded or logged, and one that finished but could not be acknowledged to Redis keeps its done-mark and is skipped when it runs again',
          );
        }
        // Always forced: when drained there is nothing left to wait for, and an unforced close waits
        // without limit for a blocking connection that is still reconnecting after a Redis restart.
        // When not drained, BullMQ stops renewing the abandoned jobs' locks, so another worker's
        // stalled check picks them up once the locks expire.
        await Promise.all(workers.map((w) => w.close(true)));
        metricsServer?.close();
        // The done-marks of the jobs that just completed; a database that stays away keeps them
        // pending for the next rebuild to settle.
        await batcher.close({ timeoutMs: Math.min(5000, timeoutMs) });
        await alerts.close({ timeoutMs: Math.min(5000, timeoutMs) });
        // A look in progress would reopen the connections closed under it.
        await watchStopped;
        await runtime.close();
        return { drained };
      })();
      return closing;
    },
  };
}

/** Counts the jobs this process is handling, so shutdown can wait for them with a deadline. */
class InFlight {
  count = 0;
  private waiters: Array<() => void> = [];

  start(): () => void {
    this.count += 1;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.count -= 1;
      if (this.count === 0) for (const wake of this.waiters.splice(0)) wake();
    };
  }

  idle(): Promise<void> {
    return this.count === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }
}

/** A BullMQ Worker that counts the jobs it holds and survives job data that is not JSON. */
class EffectsWorker extends Worker {
  /** Jobs taken from Redis (active, locked by this worker) whose processing has not started yet. */
  private readonly taken = new Map<string, () => void>();

  constructor(
    name: string,
    processor: (job: Job) => Promise<unknown>,
    options: WorkerOptionsOfBullMQ,
    private readonly inFlight: InFlight,
    /** Resolves once the queue settings were looked at since the Redis connection last dropped. */
    private readonly settingsChecked: () => Promise<void>,
  ) {
    super(name, processor, options);
  }

  /**
   * A job counts as in flight from the moment Redis makes it active for this worker until BullMQ has
   * recorded its outcome. Counting only while it runs left gaps that shutdown fell into: a fetch
   * already sent when the worker paused, and the next job a completion brings back with it, were
   * active in Redis but counted nowhere, so a drained shutdown abandoned them to the stalled check
   * (run again a lock duration later; twice in a job's life, failed as stalled too often).
   */
  protected override async moveToActive(...args: Parameters<Worker['moveToActive']>): ReturnType<Worker['moveToActive']> {
    // A worker woken from its wait for jobs after it paused (shutdown) takes none: BullMQ itself
    // asks only before the wait.
    if (this.isPaused() || this.closing) return undefined as unknown as Job;
    // After Redis came back, nothing is taken before a queue an operator paused is paused again:
    // jobs pushed the moment Redis was back (emits that waited, a rebuild) would otherwise run.
    await this.settingsChecked();
    if (this.isPaused() || this.closing) return undefined as unknown as Job;
    const fetching = this.inFlight.start();
    try {
      const job = await super.moveToActive(...args);
      this.hold(job);
      return job;
    } finally {
      fetching();
    }
  }

  override async processJob(...args: Parameters<Worker['processJob']>): ReturnType<Worker['processJob']> {
    const finished = this.release(args[0]) ?? this.inFlight.start();
    try {
      const next = await super.processJob(...args);
      // The job the completion fetched, which BullMQ's loop runs next, paused or not.
      this.hold(next);
      return next;
    } finally {
      finished();
    }
  }

  private hold(job: Job | void | undefined): void {
    if (job?.id && !this.taken.has(job.id)) this.taken.set(job.id, this.inFlight.start());
  }

  private release(job: Job): (() => void) | undefined {
    const release = job.id ? this.taken.get(job.id) : undefined;
    if (release) this.taken.delete(job.id!);
    return release;
  }

  /**
   * Plain BullMQ cannot build a job whose stored data is not JSON: it reports a worker error and
   * leaves the job active, to stall and be fetched again forever, never failed. Building it with the
   * raw text lets the task function fail it once, as the poison pill it is.
   */
  protected override createJob(raw: JobJson, jobId: string): Job {
    try {
      return super.createJob(raw, jobId);
    } catch (error) {
      const job = super.createJob({ ...raw, data: 'null' }, jobId);
      job.data = new UnparseableData(String(raw.data), (error as Error).message);
      return job;
    }
  }
}

function selectEffects(runtime: Runtime, names: string[] | undefined): ResolvedEffect[] {
  const all = runtime.settings.effects;
  if (all.length === 0) {
    throw new UsageError('No effects are defined.', 'Define effects in effects.config.ts or pass --config PATH.');
  }
  if (!names?.length) return all;
  const unknown = names.filter((n) => !runtime.effectsByName.has(n));
  if (unknown.length) {
    throw new UsageError(
      `Unknown queue(s): ${unknown.join(', ')}. Known effects: ${all.map((e) => e.name).join(', ')}.`,
    );
  }
  return names.map((n) => runtime.effectsByName.get(n)!);
}
