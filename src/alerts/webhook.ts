import type { Job } from 'bullmq';
import type { RedisClient } from '../queue/redis.js';
import pRetry, { AbortError } from 'p-retry';
import type { ResolvedEffect } from '../config/settings.js';
import { asError } from '../core/errors.js';
import { errorSummary, type Logger } from '../core/logger.js';
import { redactWebhookUrl } from '../core/redact.js';
import { redisKeys } from '../queue/keys.js';
import { poisonMessage, type PoisonAlert } from './poison-message.js';

export interface PoisonAlerterOptions {
  /** Alerts waiting to be sent; beyond this, new ones are dropped and logged. @defaultValue 1000 */
  maxQueued?: number;
  /** POSTs in flight at once. @defaultValue 4 */
  concurrency?: number;
  /** Retries of a failed POST (5xx, 408, 429, network error), with exponential backoff. @defaultValue 8 */
  retries?: number;
  /** Delay before the first retry, in ms. @defaultValue 1000 */
  minRetryDelayMs?: number;
  /** Longest delay between retries, in ms. @defaultValue 60000 */
  maxRetryDelayMs?: number;
  /** Time allowed for one POST, in ms. @defaultValue 10000 */
  timeoutMs?: number;
  /** How long an alert about a job keeps every other worker process from sending another, in ms. @defaultValue 1 day */
  dedupTtlMs?: number;
}

export interface AlerterStats {
  sent: number;
  /** Skipped because another process (or this one) already alerted on the job. */
  deduplicated: number;
  /** Not queued: the queue was full or the alerter closed. */
  dropped: number;
  /** Given up on after every retry, or abandoned at shutdown. */
  failed: number;
}

const DEFAULTS = {
  maxQueued: 1000,
  concurrency: 4,
  retries: 8,
  minRetryDelayMs: 1000,
  maxRetryDelayMs: 60_000,
  timeoutMs: 10_000,
  dedupTtlMs: 86_400_000,
} satisfies Required<PoisonAlerterOptions>;

/**
 * Sends one webhook POST per poison pill, off the job's path: `notify` only queues (bounded, in
 * memory) and returns, so a slow or dead webhook never holds up processing. Worker processes agree
 * on who sends through a `SET NX` key per job in Redis; a POST that fails is retried with backoff,
 * and given up on (logged) after the last retry. The URL is logged without its secret path.
 */
export class PoisonAlerter {
  readonly stats: AlerterStats = { sent: 0, deduplicated: 0, dropped: 0, failed: 0 };
  private readonly options: Required<PoisonAlerterOptions>;
  private readonly queue: PoisonAlert[] = [];
  private inFlight = 0;
  private closed = false;
  private readonly shutdown = new AbortController();
  private idleWaiters: Array<() => void> = [];
  private readonly shownUrl: string;
  /** fetch refuses URLs with credentials: user:password@ goes into a Basic authorization header. */
  private readonly target: { url: string; headers: Record<string, string> };

  constructor(
    private readonly redis: RedisClient,
    private readonly url: string,
    private readonly log: Logger,
    options: PoisonAlerterOptions = {},
  ) {
    this.options = { ...DEFAULTS, ...options };
    this.shownUrl = redactWebhookUrl(url);
    this.target = splitCredentials(url);
  }

  /** Queues an alert and returns at once. */
  notify(alert: PoisonAlert): void {
    if (this.closed || this.queue.length >= this.options.maxQueued) {
      this.stats.dropped += 1;
      this.log.error(
        { queue: alert.queue, jobId: alert.jobId, webhook: this.shownUrl, reason: this.closed ? 'shutting down' : 'alert queue full' },
        'poison alert dropped',
      );
      return;
    }
    this.queue.push(alert);
    this.pump();
  }

  /** Waits for queued and in-flight alerts at most `timeoutMs`, then abandons the rest (logged). */
  async close({ timeoutMs = 5000 }: { timeoutMs?: number } = {}): Promise<void> {
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      this.idle().then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (drained) return;
    const abandoned = this.queue.length + this.inFlight;
    this.stats.failed += this.queue.length;
    this.queue.length = 0;
    this.shutdown.abort();
    await this.idle();
    this.log.error({ abandoned, webhook: this.shownUrl }, 'shutdown: poison alerts not sent');
  }

