import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import knexFactory from 'knex';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findConfigFile, loadConfigFile } from '../src/config/load.js';
import { validateConfig } from '../src/config/schema.js';
import { DEFAULTS, resolveSettings } from '../src/config/settings.js';
import { ConfigError, ExitCode, UsageError } from '../src/core/errors.js';
import { Runtime } from '../src/core/runtime.js';
import { createEffects } from '../src/core/effects.js';
import { DATABASE_URL, ROOT, namespaceFor, runCli } from './helpers.js';

const run = async () => {};

/** The ConfigError thrown for `input`, or a failure when none is. */
function configError(input: unknown): ConfigError {
  try {
    validateConfig(input);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected validateConfig to throw');
}

describe('config validation', () => {
  it('reports every problem at once, each with the path of the bad key', () => {
    const error = configError({
      redsi: 'redis://127.0.0.1:6379',
      prefix: 5,
      worker: { lockDuraton: 1000 },
      effects: [
        { name: 'send-email', on: 'order_placed', run, atempts: 3 },
        { name: 'notify-crm', on: 'order_placed', run, attempts: 'three' },
        { name: 'send-email', on: 'order_paid', run, rateLimit: { max: 5, per: 'soon' } },
      ],
    });
    const byPath = Object.fromEntries(error.issues.map((i) => [i.path, i.message]));
    expect(byPath).toMatchObject({
      redsi: expect.stringContaining('did you mean "redis"?'),
      prefix: expect.stringMatching(/expected string/),
      'worker.lockDuraton': expect.stringContaining('did you mean "lockDuration"?'),
      'effects.0.atempts': expect.stringContaining('did you mean "attempts"?'),
      'effects.1.attempts': expect.stringMatching(/expected number/),
      'effects.2.rateLimit.per': expect.stringContaining('expected a duration'),
      'effects.2.name': expect.stringContaining('duplicate effect name "send-email" (also effects.0)'),
    });
    expect(error.issues).toHaveLength(7);
    // The message the CLI prints lists them all, one per line.
    for (const issue of error.issues) expect(error.message).toContain(`  - ${issue.path}: ${issue.message}`);
  });

  it('suggests a key only when the unknown one looks like a typo of it', () => {
    const error = configError({ effects: [], banana: true });
    expect(error.issues).toEqual([{ path: 'banana', message: 'unknown key' }]);
  });

  it('rejects bad types, bad names and bad durations with what was expected', () => {
    const error = configError({
      schema: 'my-schema',
      scheduler: { every: '5' },
      worker: { shutdownTimeout: 'later' },
      effects: [{ name: 'a:b', on: [], run: 'not a function', concurrency: 0 }],
    });
    const paths = error.issues.map((i) => i.path).sort();
    expect(paths).toEqual([
      'effects.0.concurrency',
      'effects.0.name',
      'effects.0.on',
      'effects.0.run',
      'scheduler.every',
      'schema',
      'worker.shutdownTimeout',
    ]);
    const message = (p: string) => error.issues.find((i) => i.path === p)?.message;
    expect(message('effects.0.name')).toContain('may not contain ":"');
    expect(message('effects.0.run')).toBe('expected a function');
    expect(message('schema')).toContain('PostgreSQL identifier');
    expect(message('scheduler.every')).toContain('expected a duration like 90s');

    const backoff = configError({ effects: [{ name: 'a', on: 'e', run() {}, backoff: 'linear' }] });
    expect(backoff.issues).toEqual([
      { path: 'effects.0.backoff', message: expect.stringContaining("expected 'exponential+jitter', 'exponential', 'fixed', or { type:") },
    ]);
  });

  it('says what a config file must export when it exports nothing', () => {
    expect(configError(undefined).issues).toEqual([
      { path: '', message: expect.stringContaining('export default defineConfig') },
    ]);
    expect(configError({}).issues.map((i) => i.path)).toEqual(['effects']);
  });

  it('accepts a config that gives only effects', () => {
    const config = validateConfig({ effects: [{ name: 'a', on: 'x', run }] });
    expect(config.effects.map((e) => e.name)).toEqual(['a']);
  });
});

describe('createEffects', () => {
  it('takes the URL forms the drivers take, and refuses a password whose #, / or ? would cut it short', async () => {
    const effects = [{ name: 'send-email', on: 'order_placed', run() {} }];
    const create = (flags: { redis?: string; db?: string }) => () => createEffects({ effects }, { flags });
    // Cloud SQL's socket form (empty host, the socket directory in ?host=) and a libpq-style socket URL.
    for (const db of ['postgres://app:pw@/orders?host=/cloudsql/proj:region:inst', 'postgresql:///orders?host=/var/run/postgresql', 'postgres://app:p%23w@db:5432/orders', 'postgres://app:pw@db/orders?application_name=me@laptop']) {
      expect(create({ db }), db).not.toThrow();
    }
    for (const db of ['postgres://app:12#x@db/orders', 'postgres://app:a/b@db/orders', 'postgres://app:a?b@db/orders']) {
      expect(create({ db }), db).toThrow(/Not a PostgreSQL URL/);
    }
    for (const redis of ['redis://:12#x@cache:6379', 'redis://:bad%zz@cache:6379']) {
      expect(create({ redis }), redis).toThrow(/Not a Redis URL/);
    }
  });

  it('refuses a connection setting that is not a URL when it is created, not at the first emit', () => {
    const effects = [{ name: 'send-email', on: 'order_placed', run() {} }];
    expect(() => createEffects({ effects }, { flags: { redis: 'cache.internal:6379' } })).toThrow(UsageError);
    expect(() => createEffects({ effects }, { flags: { redis: 'cache.internal:6379' } })).toThrow(/Not a Redis URL: cache\.internal:6379/);
    // The password never shows, even in a value that is not a URL.
    expect(() => createEffects({ effects }, { flags: { db: 'app:s3cret@db.internal/app' } })).toThrow(/Not a PostgreSQL URL/);
    expect(() => createEffects({ effects }, { flags: { db: 'app:s3cret@db.internal/app' } })).not.toThrow(/s3cret/);
  });
});

describe('Runtime.assertReachable', () => {
  it('refuses a malformed database URL before checking Redis, leaving no check running unawaited', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const runtime = new Runtime(resolveSettings(undefined, { redis: 'redis://127.0.0.1:1', db: 'notaurl' }, {}));
    try {
      await expect(runtime.assertReachable({ redis: true, db: true })).rejects.toThrow('Not a PostgreSQL URL: notaurl.');
      // A refused connection answers within milliseconds; an unawaited check would reject meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await runtime.close();
    }
  });
});

