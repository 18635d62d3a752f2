import { redisSeedUrls } from './connection-urls.js';
import { parseDuration } from '../core/duration.js';
import { UsageError } from '../core/errors.js';
import type { BackoffSetting, EffectDefinition, EffectsConfig } from './types.js';

export const DEFAULTS = {
  redis: 'redis://127.0.0.1:6379',
  database: 'postgres://postgres@127.0.0.1:5432/postgres',
  prefix: 'effects',
  schema: 'effects',
  poisonThreshold: 5,
  attempts: 10,
  concurrency: 10,
  backoffDelayMs: 1000,
  backoffJitter: 0.5,
  shutdownTimeoutMs: 30_000,
  lockDurationMs: 30_000,
  stalledIntervalMs: 30_000,
  schedulerEveryMs: 3_600_000,
  schedulerLookbackMs: 86_400_000,
  completedAgeMs: 3_600_000,
  failedAgeMs: 30 * 86_400_000,
  /** `effects worker` only: embedded workers (tests, apps) start at once unless the config says otherwise. */
  cliStartupJitterMs: 2_000,
} as const;

/** Flags every command accepts; they win over everything else. */
export interface ConnectionFlags {
  redis?: string;
  redisCluster?: boolean;
  db?: string;
  prefix?: string;
  schema?: string;
}

export interface ResolvedEffect {
  name: string;
  events: string[];
  run: EffectDefinition['run'];
  isNeeded?: EffectDefinition['isNeeded'];
  attempts: number;
  backoff: { type: 'exponential' | 'fixed'; delay: number; jitter: number };
  concurrency: number;
  globalConcurrency?: number;
  rateLimit?: { max: number; durationMs: number };
}

/** The connection URLs of a process: their passwords appear in no log line, stored error or output. */
export function connectionSecrets(settings: Pick<Settings, 'redisUrl' | 'databaseUrl'>): string[] {
  return [...redisSeedUrls(settings.redisUrl), settings.databaseUrl];
}

/** Everything a process needs, with every default applied and every source merged. */
export interface Settings {
  /** One Redis URL; on a cluster, one or more seed nodes' URLs, comma-separated. */
  redisUrl: string;
  /** Connect to a Redis Cluster; the prefix is then a hash tag (`assertClusterPrefix`). */
  redisCluster: boolean;
  databaseUrl: string;
  prefix: string;
  schema: string;
  poisonThreshold: number;
  alertWebhook?: string;
  effects: ResolvedEffect[];
  worker: {
    shutdownTimeoutMs: number;
    lockDurationMs: number;
    stalledIntervalMs: number;
    /** Random delay bound before a worker takes jobs; undefined when not configured. */
    startupJitterMs?: number;
    preparedStatements: boolean;
  };
  scheduler: { everyMs: number; lookbackMs: number };
  retention: { completedAgeMs: number; failedAgeMs: number };
}

const toMs = (value: string | number | undefined, fallback: number, key: string) =>
  value === undefined ? fallback : typeof value === 'number' ? value : parseDuration(value, key);

export function resolveBackoff(setting: BackoffSetting | undefined): ResolvedEffect['backoff'] {
  if (setting === undefined || setting === 'exponential+jitter') {
    return { type: 'exponential', delay: DEFAULTS.backoffDelayMs, jitter: DEFAULTS.backoffJitter };
  }
  if (typeof setting === 'string') return { type: setting, delay: DEFAULTS.backoffDelayMs, jitter: 0 };
  return { type: setting.type, delay: setting.delay ?? DEFAULTS.backoffDelayMs, jitter: setting.jitter ?? 0 };
}

export function resolveEffect(definition: EffectDefinition): ResolvedEffect {
  return {
    name: definition.name,
    // Once each: an event listed twice owes the effect once, not a row per listing.
    events: [...new Set(Array.isArray(definition.on) ? definition.on : [definition.on])],
    run: definition.run,
    isNeeded: definition.isNeeded,
    attempts: definition.attempts ?? DEFAULTS.attempts,
    backoff: resolveBackoff(definition.backoff),
    concurrency: definition.concurrency ?? DEFAULTS.concurrency,
    globalConcurrency: definition.globalConcurrency,
    rateLimit: definition.rateLimit && {
      max: definition.rateLimit.max,
      durationMs: toMs(definition.rateLimit.per, 1000, `effects.${definition.name}.rateLimit.per`),
    },
  };
}

