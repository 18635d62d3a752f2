import knexFactory, { type Knex } from 'knex';
import { UsageError } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';

/**
 * A knex pool for the ledger. Connection failures surface within a few seconds instead of hanging,
 * and dead connections (a restarted server, a terminated backend) are dropped and replaced.
 */
export function createDb(databaseUrl: string, options: { poolMax?: number } = {}): Knex {
  assertDatabaseUrl(databaseUrl);
  return knexFactory({
    client: 'pg',
    // 3 s to connect leaves the CLI time to start and report an unreachable server within 5 s.
    connection: { connectionString: databaseUrl, connectionTimeoutMillis: 3000, keepAlive: true },
    pool: { min: 0, max: options.poolMax ?? 10 },
    acquireConnectionTimeout: 5000,
    // knex prints connection errors with console.log; callers report them with a hint instead.
    log: { warn() {}, error() {}, deprecate() {}, debug() {} },
  });
}

/**
 * pg reads any other string as a socket directory or host name, so a typo such as `--db localhost`
 * would fail later as "cannot reach PostgreSQL at base": say which setting is wrong instead.
 */
function assertDatabaseUrl(url: string): void {
  if (/^postgres(ql)?:\/\//i.test(url) || url.startsWith('/')) return;
  throw new UsageError(
    `Not a PostgreSQL URL: ${redactUrl(url)}.`,
    'Expected postgres://[user[:password]@]host[:port]/database[?sslmode=...], or a socket directory such as /var/run/postgresql. Check --db, EFFECTS_DATABASE_URL / DATABASE_URL, or `database` in the config file.',
  );
}