describe('resolveSettings: flag > environment > file > default', () => {
  const file = validateConfig({
    redis: 'redis://file:6379',
    database: 'postgres://file/db',
    prefix: 'file-prefix',
    schema: 'file_schema',
    effects: [],
  });

  it('uses the defaults when nothing is given', () => {
    const settings = resolveSettings(undefined, {}, {});
    expect(settings).toMatchObject({
      redisUrl: DEFAULTS.redis,
      databaseUrl: DEFAULTS.database,
      prefix: 'effects',
      schema: 'effects',
      poisonThreshold: 5,
      effects: [],
    });
    expect(settings.worker).toEqual({ shutdownTimeoutMs: 30_000, lockDurationMs: 30_000, stalledIntervalMs: 30_000, preparedStatements: true });
  });

  it('the config file beats the defaults', () => {
    expect(resolveSettings(file, {}, {})).toMatchObject({
      redisUrl: 'redis://file:6379',
      databaseUrl: 'postgres://file/db',
      prefix: 'file-prefix',
      schema: 'file_schema',
    });
  });

  it('the environment beats the config file, EFFECTS_* before the generic names', () => {
    const env = {
      REDIS_URL: 'redis://generic:6379',
      DATABASE_URL: 'postgres://generic/db',
      EFFECTS_PREFIX: 'env-prefix',
      EFFECTS_SCHEMA: 'env_schema',
    };
    expect(resolveSettings(file, {}, env)).toMatchObject({
      redisUrl: 'redis://generic:6379',
      databaseUrl: 'postgres://generic/db',
      prefix: 'env-prefix',
      schema: 'env_schema',
    });
    const specific = { ...env, EFFECTS_REDIS_URL: 'redis://specific:6379', EFFECTS_DATABASE_URL: 'postgres://specific/db' };
    expect(resolveSettings(file, {}, specific)).toMatchObject({
      redisUrl: 'redis://specific:6379',
      databaseUrl: 'postgres://specific/db',
    });
  });

  it('takes a variable set to the empty string as unset, in the environment and in the config file', () => {
    const withWebhook = { ...file, alerts: { webhook: 'https://hooks.example.com/T0/B0' } };
    const env = { EFFECTS_ALERT_WEBHOOK: '', EFFECTS_REDIS_URL: '', REDIS_URL: 'redis://generic:6379' };
    expect(resolveSettings(withWebhook, {}, env)).toMatchObject({
      alertWebhook: 'https://hooks.example.com/T0/B0',
      redisUrl: 'redis://generic:6379',
    });
    // `alerts: { webhook: process.env.X }` and `redis: process.env.Y` in a config file, X and Y set empty.
    const emptied = validateConfig({ effects: [], redis: '', alerts: { webhook: '' } });
    expect(resolveSettings(emptied, {}, {})).toMatchObject({ redisUrl: DEFAULTS.redis, alertWebhook: undefined });
  });

  it('flags beat everything', () => {
    const env = { EFFECTS_REDIS_URL: 'redis://env:6379', EFFECTS_PREFIX: 'env-prefix', EFFECTS_SCHEMA: 'env_schema' };
    const flags = { redis: 'redis://flag:6379', db: 'postgres://flag/db', prefix: 'flag-prefix', schema: 'flag_schema' };
    expect(resolveSettings(file, flags, env)).toMatchObject({
      redisUrl: 'redis://flag:6379',
      databaseUrl: 'postgres://flag/db',
      prefix: 'flag-prefix',
      schema: 'flag_schema',
    });
  });

  it('Redis Cluster: on from the flag, the environment or the file, and only with a hash-tag prefix', () => {
    const clustered = validateConfig({ redisCluster: true, prefix: '{orders}', effects: [] });
    expect(resolveSettings(clustered, {}, {})).toMatchObject({ redisCluster: true, prefix: '{orders}' });
    expect(resolveSettings(clustered, {}, { EFFECTS_REDIS_CLUSTER: 'false' })).toMatchObject({ redisCluster: false });
    expect(resolveSettings(undefined, { redisCluster: true, prefix: 'a{b}c' }, {})).toMatchObject({ redisCluster: true });
    expect(resolveSettings(undefined, {}, { EFFECTS_REDIS_CLUSTER: '1', EFFECTS_PREFIX: '{x}' }).redisCluster).toBe(true);
    expect(resolveSettings(undefined, {}, {}).redisCluster).toBe(false);

    // The message suggests the prefix wrapped in a hash tag.
    for (const [prefix, suggested] of [['effects', '{effects}'], ['{}', '{effects}'], ['}x{', '{x}'], ['{orders', '{orders}']]) {
      expect(() => resolveSettings(undefined, { redisCluster: true, prefix }, {}), prefix).toThrow(
        `On a Redis Cluster the prefix must be a hash tag such as ${suggested}, got ${JSON.stringify(prefix)}.`,
      );
    }
    expect(() => resolveSettings(undefined, {}, { EFFECTS_REDIS_CLUSTER: 'maybe' })).toThrow(
      'EFFECTS_REDIS_CLUSTER must be true or false (also 1/0, yes/no), got "maybe".',
    );
    // Several URLs are a cluster's seed nodes; a single server is given one.
    const effects = [{ name: 'send-email', on: 'order_placed', run() {} }];
    expect(() => createEffects({ effects }, { flags: { redis: 'redis://a:6379,redis://b:6379' } })).toThrow(/Several Redis URLs given/);
    expect(() => createEffects({ effects, redisCluster: true, prefix: '{e}' }, { flags: { redis: '/run/redis.sock' } })).toThrow(
      /A Redis Cluster is reached over TCP/,
    );
    expect(() => createEffects({ effects, redisCluster: true, prefix: '{e}' }, { flags: { redis: 'redis://:pw@a:7000/2' } })).toThrow(
      'A Redis Cluster has database 0 only: redis://:***@a:7000/2.',
    );
    // The app's own cluster client (not connected here) needs the hash tag too.
    const appCluster = new Cluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true });
    expect(() => createEffects({ effects }, { redis: appCluster })).toThrow(/On a Redis Cluster the prefix must be a hash tag/);
    expect(() => createEffects({ effects, prefix: '{app}' }, { redis: appCluster })).not.toThrow();
  });

  it('takes an event listed twice in `on` once', () => {
    const settings = resolveSettings(validateConfig({ effects: [{ name: 'a', on: ['paid', 'paid', 'shipped'], run() {} }] }), {}, {});
    expect(settings.effects[0].events).toEqual(['paid', 'shipped']);
  });

  it('turns the config durations and effect options into milliseconds and defaults', () => {
    const settings = resolveSettings(
      validateConfig({
        worker: { shutdownTimeout: '5s', lockDuration: 1000, preparedStatements: false },
        scheduler: { every: '10m' },
        effects: [{ name: 'a', on: ['x', 'y'], run, rateLimit: { max: 50, per: '1m' }, backoff: 'fixed' }],
      }),
      {},
      {},
    );
    expect(settings.worker).toEqual({ shutdownTimeoutMs: 5000, lockDurationMs: 1000, stalledIntervalMs: 30_000, preparedStatements: false });
    expect(settings.scheduler.everyMs).toBe(600_000);
    expect(settings.effects[0]).toMatchObject({
      events: ['x', 'y'],
      attempts: 10,
      concurrency: 10,
      backoff: { type: 'fixed', delay: 1000, jitter: 0 },
      rateLimit: { max: 50, durationMs: 60_000 },
    });
  });
});

