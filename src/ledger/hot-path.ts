import pg from 'pg';
import type { LedgerCheck } from './ledger.js';
import type { LedgerStatus } from './rows.js';

export interface LedgerHotPathOptions {
  /**
   * Send the statement as a named prepared statement, parsed and planned once per connection. Turn
   * off behind a pooler that does not keep prepared statements (PgBouncer in transaction mode before
   * 1.21). @defaultValue true
   */
  preparedStatements?: boolean;
  /**
   * How long the statement may run. The server cancels it then (a statement waiting on a lock does
   * not keep its backend busy), and a second later the client drops the connection and retries on a
   * new one: a connection that died without a word (a failover, a dropped NAT entry) would otherwise
   * hold every job until the OS gives up on it. @defaultValue 10000
   */
  queryTimeoutMs?: number;
}

/**
 * The worker's hot path, on two connections of its own: reading the rows of the jobs about to run,
 * and marking the rows of finished jobs done. Every job waits for its read, so the read's cost bounds
 * worker throughput: a prepared statement, ids and rows as one text each way, and only the columns
 * the check needs (`npm run bench -- worker-throughput`).
 *
 * Done-marks commit without waiting for the WAL flush (set_config with is_local inside the
 * statement, so no session setting leaks through a connection pooler). What that risks is narrow:
 * if the PostgreSQL server itself crashes within a fraction of a second of a done-mark, the mark is
 * lost and the row is pending again, as after a worker crash (see `LedgerBatcher`). Rows owed by
 * `emit` are written in the caller's transaction with its own durability.
 */
export class LedgerHotPath {
  private readonly readPool: pg.Pool;
  private readonly markPool: pg.Pool;
  private readonly findQuery: pg.QueryArrayConfig;
  private readonly markDoneQuery: pg.QueryConfig;

  constructor(databaseUrl: string, schema: string, options: LedgerHotPathOptions = {}) {
    const timeoutMs = options.queryTimeoutMs ?? 10_000;
    // One connection each for reads and for done-marks: the batcher's statements of a kind queue on
    // theirs, so the next goes out as soon as the server is done with the last, and a read never
    // waits behind a done-mark. Interleaved in one worker process on a 2-core machine, the marks on a
    // connection of their own gave 7-13% more jobs/s in four runs out of five (-1% in the fifth).
    // 3 s to connect, as the knex pool, so an unreachable server is reported fast.
    const connection = (): pg.Pool => {
      const pool = new pg.Pool({
        connectionString: databaseUrl,
        max: 1,
        connectionTimeoutMillis: 3000,
        query_timeout: timeoutMs + 1000,
        // Start-up parameters, which PgBouncer refuses: sent only where prepared statements are, on a
        // direct connection.
        ...(options.preparedStatements === false ? {} : { statement_timeout: timeoutMs }),
        keepAlive: true,
        keepAliveInitialDelayMillis: 10_000,
      });
      // An idle connection that dies (a restarted server) is dropped by the pool; its error is not ours.
      pool.on('error', () => {});
      return pool;
    };
    this.readPool = connection();
    this.markPool = connection();
    const table = `${pg.escapeIdentifier(schema)}.ledger`;
    // Constant texts whatever the batch sizes. The ids go as one comma-separated text (they are
    // digits only), and the rows come back as one JSON text, [[id, status, effect, event, event_id],
    // ...], which JSON.parse reads natively, instead of a result row per id for the driver to decode
    // field by field.
    const named = (name: string) => (options.preparedStatements === false ? {} : { name });
    // The names are per connection, and these connections serve one schema.
    this.findQuery = {
      ...named('effects_find'),
      rowMode: 'array',
      text: `select coalesce(json_agg(json_build_array(id::text, status, effect, event, event_id)), '[]')::text
               from ${table}
              where id = any(string_to_array($1, ',')::bigint[])`,
    };
    this.markDoneQuery = {
      ...named('effects_mark_done'),
      text: `with async_commit as (select set_config('synchronous_commit', 'off', true))
             update ${table}
                set status = 'done', finished_at = now(), updated_at = now(), last_error = null
               from async_commit
              where id = any(string_to_array($1, ',')::bigint[]) and status in ('pending', 'failed')`,
    };
  }

  /** The rows of `ids` that exist. Ids are ledger row ids, digits only (`rowIdFromJobId` checks those from job ids). */
  async find(ids: readonly string[]): Promise<Map<string, LedgerCheck>> {
    const found = new Map<string, LedgerCheck>();
    if (ids.length === 0) return found;
    // On any error (the query timeout included) the pool drops the connection rather than reuse it:
    // one whose statement timed out may still be running it, or be dead.
    const result = await this.readPool.query<[string]>({ ...this.findQuery, values: [ids.join(',')] });
    const rows = JSON.parse(result.rows[0][0]) as Array<[string, LedgerStatus, string, string, string]>;
    for (const [id, status, effect, event, eventId] of rows) found.set(id, { id, event, eventId, effect, status });
    return found;
  }

  /** Marks the rows of `ids` done; a discarded or done row stays as it is. */
  async markDone(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.markPool.query({ ...this.markDoneQuery, values: [ids.join(',')] });
  }

  async close(): Promise<void> {
    await Promise.all([this.readPool.end(), this.markPool.end()]);
  }
}
