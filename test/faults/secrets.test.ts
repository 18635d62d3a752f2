import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_URL, runCli, setupServices, type CliResult, type TestServices } from '../helpers.js';
import { startPrivateRedis, type PrivateRedis } from '../servers.js';
import { createRedis, type Redis } from '../../src/queue/redis.js';
import {
  createAppTables,
  createEmitter,
  effectOptions,
  FAST_WORKER,
  mapLimit,
  placeOrders,
  readOracle,
  reportRow,
  rowFrom,
  startWebhook,
  Supervisor,
  waitForSettled,
  writeConfig,
  type FaultConfig,
  type ProcessConfig,
  type Webhook,
} from './harness.js';

// Passwords with the characters that get encoded in URLs and escaped in JSON.
const REDIS_PASSWORD = 'Rz9!s3cr:t/%q@w';
const PG_PASSWORD = 'Pg"7#q/x;S3cret';
const WEBHOOK_TOKEN = 'T0KEN-b3a7c9d1e5f';

/** Every form a secret could take in output: as is, URL-encoded, JSON-escaped. */
const forms = (secret: string) => [secret, encodeURIComponent(secret), JSON.stringify(secret).slice(1, -1)];
const SECRET_FORMS = [REDIS_PASSWORD, PG_PASSWORD, WEBHOOK_TOKEN].flatMap(forms);

function leaks(text: string): string[] {
  return SECRET_FORMS.filter((form) => text.includes(form));
}

/** postgres://postgres:<password>@host:port/db of a URL without a password (trust auth ignores it). */
function withPassword(url: string, password: string): string {
  const parsed = new URL(url);
  parsed.password = encodeURIComponent(password);
  return parsed.toString();
}

/**
 * No password from the Redis or PostgreSQL URL (nor the alert webhook's secret path) in any log
 * line, error message or --json output; TLS settings pass through to the drivers; and every command
 * takes its credentials from the environment or the config file, never needing them on argv.
 * Redis here is a private one that requires a password; PostgreSQL trusts, so a password in its URL
 * is carried everywhere without being needed.
 */
