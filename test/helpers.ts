import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import knexFactory, { type Knex } from 'knex';
import { resolveSettings, type Settings } from '../src/config/settings.js';
import type { EffectsConfig } from '../src/config/types.js';
import { validateConfig } from '../src/config/schema.js';
import { Runtime } from '../src/core/runtime.js';
import { migrate } from '../src/ledger/migrate.js';
import { createLogger } from '../src/core/logger.js';
import { createRedis, isCluster, type RedisClient } from '../src/queue/redis.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * Each test file gets its own BullMQ prefix and PostgreSQL schema, derived from its name plus a
 * random suffix, so files run in parallel against the shared servers without seeing each other.
 */
export function namespaceFor(name: string): { prefix: string; schema: string } {
  const slug = name.replace(/[^a-z0-9]+/gi, '_').toLowerCase().slice(0, 30);
  const suffix = Math.random().toString(36).slice(2, 8);
  return { prefix: `t_${slug}_${suffix}`, schema: `t_${slug}_${suffix}` };
}

export interface TestServices {
  prefix: string;
  schema: string;
  redisUrl: string;
  databaseUrl: string;
  /** A knex of the test database, for assertions. */
  db: Knex;
  /** A Redis connection, for assertions (to the cluster, on a cluster). */
  redis: RedisClient;
  /** Settings for a config with these effects, pointing at this file's prefix and schema. */
  settings(config?: Partial<EffectsConfig>): Settings;
  /** A runtime on this file's prefix and schema; closed by cleanup(). */
  runtime(config?: Partial<EffectsConfig>, options?: { log?: boolean }): Runtime;
  /** Creates the ledger tables in this file's schema. */
  migrate(): Promise<void>;
  /** Drops the schema and every Redis key under the prefix; closes what was opened. */
  cleanup(): Promise<void>;
}

/**
 * @param servers another Redis or PostgreSQL than the shared ones, e.g. a private server from
 *   test/servers.ts that the test kills or wipes.
 */
export async function setupServices(
  name: string,
  servers: { redisUrl?: string; databaseUrl?: string; redisCluster?: boolean } = {},
): Promise<TestServices> {
  const namespace = namespaceFor(name);
  const redisCluster = servers.redisCluster ?? false;
  // On a cluster every key of the test shares a slot through the prefix's hash tag.
  const prefix = redisCluster ? `{${namespace.prefix}}` : namespace.prefix;
  const { schema } = namespace;
  const redisUrl = servers.redisUrl ?? REDIS_URL;
  const databaseUrl = servers.databaseUrl ?? DATABASE_URL;
  const db = knexFactory({ client: 'pg', connection: databaseUrl, pool: { min: 0, max: 4 } });
  // Reconnects and waits like the project's own connections; errors are the awaiting test's.
  const redis = createRedis({ url: redisUrl, cluster: redisCluster });
  const runtimes: Runtime[] = [];
  const settings = (config: Partial<EffectsConfig> = {}) =>
    resolveSettings(validateConfig({ effects: [], ...config }), {
      redis: redisUrl,
      redisCluster,
      db: databaseUrl,
      prefix,
      schema,
    }, {});
  return {
    prefix,
    schema,
    redisUrl,
    databaseUrl,
    db,
    redis,
    settings,
    runtime(config = {}, options = {}) {
      const runtime = new Runtime(settings(config), {
        logger: options.log ? createLogger({ pretty: false, level: 'debug' }) : undefined,
      });
      runtimes.push(runtime);
      return runtime;
    },
    async migrate() {
      await migrate(db, schema);
    },
    async cleanup() {
      await Promise.allSettled(runtimes.map((r) => r.close()));
      await deleteKeys(redis, `${prefix}:*`);
      await db.raw('drop schema if exists ?? cascade', [schema]);
      await db.destroy();
      redis.disconnect();
    },
  };
}

/** Deletes keys by pattern with SCAN (on every master of a cluster): never FLUSHALL a shared Redis. */
export async function deleteKeys(redis: RedisClient, pattern: string): Promise<void> {
  for (const server of isCluster(redis) ? redis.nodes('master') : [redis]) {
    let cursor = '0';
    do {
      const [next, keys] = await server.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await server.unlink(...keys);
    } while (cursor !== '0');
  }
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Spawns the built `effects` binary, as an operator would run it. */
export function runCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/effects.js'), ...args], {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, NO_COLOR: '1', EFFECTS_LOG_LEVEL: 'warn', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`effects ${args.join(' ')} did not finish in ${options.timeoutMs ?? 20000} ms\n${stdout}\n${stderr}`));
    }, options.timeoutMs ?? 20000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Polls until `check` returns a truthy value or the time is up. */
export async function waitFor<T>(check: () => Promise<T> | T, timeoutMs = 15000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`waitFor timed out after ${timeoutMs} ms${last ? `: ${last}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A logger whose JSON lines land in an array, to read what was logged. */
export function captureLogger() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  return { lines, logger: createLogger({ destination, level: 'debug', pretty: false }) };
}
