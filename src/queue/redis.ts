import { Redis } from 'ioredis';
import { assertRedisUrl } from '../config/connection-urls.js';
import { ConnectionError } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';

export type { Redis };

/**
 * A Redis connection that reconnects forever (workers must survive a Redis restart) and never
 * fails a command just because the server is briefly away, which BullMQ workers require.
 */
export function createRedis(url: string): Redis {
  assertRedisUrl(url);
  const redis = new Redis(url, {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    connectTimeout: 4000,
    // A server that accepted the socket but never answers would otherwise hold the process for 2 s
    // more after disconnect(), and the CLI must give up on an unreachable Redis within 5 s.
    disconnectTimeout: 200,
    retryStrategy: (times) => Math.min(200 * times, 2000),
  });
  // Errors are reported by whoever awaits a command; an unhandled 'error' event would crash.
  redis.on('error', () => {});
  return redis;
}

/** Waits until Redis answers, or fails with the URL (no password) and a hint within `timeoutMs`. */
export async function assertRedisReachable(redis: Redis, url: string, timeoutMs = 2500): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let onError: ((error: Error) => void) | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        // A refused or unresolvable address will not fix itself in the next few seconds.
        onError = (error: Error & { code?: string }) => {
          if (['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN'].includes(error.code ?? '')) reject(error);
        };
        redis.on('error', onError);
      }),
    ]);
  } catch (error) {
    throw new ConnectionError(
      `Cannot reach Redis at ${redactUrl(url)} (${(error as Error).message}).`,
      'Is Redis running? Check --redis, EFFECTS_REDIS_URL / REDIS_URL, or `redis` in the config file.',
    );
  } finally {
    clearTimeout(timer);
    if (onError) redis.off('error', onError);
  }
}