describe('scenario 8: secrets', () => {
  let redis: PrivateRedis;
  let services: TestServices;
  let webhook: Webhook;
  let config: FaultConfig;
  let processConfig: ProcessConfig;
  let appSchema: string;
  const supervisors: Supervisor[] = [];
  /** Everything any process printed, to search for secrets at the end. */
  const outputs: Array<{ source: string; text: string }> = [];
  const record = (source: string, result: CliResult) => {
    outputs.push({ source, text: `${result.stdout}\n${result.stderr}` });
    return result;
  };

  beforeAll(async () => {
    redis = await startPrivateRedis({ password: REDIS_PASSWORD });
    const databaseUrl = withPassword(DATABASE_URL, PG_PASSWORD);
    services = await setupServices('faults-secrets', { redisUrl: redis.url, databaseUrl });
    await services.migrate();
    appSchema = `${services.schema}_app`;
    await createAppTables(services.db, appSchema);
    webhook = await startWebhook();
    processConfig = {
      redis: redis.url,
      database: databaseUrl,
      prefix: services.prefix,
      schema: services.schema,
      poison: { threshold: 1 },
      alerts: { webhook: `${webhook.url}/${WEBHOOK_TOKEN}` },
      worker: FAST_WORKER,
    };
    // A poison pill every 3rd order: error lines and alerts carry messages from deep inside.
    config = writeConfig(processConfig, effectOptions(appSchema, { buggyEvery: 3, attempts: 2, failureRate: 0 }));
  });

  afterAll(async () => {
    for (const supervisor of supervisors) await supervisor.stop();
    await webhook?.close();
    await services?.db.raw('drop schema if exists ?? cascade', [appSchema]);
    config?.remove();
    await services?.cleanup();
    await redis?.stop();
  });

  /** Connection settings in the environment only: what an operator's shell or a deployment sets. */
  const envOnly = () => ({
    EFFECTS_REDIS_URL: processConfig.redis,
    EFFECTS_DATABASE_URL: processConfig.database,
    EFFECTS_PREFIX: services.prefix,
    EFFECTS_SCHEMA: services.schema,
  });

  it('worker and scheduler run with credentials from the config file, and log none', async () => {
    for (const command of ['worker', 'scheduler'] as const) {
      const supervisor = new Supervisor({
        config: config.path,
        command,
        args: command === 'scheduler' ? ['--every', '1s'] : [],
        logLevel: 'debug',
      });
      supervisors.push(supervisor);
      await supervisor.start();
    }
    const effects = createEmitter(processConfig, effectOptions(appSchema, { buggyEvery: 3, attempts: 2, failureRate: 0 }));
    await placeOrders(services.db, effects, appSchema, 12);
    await effects.close();
    await waitForSettled(services.db, services.schema, 30_000);
    const [worker, scheduler] = supervisors;
    // Errors too: Redis refuses a connection with the wrong password, the worker says so and exits.
    const wrong = { ...envOnly(), EFFECTS_REDIS_URL: redis.url.replace(encodeURIComponent(REDIS_PASSWORD), 'not-it') };
    const refused = record('worker, wrong Redis password', await runCli(['worker', '--config', config.path], { env: wrong }));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^error: .*Redis/m);
    await scheduler.stop();
    await worker.stop();
    outputs.push({ source: 'worker log', text: worker.lines.join('\n') });
    outputs.push({ source: 'scheduler log', text: scheduler.lines.join('\n') });
    for (const r of webhook.requests) outputs.push({ source: 'alert body', text: JSON.stringify(r.body) });

    expect(worker.logRecords().length).toBeGreaterThan(50);
    expect(worker.logRecords().some((r) => r.msg === 'doing')).toBe(true);
    expect(worker.logRecords().some((r) => Number(r.level) >= 50)).toBe(true);
    expect(webhook.requests.length).toBeGreaterThan(0);
    expect(worker.unexpectedExits).toEqual([]);
  });

  it('operator commands take credentials from the environment or the config file, and print none', async () => {
    const commands = [
      ['status', '--json'],
      ['status'],
      ['poison', 'list', '--json', '--min-attempts', '1'],
      ['poison', 'list', '--by-error'],
      ['rebuild', '--since', '1h', '--yes', '--json'],
      ['replay', '--dry-run', '--json'],
      ['discard', '--dry-run', '--json'],
      ['migrate'],
      ['ops', 'list', '--json'],
    ];
    const withConfig = (args: string[]) => [...args, '--config', config.path];
    const runs = await mapLimit(
      [
        ...commands.map((args) => ({ source: `env: ${args.join(' ')}`, args, env: envOnly() })),
        // Loading the TypeScript config costs a second or two a run: a few commands show it works.
        ...commands
          .filter(([command]) => ['status', 'rebuild', 'migrate'].includes(command))
          .map((args) => ({ source: `config: ${args.join(' ')}`, args: withConfig(args), env: { EFFECTS_PREFIX: services.prefix } })),
      ],
      3,
      async ({ source, args, env }) => ({ source, r: await runCli(args, { env }) }),
    );
    for (const { source, r } of runs) {
      record(source, r);
      expect(r.code, `${source}\n${r.stderr}`).toBe(0);
      if (source.includes('--json')) expect(() => JSON.parse(r.stdout), source).not.toThrow();
    }
  });

  it('errors name the server without its password', async () => {
    const unreachablePg = withPassword('postgres://postgres@127.0.0.1:1/test', PG_PASSWORD);
    const missingDb = withPassword(DATABASE_URL.replace(/\/[^/]*$/, '/no_such_database_faults'), PG_PASSWORD);
    const wrongRedis = redis.url.replace(encodeURIComponent(REDIS_PASSWORD), encodeURIComponent(`${REDIS_PASSWORD}x`));
    const pgPortAsRedis = `redis://:${encodeURIComponent(REDIS_PASSWORD)}@127.0.0.1:5432`;
    const cases: Array<[string, NodeJS.ProcessEnv, string[]]> = [
      ['PostgreSQL unreachable', { ...envOnly(), EFFECTS_DATABASE_URL: unreachablePg }, ['migrate', '--json']],
      ['PostgreSQL database missing', { ...envOnly(), EFFECTS_DATABASE_URL: missingDb }, ['rebuild', '--since', '1h', '--json']],
      ['Redis wrong password', { ...envOnly(), EFFECTS_REDIS_URL: wrongRedis }, ['status', '--json']],
      ['Redis URL on a PostgreSQL port', { ...envOnly(), EFFECTS_REDIS_URL: pgPortAsRedis }, ['poison', 'list', '--json']],
      ['Redis unreachable, URL on argv', {}, ['status', '--json', '--redis', `redis://:${encodeURIComponent(REDIS_PASSWORD)}@127.0.0.1:1`]],
    ];
    const results = await mapLimit(cases, 3, ([, env, args]) => runCli(args, { env }));
    results.forEach((r, i) => {
      const [name] = cases[i];
      record(name, r);
      expect(r.code, `${name}\n${r.stdout}\n${r.stderr}`).toBe(1);
      expect(r.stderr, name).toMatch(/^error: /m);
      // The server is named, so the operator knows which one: host and port, password masked.
      expect(r.stderr, name).toMatch(/127\.0\.0\.1:\d+/);
    });
    // Redis answered and refused the password: the hint says so, not "Is Redis running?".
    const wrongPassword = results[cases.findIndex(([name]) => name === 'Redis wrong password')];
    expect(wrongPassword.stderr).toContain('hint: Redis refused the user or password');
  });

  it('rediss:// and sslmode reach the drivers', async () => {
    // ioredis turns rediss:// into TLS options; no TLS server runs here, so check the connection's options.
    const tls = createRedis({ url: `rediss://:${encodeURIComponent(REDIS_PASSWORD)}@127.0.0.1:1`, cluster: false }) as Redis;
    const tlsOn = Boolean(tls.options.tls);
    tls.disconnect();
    expect(tlsOn).toBe(true);
    // Against the plain Redis, a rediss:// URL fails the TLS handshake: the option was used.
    const rediss = record(
      'rediss to plain Redis',
      await runCli(['status', '--json'], { env: { ...envOnly(), EFFECTS_REDIS_URL: redis.url.replace('redis://', 'rediss://') } }),
    );
    expect(rediss.code).toBe(1);
    // PostgreSQL here has no SSL: sslmode=require must fail for that reason, sslmode=disable connect.
    const sslUrl = (mode: string) => `${processConfig.database}?sslmode=${mode}`;
    const required = record('sslmode=require', await runCli(['migrate'], { env: { ...envOnly(), EFFECTS_DATABASE_URL: sslUrl('require') } }));
    expect(required.code).toBe(1);
    expect(required.stderr).toMatch(/SSL/i);
    const disabled = record('sslmode=disable', await runCli(['migrate'], { env: { ...envOnly(), EFFECTS_DATABASE_URL: sslUrl('disable') } }));
    expect(disabled.code, disabled.stderr).toBe(0);

    const oracle = await readOracle(services.db, {
      schema: services.schema,
      appSchema,
      expectFailed: (row) => row.effect === 'sync-loyalty-points' && Number(row.eventId) % 3 === 0,
    });
    const found = outputs.flatMap(({ source, text }) => leaks(text).map((form) => `${source}: ${JSON.stringify(form)}`));
    const lines = outputs.reduce((n, o) => n + o.text.split('\n').length, 0);
    reportRow(
      rowFrom(
        '8 secrets',
        oracle,
        null,
        `${lines} lines from ${outputs.length} outputs searched, secrets found ${found.length}; ` +
          `rediss -> tls ${tlsOn ? 'on' : 'off'}; sslmode=require -> "${/\(([^()]*SSL[^()]*)\)/.exec(required.stderr)?.[1]}"`,
      ),
    );
    expect(found).toEqual([]);
    // Not vacuous: URLs with credentials were printed, masked.
    expect(outputs.some(({ text }) => text.includes(':***@'))).toBe(true);
    expect(oracle.lost, JSON.stringify(oracle.lostSample)).toBe(0);
  });
});
