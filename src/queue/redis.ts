import calculateSlot from 'cluster-key-slot';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { assertRedisSetting, redisSeedUrls } from '../config/connection-urls.js';
import { ConnectionError, UsageError } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';

export type { Redis };

/** A connection to one Redis server or to a Redis Cluster: every module takes either. */
export type RedisClient = Redis | Cluster;

export interface RedisTarget {
  /** A Redis URL; on a cluster, one or more seed nodes' URLs, comma-separated. */
  url: string;
  cluster: boolean;
}

/** Options every connection shares, to one server or to each node of a cluster. */
const COMMON: RedisOptions = {
  // BullMQ workers require commands that wait for a reconnect instead of failing after N retries.
  maxRetriesPerRequest: null,
  enableReadyCheck: true,
  connectTimeout: 4000,
  // A server that accepted the socket but never answers would otherwise hold the process for 2 s
  // more after disconnect(), and the CLI must give up on an unreachable Redis within 5 s.
  disconnectTimeout: 200,
};

const retryDelayMs = (times: number) => Math.min(200 * times, 2000);

/**
 * A Redis connection that reconnects forever (workers must survive a Redis restart) and never
 * fails a command just because the server is briefly away, which BullMQ workers require.
 */
export function createRedis(target: RedisTarget): RedisClient {
  assertRedisSetting(target.url, target.cluster);
  const redis = target.cluster
    ? createCluster(redisSeedUrls(target.url))
    : new Redis(target.url, { ...COMMON, retryStrategy: retryDelayMs });
  // Errors are reported by whoever awaits a command; an unhandled 'error' event would crash.
  redis.on('error', () => {});
  return redis;
}

/**
 * A cluster client from its seed nodes' URLs. The first URL's user, password and TLS apply to every
 * node, those the client finds from the seeds included (a cluster's nodes share their credentials).
 */
function createCluster(seeds: string[]): Cluster {
  const nodes = seeds.map((url) => {
    const parsed = new URL(url);
    return { host: parsed.hostname.replace(/^\[|\]$/g, ''), port: Number(parsed.port || 6379) };
  });
  const first = new URL(seeds[0]);
  const tls = first.protocol === 'rediss:' ? { tls: {} } : {};
  return new Cluster(nodes, {
    clusterRetryStrategy: retryDelayMs,
    enableReadyCheck: true,
    // Connect to seeds by the names given: a TLS certificate names the host, not its address, which
    // the client would otherwise resolve the seeds to first (and fail the handshake).
    dnsLookup: (address, callback) => callback(null, address),
    redisOptions: {
      ...COMMON,
      ...tls,
      username: first.username ? decodeURIComponent(first.username) : undefined,
      password: first.password ? decodeURIComponent(first.password) : undefined,
    },
  });
}

/** True for a connection to a Redis Cluster. */
export function isCluster(redis: RedisClient): redis is Cluster {
  return (redis as Cluster).isCluster === true;
}

/**
 * The server that holds the keys under `prefix`: on a cluster, the master of the prefix's hash-tag
 * slot; otherwise the one server. A command that needs one
 * server (SCAN) goes there, so a cluster node that holds none of our keys cannot fail it.
 */
export async function serverFor(redis: RedisClient, prefix: string): Promise<Redis> {
  if (!isCluster(redis)) return redis;
  // A command on a key of the prefix waits for the slot map and (re)connects the slot's master,
  // which the client drops when a node goes away and dials again only for a command.
  await redis.exists(probeKey(prefix));
  const master = masterOf(redis, prefix);
  if (!master) {
    throw new ConnectionError(
      `No Redis Cluster node serves the keys of prefix ${prefix} right now.`,
      'Check the cluster (`CLUSTER INFO`, `CLUSTER SLOTS`); it may be failing over.',
    );
  }
  return master;
}

