import type { Knex } from 'knex';
import type { Logger } from '../core/logger.js';

/** What a queued task carries: an event name and a pointer to the business object. Nothing else. */
export interface Task {
  event: string;
  /** The id passed to `emit`, always a string. */
  id: string;
}

/** What a task function receives besides the task. */
export interface EffectContext {
  /** The app's database (the same knex the ledger uses). */
  db: Knex;
  /** A child logger bound to effect, event, id, job id and attempt. */
  log: Logger;
  /** Stable across retries and replays of this effect for this event occurrence: pass it to third parties. */
  idempotencyKey: string;
  /** 1 on the first run, 2 on the first retry, and so on. */
  attempt: number;
  /** The BullMQ job id. */
  jobId: string;
  /** The ledger row id of this (event occurrence, effect). */
  ledgerId: string;
}

export type BackoffSetting =
  | 'exponential+jitter'
  | 'exponential'
  | 'fixed'
  | { type: 'exponential' | 'fixed'; delay?: number; jitter?: number };

export interface RateLimit {
  /** Jobs allowed per window. */
  max: number;
  /** The window: a duration such as `1s` or milliseconds. */
  per: string | number;
}

/** `E`: the event names of `on`, as literals where `defineEffect` or `defineConfig` infers them. */
export interface EffectDefinition<E extends string = string> {
  /** Unique name; also the BullMQ queue name. May not contain `:`. */
  name: string;
  /** The event (or events) that owe this effect. */
  on: E | E[];
  /** Runs the effect. Throw to retry. */
  run: (task: Task, ctx: EffectContext) => Promise<unknown> | unknown;
  /**
   * Optional "is this still needed?" check, run before `run`. Returning false skips the run and
   * marks the ledger row done.
   */
  isNeeded?: (task: Task, ctx: EffectContext) => Promise<boolean> | boolean;
  /** Attempts before the job fails for good. @defaultValue 10 */
  attempts?: number;
  /** Retry delays. @defaultValue `'exponential+jitter'` (1 s base, 50% jitter) */
  backoff?: BackoffSetting;
  /** Jobs this effect runs at once per worker process. @defaultValue 10 */
  concurrency?: number;
  /** Jobs across the whole fleet at once (BullMQ global concurrency). @defaultValue unlimited */
  globalConcurrency?: number;
  /** Fleet-wide rate limit (BullMQ global rate limit). @defaultValue unlimited */
  rateLimit?: RateLimit;
}

/** `E`: the events its effects are owed on, as literals where `defineConfig` infers them. */
export interface EffectsConfig<E extends string = string> {
  /**
   * Redis URL; with `redisCluster`, one or more seed nodes' URLs, comma-separated.
   * @defaultValue `redis://127.0.0.1:6379`
   */
  redis?: string;
  /**
   * Connect to a Redis Cluster. The prefix must then be a hash tag such as `{effects}`.
   * @defaultValue false
   */
  redisCluster?: boolean;
  /** PostgreSQL URL of the app's database. @defaultValue `postgres://postgres@127.0.0.1:5432/postgres` */
  database?: string;
  /** BullMQ key prefix. Use a hash tag such as `{effects}` on Redis Cluster. @defaultValue `effects` */
  prefix?: string;
  /** PostgreSQL schema holding the ledger tables. @defaultValue `effects` */
  schema?: string;
  poison?: {
    /** Attempts after which a job counts as a poison pill. @defaultValue 5 */
    threshold?: number;
  };
  alerts?: {
    /** URL that receives one POST per poison pill (Slack-compatible JSON). @defaultValue none */
    webhook?: string;
  };
  worker?: {
    /** How long shutdown waits for in-flight jobs. @defaultValue `30s` */
    shutdownTimeout?: string | number;
    /** BullMQ lock duration in ms; a killed worker's jobs are recovered after about this long. @defaultValue 30000 */
    lockDuration?: number;
    /** BullMQ stalled-job check interval in ms. @defaultValue 30000 */
    stalledInterval?: number;
    /**
     * A worker waits a random time up to this before taking jobs, so a fleet restarted together does
     * not move in step (`90s`-style duration or ms). @defaultValue `2s` for `effects worker`, 0 for startWorker
     */
    startupJitter?: string | number;
    /**
     * The worker's ledger reads and done-marks as named prepared statements. Set false behind a
     * pooler that does not keep prepared statements (PgBouncer in transaction mode before 1.21).
     * @defaultValue true
     */
    preparedStatements?: boolean;
  };
  scheduler?: {
    /** How often the fan-out rebuild runs. @defaultValue `1h` */
    every?: string;
    /** How far back the fan-out rebuild looks for pending rows. @defaultValue `24h` */
    lookback?: string;
  };
  /** Completed jobs kept in Redis, so a repeated push of the same id is a no-op. @defaultValue 1 hour */
  retention?: {
    completedAge?: string | number;
    failedAge?: string | number;
  };
  effects: EffectDefinition<E>[];
}

/**
 * The events a config's effects are owed on: a union of literals for a config written with
 * `defineConfig` (or `defineEffect`), `string` for one typed as `EffectsConfig`.
 */
export type EventOf<C> = C extends EffectsConfig<infer E> ? E : string;