  private idle(): Promise<void> {
    if (this.inFlight === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    while (this.inFlight < this.options.concurrency && this.queue.length > 0) {
      const alert = this.queue.shift()!;
      this.inFlight += 1;
      void this.deliver(alert).finally(() => {
        this.inFlight -= 1;
        this.pump();
        if (this.inFlight === 0 && this.queue.length === 0) {
          const waiters = this.idleWaiters;
          this.idleWaiters = [];
          for (const resolve of waiters) resolve();
        }
      });
    }
  }

  private async deliver(alert: PoisonAlert): Promise<void> {
    const key = redisKeys(alert.prefix).alerted(alert.queue, alert.jobId);
    const log = this.log.child({ queue: alert.queue, jobId: alert.jobId, webhook: this.shownUrl });
    try {
      const claimed = await this.claim(key, alert, log);
      if (!claimed) {
        this.stats.deduplicated += 1;
        log.debug('poison alert already sent by another worker');
        return;
      }
      await pRetry(() => this.post(alert), {
        retries: this.options.retries,
        factor: 2,
        minTimeout: this.options.minRetryDelayMs,
        maxTimeout: this.options.maxRetryDelayMs,
        randomize: true,
        signal: this.shutdown.signal,
        onFailedAttempt: (error) => {
          if (error.retriesLeft > 0) {
            log.warn({ err: errorSummary(error), attempt: error.attemptNumber, retriesLeft: error.retriesLeft }, 'poison alert failed; retrying');
          }
        },
      });
      this.stats.sent += 1;
      log.info('poison alert sent');
    } catch (error) {
      this.stats.failed += 1;
      log.error({ err: errorSummary(asError(error)) }, 'poison alert given up');
      // Not delivered: let a later poisoning of this job (after a replay) alert again.
      await this.redis.del(key).catch(() => undefined);
    }
  }

  /** One process per job gets to send. Without Redis, sending twice beats not sending at all. */
  private async claim(key: string, alert: PoisonAlert, log: Logger): Promise<boolean> {
    try {
      return (await this.redis.set(key, String(alert.at), 'PX', this.options.dedupTtlMs, 'NX')) === 'OK';
    } catch (error) {
      log.warn({ err: errorSummary(asError(error)) }, 'poison alert: Redis unavailable for de-duplication; sending anyway');
      return true;
    }
  }

  private async post(alert: PoisonAlert): Promise<void> {
    let response: Response;
    try {
      response = await fetch(this.target.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...this.target.headers },
        body: JSON.stringify(poisonMessage(alert)),
        signal: AbortSignal.any([AbortSignal.timeout(this.options.timeoutMs), this.shutdown.signal]),
      });
    } catch (error) {
      const err = error as Error & { cause?: Error };
      // fetch says "fetch failed"; the cause (ECONNREFUSED, timeout) is what a person needs.
      throw new Error(this.scrub(err.cause?.message ? `${err.message}: ${err.cause.message}` : err.message));
    }
    await response.body?.cancel().catch(() => undefined);
    if (response.ok) return;
    const message = `webhook answered HTTP ${response.status}`;
    // A refusal of the request itself (bad URL, bad token) will not change on retry.
    if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
      throw new AbortError(message);
    }
    throw new Error(message);
  }

  private scrub(text: string): string {
    return text.split(this.url).join(this.shownUrl).split(this.target.url).join(this.shownUrl);
  }
}

function splitCredentials(url: string): { url: string; headers: Record<string, string> } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { url, headers: {} };
  }
  if (!parsed.username && !parsed.password) return { url, headers: {} };
  const credentials = `${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}`;
  parsed.username = '';
  parsed.password = '';
  return { url: parsed.toString(), headers: { authorization: `Basic ${Buffer.from(credentials).toString('base64')}` } };
}

/** The alert for a job that just reached the poison threshold. */
export function poisonAlertFor(job: Job, effect: ResolvedEffect, error: Error, prefix: string): PoisonAlert {
  const data = (job.data ?? {}) as { event?: unknown; id?: unknown };
  return {
    prefix,
    queue: effect.name,
    jobId: String(job.id),
    event: String(data.event ?? job.name),
    id: String(data.id ?? ''),
    attempts: job.attemptsMade + 1,
    maxAttempts: job.opts.attempts ?? 1,
    error: error.message,
    at: Date.now(),
  };
}

/**
 * Forgets that these jobs were alerted on. A job replayed or re-driven by an operator is on a new
 * try: if it becomes a poison pill again, that is news, and the once-per-job guard (kept for a day)
 * must not swallow it.
 */
export async function forgetAlerts(redis: RedisClient, prefix: string, queue: string, jobIds: readonly string[]): Promise<void> {
  if (jobIds.length === 0) return;
  const keys = redisKeys(prefix);
  await redis.del(...jobIds.map((id) => keys.alerted(queue, id)));
}