/** Whether the server that holds the prefix's keys is connected (the worker's health check). */
export function isServing(redis: RedisClient, prefix: string): boolean {
  if (!isCluster(redis)) return redis.status === 'ready';
  return redis.status === 'ready' && masterOf(redis, prefix)?.status === 'ready';
}

function masterOf(cluster: Cluster, prefix: string): Redis | undefined {
  const nodeKey = cluster.slots[calculateSlot(probeKey(prefix))]?.[0];
  return cluster.nodes('master').find((node) => `${node.options.host}:${node.options.port}` === nodeKey);
}

/** A key under the prefix (never written): on a cluster, commands on it go to the prefix's master. */
const probeKey = (prefix: string) => `${prefix}:__effects:probe`;

/**
 * Waits until the server that holds the prefix's keys answers, or fails with the URL (no password)
 * and a hint within `timeoutMs`. A cluster node reached as a single server fails too, and a single
 * server reached as a cluster: every command would fail later, and the fix is a flag (exit 2).
 */
export async function assertRedisReachable(
  redis: RedisClient,
  target: RedisTarget & { prefix: string },
  timeoutMs = 2500,
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let onError: ((error: Error) => void) | undefined;
  const where = redisSeedUrls(target.url).map(redactUrl).join(', ');
  const answer = isCluster(redis)
    ? redis.exists(probeKey(target.prefix)).then(() => false)
    : redis.ping().then(() => clusterEnabled(redis));
  let isClusterNode: boolean;
  try {
    isClusterNode = await Promise.race([
      answer,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        onError = (error: Error & { code?: string; lastNodeError?: Error }) => {
          // A refused or unresolvable address will not fix itself in the next few seconds.
          if (['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN'].includes(error.code ?? '')) reject(error);
          // A cluster client keeps retrying its seeds; what a seed answered is in lastNodeError.
          const answered = error.lastNodeError?.message ?? '';
          if (/cluster support disabled/i.test(answered)) {
            reject(
              new UsageError(
                `Redis at ${where} is not a Redis Cluster (${answered}).`,
                'Drop --redis-cluster (EFFECTS_REDIS_CLUSTER, `redisCluster` in the config file), or give the URL of a cluster node.',
              ),
            );
          } else if (/WRONGPASS|NOAUTH|NOPERM|invalid password/i.test(answered)) {
            reject(error.lastNodeError);
          }
        };
        redis.on('error', onError);
      }),
    ]);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    const message = (error as Error).message;
    // Redis answered, and refused the credentials: running, so asking whether it is misleads.
    const refused = /WRONGPASS|NOAUTH|NOPERM|invalid password/i.test(message);
    throw new ConnectionError(
      `Cannot reach Redis${target.cluster ? ' Cluster' : ''} at ${where} (${message}).`,
      refused
        ? 'Redis refused the user or password: check them in --redis, EFFECTS_REDIS_URL / REDIS_URL, or `redis` in the config file.'
        : 'Is Redis running? Check --redis, EFFECTS_REDIS_URL / REDIS_URL, or `redis` in the config file.',
    );
  } finally {
    clearTimeout(timer);
    if (onError) redis.off('error', onError);
  }
  if (isClusterNode) {
    throw new UsageError(
      `Redis at ${where} is a node of a Redis Cluster.`,
      'Add --redis-cluster (EFFECTS_REDIS_CLUSTER=true, or `redisCluster: true` in the config file), with a hash-tag prefix such as {effects}.',
    );
  }
}

/** Whether the server runs in cluster mode; false when it does not say (a proxy that refuses INFO). */
async function clusterEnabled(redis: Redis): Promise<boolean> {
  const info = await redis.info('cluster').catch(() => '');
  return /^cluster_enabled:1\s*$/m.test(info);
}

/**
 * Redis's clock, in epoch milliseconds. Ramps keep their schedule and read failure rates (stream
 * ids are Redis times) by this one clock, so an applier whose own clock is off neither shifts the
 * schedule nor sees the failures of the last seconds outside its window.
 */
export async function redisTime(redis: RedisClient): Promise<number> {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}
