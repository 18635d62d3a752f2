import type { RedisClient } from '../queue/redis.js';
import { redisKeys } from '../queue/keys.js';
import type { FailureCheck } from './plan.js';

const BUCKET_MS = 250;
const READ_BATCH = 5_000;
/** Reads per queue per sample: enough to catch up ~100k events, bounded so a tick cannot run away. */
const MAX_READS = 20;
const MAX_TRACKED_ACTIVE = 50_000;

/**
 * Measures the failure rate of attempts on some queues over a recent window, from each queue's BullMQ
 * event stream, so it works for any workers (ours or plain BullMQ ones) with no metrics configured.
 * An attempt finishes with `completed`, or fails with `failed` (no attempts left), `delayed` (a retry
 * with backoff; counted only for a job this meter saw become active, since delayed jobs added by an
 * app emit the same event) or `waiting` from `active` (a retry without backoff, or a stalled job).
 *
 * It reads incrementally (a cursor per queue), so each sample costs only the events since the last.
 */
export class FailureMeter {
  private readonly cursors = new Map<string, string>();
  private readonly active = new Map<string, Set<string>>();
  private readonly buckets = new Map<number, { failed: number; finished: number }>();

  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
  ) {}

  async sample(queues: readonly string[], now: number, windowMs: number): Promise<FailureCheck> {
    for (const queue of queues) await this.read(queue, now, windowMs);
    const since = now - windowMs;
    let failed = 0;
    let finished = 0;
    for (const [bucket, counts] of this.buckets) {
      if (bucket * BUCKET_MS + BUCKET_MS <= since) this.buckets.delete(bucket);
      else if (bucket * BUCKET_MS >= since) {
        failed += counts.failed;
        finished += counts.finished;
      }
    }
    return { at: now, failed, finished, windowMs };
  }

  private async read(queue: string, now: number, windowMs: number): Promise<void> {
    const key = redisKeys(this.prefix).queue(queue, 'events');
    const cursor = this.cursors.get(queue);
    let start = cursor ? `(${cursor}` : `${Math.max(0, now - windowMs)}-0`;
    let active = this.active.get(queue);
    if (!active || active.size > MAX_TRACKED_ACTIVE) this.active.set(queue, (active = new Set()));
    for (let read = 0; read < MAX_READS; read++) {
      const entries = await this.redis.xrange(key, start, '+', 'COUNT', READ_BATCH);
      for (const [id, fields] of entries) this.count(id, fields, active);
      if (entries.length === 0) break;
      const last = entries[entries.length - 1][0];
      this.cursors.set(queue, last);
      start = `(${last}`;
      if (entries.length < READ_BATCH) break;
    }
  }

  private count(id: string, fields: string[], active: Set<string>): void {
    let event: string | undefined;
    let jobId: string | undefined;
    let prev: string | undefined;
    for (let i = 0; i < fields.length - 1; i += 2) {
      if (fields[i] === 'event') event = fields[i + 1];
      else if (fields[i] === 'jobId') jobId = fields[i + 1];
      else if (fields[i] === 'prev') prev = fields[i + 1];
    }
    if (!event || !jobId) return;
    let outcome: 'ok' | 'failed' | undefined;
    if (event === 'active') active.add(jobId);
    else if (event === 'completed') outcome = 'ok';
    else if (event === 'failed') outcome = 'failed';
    else if (event === 'delayed' && active.has(jobId)) outcome = 'failed';
    else if (event === 'waiting' && prev === 'active') outcome = 'failed';
    if (!outcome) return;
    active.delete(jobId);
    const bucket = Math.floor(Number(id.slice(0, id.indexOf('-'))) / BUCKET_MS);
    const counts = this.buckets.get(bucket) ?? { failed: 0, finished: 0 };
    counts.finished += 1;
    if (outcome === 'failed') counts.failed += 1;
    this.buckets.set(bucket, counts);
  }
}
