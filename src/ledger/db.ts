import knexFactory, { type Knex } from 'knex';
import { assertDatabaseUrl } from '../config/connection-urls.js';

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