describe('config files', () => {
  let dir: string;
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    writeFileSync(file, text);
    return file;
  };

  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'effects-config-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads effects.config.ts from the working directory, TypeScript and imports included', async () => {
    const cwd = mkdtempSync(path.join(dir, 'ts-'));
    writeFileSync(
      path.join(cwd, 'effects.config.ts'),
      `import { defineConfig, defineEffect } from ${JSON.stringify(path.join(ROOT, 'src/index.ts'))};
const attempts: number = 3;
export default defineConfig({
  prefix: 'from-ts',
  effects: [defineEffect({ name: 'send-email', on: 'order_placed', attempts, async run() {} })],
});
`,
    );
    const file = findConfigFile(undefined, {}, cwd);
    expect(file).toBe(path.join(cwd, 'effects.config.ts'));
    const config = await loadConfigFile(file!);
    expect(config.prefix).toBe('from-ts');
    expect(config.effects[0]).toMatchObject({ name: 'send-email', attempts: 3 });
  });

  it('loads an .mjs file named by --config, then by EFFECTS_CONFIG, relative to the working directory', async () => {
    write('one.mjs', `export default { prefix: 'one', effects: [] };\n`);
    write('two.mjs', `export default { prefix: 'two', effects: [] };\n`);
    const viaFlag = findConfigFile('one.mjs', { EFFECTS_CONFIG: 'two.mjs' }, dir);
    expect((await loadConfigFile(viaFlag!)).prefix).toBe('one');
    const viaEnv = findConfigFile(undefined, { EFFECTS_CONFIG: 'two.mjs' }, dir);
    expect((await loadConfigFile(viaEnv!)).prefix).toBe('two');
  });

  it('finds no file in a directory without one, and refuses a named file that does not exist', () => {
    const empty = mkdtempSync(path.join(dir, 'empty-'));
    expect(findConfigFile(undefined, {}, empty)).toBeUndefined();
    expect(() => findConfigFile('missing.ts', {}, empty)).toThrow(UsageError);
    expect(() => findConfigFile(undefined, { EFFECTS_CONFIG: 'missing.ts' }, empty)).toThrow(/Config file not found/);
  });

  it('reports a file that does not load as a usage error naming the file', async () => {
    const file = write('broken.mjs', `export default {;\n`);
    await expect(loadConfigFile(file)).rejects.toThrow(UsageError);
    await expect(loadConfigFile(file)).rejects.toThrow(/Could not load config file .*broken\.mjs/);
  });

  it('the CLI exits 2 and prints every config error with its path and suggestion', async () => {
    const file = write(
      'bad.mjs',
      `export default {
  redsi: 'redis://127.0.0.1:6379',
  effects: [{ name: 'send-email', on: 'order_placed', atempts: 3, async run() {} }, { name: 'send-email', on: 'x', async run() {} }],
};\n`,
    );
    const result = await runCli(['status', '--config', file], { cwd: dir });
    expect(result.code).toBe(ExitCode.usage);
    expect(result.stderr).toContain(`Invalid config in ${file}`);
    expect(result.stderr).toContain('redsi: unknown key; did you mean "redis"?');
    expect(result.stderr).toContain('effects.0.atempts: unknown key; did you mean "attempts"?');
    expect(result.stderr).toContain('effects.1.name: duplicate effect name "send-email"');
    expect(result.stdout).toBe('');

    const viaEnv = await runCli(['status'], { cwd: dir, env: { EFFECTS_CONFIG: 'bad.mjs' } });
    expect(viaEnv.code).toBe(ExitCode.usage);
    expect(viaEnv.stderr).toContain('did you mean "attempts"?');
  });

  it('the CLI applies flag > environment > config file to the schema it migrates', async () => {
    const names = ['file', 'env', 'flag'].map((source) => `${namespaceFor(`config_${source}`).schema}`);
    const [fromFile, fromEnv, fromFlag] = names;
    const cwd = mkdtempSync(path.join(dir, 'precedence-'));
    writeFileSync(path.join(cwd, 'effects.config.mjs'), `export default { schema: '${fromFile}', effects: [] };\n`);
    const db = knexFactory({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 1 } });
    try {
      const migrateSchema = async (args: string[], env: NodeJS.ProcessEnv = {}) => {
        const result = await runCli(['migrate', '--json', '--db', DATABASE_URL, ...args], { cwd, env });
        expect(result.stderr).toBe('');
        expect(result.code).toBe(0);
        return JSON.parse(result.stdout).schema as string;
      };
      expect(await migrateSchema([])).toBe(fromFile);
      expect(await migrateSchema([], { EFFECTS_SCHEMA: fromEnv })).toBe(fromEnv);
      expect(await migrateSchema(['--schema', fromFlag], { EFFECTS_SCHEMA: fromEnv })).toBe(fromFlag);
    } finally {
      for (const schema of names) await db.raw('drop schema if exists ?? cascade', [schema]);
      await db.destroy();
    }
  });
});
