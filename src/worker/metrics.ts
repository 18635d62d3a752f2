import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Runtime } from '../core/runtime.js';

export interface WorkerMetrics {
  registry: Registry;
  jobs: Counter<'effect' | 'outcome'>;
  duration: Histogram<'effect' | 'outcome'>;
}

/**
 * Prometheus metrics of one worker process: outcomes, durations, queue depths read on scrape, and
 * the done-marks it holds (`heldDoneMarks`), written behind.
 */
export function createMetrics(runtime: Runtime, queueNames: string[], heldDoneMarks: () => number): WorkerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'effects_process_' });
  const jobs = new Counter({
    name: 'effects_jobs_total',
    help: 'Jobs processed, by effect and outcome (done, skipped, failed).',
    labelNames: ['effect', 'outcome'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'effects_job_duration_seconds',
    help: 'Time from picking a job to its outcome.',
    labelNames: ['effect', 'outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  new Gauge({
    name: 'effects_done_marks_held',
    help: 'Done-marks of completed jobs not yet written to the ledger (written every 20 ms; a count that stays up means the database is slow or refusing them).',
    registers: [registry],
    collect() {
      this.set(heldDoneMarks());
    },
  });
  new Gauge({
    name: 'effects_queue_jobs',
    help: 'Jobs in each queue by state, read from Redis at scrape time.',
    labelNames: ['queue', 'state'] as const,
    registers: [registry],
    async collect() {
      await Promise.all(
        queueNames.map(async (name) => {
          const counts = await runtime.queues.get(name).getJobCounts('waiting', 'active', 'delayed', 'failed');
          for (const [state, count] of Object.entries(counts)) this.set({ queue: name, state }, count);
        }),
      );
    },
  });
  return { registry, jobs, duration };
}

export type JobOutcome = 'done' | 'skipped' | 'failed';

/**
 * Records one effect's job outcomes. The label sets are bound once here: looking them up by
 * label object on every job costs a busy worker measurable time.
 */
export function outcomeRecorder(metrics: WorkerMetrics, effect: string): (outcome: JobOutcome, seconds: number) => void {
  const bind = (outcome: JobOutcome) => ({
    jobs: metrics.jobs.labels(effect, outcome),
    duration: metrics.duration.labels(effect, outcome),
  });
  const bound = { done: bind('done'), skipped: bind('skipped'), failed: bind('failed') };
  return (outcome, seconds) => {
    bound[outcome].jobs.inc();
    bound[outcome].duration.observe(seconds);
  };
}

/** `/metrics` for Prometheus and `/healthz` for the orchestrator's liveness probe. */
export function serveMetrics(
  metrics: WorkerMetrics,
  port: number,
  isHealthy: () => boolean,
): Promise<http.Server> {
  const server = http.createServer(async (req, res) => {
    if (req.url === '/metrics') {
      try {
        const body = await metrics.registry.metrics();
        res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body);
      } catch (error) {
        res.writeHead(500).end(`metrics unavailable: ${(error as Error).message}\n`);
      }
    } else if (req.url === '/healthz') {
      const healthy = isHealthy();
      res.writeHead(healthy ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: healthy }));
    } else {
      res.writeHead(404).end('not found: try /metrics or /healthz\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => resolve(server));
  });
}