/**
 * Merges the sources in precedence order: flag > environment > config file > default.
 * The environment is read here and nowhere else. A variable set to the empty string counts as
 * unset, as docker-compose and many shells leave one (`EFFECTS_ALERT_WEBHOOK=`): it must not beat
 * the config file's value with nothing.
 */
export function resolveSettings(
  config: EffectsConfig | undefined,
  flags: ConnectionFlags = {},
  processEnv: NodeJS.ProcessEnv = process.env,
): Settings {
  const env = Object.fromEntries(Object.entries(processEnv).filter(([, value]) => value !== '')) as NodeJS.ProcessEnv;
  const redisCluster =
    flags.redisCluster ?? envFlag(env, 'EFFECTS_REDIS_CLUSTER') ?? config?.redisCluster ?? false;
  const prefix = flags.prefix ?? env.EFFECTS_PREFIX ?? config?.prefix ?? DEFAULTS.prefix;
  if (redisCluster) assertClusterPrefix(prefix);
  return {
    redisUrl: flags.redis ?? env.EFFECTS_REDIS_URL ?? env.REDIS_URL ?? (config?.redis || undefined) ?? DEFAULTS.redis,
    redisCluster,
    databaseUrl:
      flags.db ?? env.EFFECTS_DATABASE_URL ?? env.DATABASE_URL ?? (config?.database || undefined) ?? DEFAULTS.database,
    prefix,
    schema: flags.schema ?? env.EFFECTS_SCHEMA ?? config?.schema ?? DEFAULTS.schema,
    poisonThreshold: config?.poison?.threshold ?? DEFAULTS.poisonThreshold,
    alertWebhook: env.EFFECTS_ALERT_WEBHOOK ?? (config?.alerts?.webhook || undefined),
    effects: (config?.effects ?? []).map(resolveEffect),
    worker: {
      shutdownTimeoutMs: toMs(config?.worker?.shutdownTimeout, DEFAULTS.shutdownTimeoutMs, 'worker.shutdownTimeout'),
      lockDurationMs: config?.worker?.lockDuration ?? DEFAULTS.lockDurationMs,
      stalledIntervalMs: config?.worker?.stalledInterval ?? DEFAULTS.stalledIntervalMs,
      startupJitterMs:
        config?.worker?.startupJitter === undefined
          ? undefined
          : toMs(config.worker.startupJitter, 0, 'worker.startupJitter'),
      preparedStatements: config?.worker?.preparedStatements ?? true,
    },
    scheduler: {
      everyMs: toMs(config?.scheduler?.every, DEFAULTS.schedulerEveryMs, 'scheduler.every'),
      lookbackMs: toMs(config?.scheduler?.lookback, DEFAULTS.schedulerLookbackMs, 'scheduler.lookback'),
    },
    retention: {
      completedAgeMs: toMs(config?.retention?.completedAge, DEFAULTS.completedAgeMs, 'retention.completedAge'),
      failedAgeMs: toMs(config?.retention?.failedAge, DEFAULTS.failedAgeMs, 'retention.failedAge'),
    },
  };
}

/** A yes/no environment variable: true/false, 1/0, yes/no; undefined when unset. */
function envFlag(env: NodeJS.ProcessEnv, name: string): boolean | undefined {
  const value = env[name]?.trim().toLowerCase();
  if (value === undefined) return undefined;
  if (['1', 'true', 'yes', 'on'].includes(value)) return true;
  if (['0', 'false', 'no', 'off'].includes(value)) return false;
  throw new UsageError(`${name} must be true or false (also 1/0, yes/no), got ${JSON.stringify(env[name])}.`);
}

/**
 * On a Redis Cluster, each BullMQ command and each of our scripts touches several keys of a queue,
 * which must hash to one slot: the prefix carries a hash tag (`{effects}`), so every key does.
 */
export function assertClusterPrefix(prefix: string): void {
  const open = prefix.indexOf('{');
  const close = open >= 0 ? prefix.indexOf('}', open + 1) : -1;
  if (open >= 0 && close > open + 1) return;
  throw new UsageError(
    `On a Redis Cluster the prefix must be a hash tag such as {${prefix.replace(/[{}]/g, '') || 'effects'}}, got ${JSON.stringify(prefix)}.`,
    "BullMQ's scripts touch several keys of a queue at once, and Redis Cluster runs them only when the keys share a slot. Set --prefix, EFFECTS_PREFIX or `prefix` in the config file.",
  );
}
