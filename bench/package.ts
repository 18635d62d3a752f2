/**
 * The package as users run it: the compiled JavaScript in dist/ (`npm run bench` builds first),
 * typed from the sources. Importing src/ would run every hot function through tsx's transpiler,
 * helpers included, and measure code no user runs.
 *
 * The paths are resolved at run time so that type-checking does not depend on a build.
 */
import type * as Api from '../src/index.js';
import type * as Queues from '../src/queue/queues.js';
import type * as RedisConnections from '../src/queue/redis.js';
import type * as Keys from '../src/queue/keys.js';
import type * as Logging from '../src/core/logger.js';

async function fromDist<T>(relative: string): Promise<T> {
  const url = new URL(`../dist/${relative}`, import.meta.url);
  try {
    return (await import(url.href)) as T;
  } catch (error) {
    throw new Error(`Cannot load dist/${relative}: run \`npm run build\` first (npm run bench does). ${error}`);
  }
}

export const effects = await fromDist<typeof Api>('index.js');
export const queues = await fromDist<typeof Queues>('queue/queues.js');
export const redisConnections = await fromDist<typeof RedisConnections>('queue/redis.js');
export const keys = await fromDist<typeof Keys>('queue/keys.js');
export const logging = await fromDist<typeof Logging>('core/logger.js');
