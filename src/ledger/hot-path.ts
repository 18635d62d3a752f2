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
 * The worker's hot path: one statement that marks finished jobs' rows done and reads the rows of the
 * jobs about to run, on a connection of its own. Every job waits for it twice (before and after it
 * runs), so its latency bounds worker throughput: a prepared statement, and a commit that does not
 * wait for the WAL flush, halve it on a busy machine (`npm run bench -- worker-throughput`).
 *
 * The asynchronous commit applies to this statement only (set_config with is_local inside it, so no
 * session setting leaks through a connection pooler). What it risks is narrow: if the PostgreSQL
 * server itself crashes within a fraction of a second of a done-mark, that mark is lost, the row is
 * pending again, and the scheduler's rebuild runs the effect once more, which every effect allows.
 * Rows owed by `emit` are written in the caller's transaction with its own durability.
 */
export class LedgerHotPath {
  private readonly pool: pg.Pool;
  private readonly query: pg.QueryArrayConfig;

  constructor(databaseUrl: string, schema: string, options: LedgerHotPathOptions = {}) {
    // One connection: the batcher keeps one statement in flight, and joins what arrives meanwhile
    // to the next one. 3 s to connect, as the knex pool, so an unreachable server is reported fast.
    const timeoutMs = options.queryTimeoutMs ?? 10_000;
    this.pool = new pg.Pool({
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
    this.pool.on('error', () => {});
    const table = `${pg.escapeIdentifier(schema)}.ledger`;
    // Constant text whatever the batch sizes, and cheap to send and to read at thousands of jobs a
    // second: the ids go as one comma-separated text each (they are digits only), and the rows come
    // back as one JSON text, [[id, status, effect, event, event_id], ...], which JSON.parse reads
    // natively, instead of a result row per id for the driver to decode field by field. Only the
    // columns the check needs. The read sees the table as it was before this statement's update, as
    // a separate earlier select would.
    const text = `with async_commit as (select set_config('synchronous_commit', 'off', true)),
      done as (
        update ${table}
           set status = 'done', finished_at = now(), updated_at = now(), last_error = null
         where id = any(string_to_array($1, ',')::bigint[]) and status in ('pending', 'failed')
         returning id)
      select coalesce(json_agg(json_build_array(l.id::text, l.status, l.effect, l.event, l.event_id)), '[]')::text
        from ${table} as l, async_commit
       where l.id = any(string_to_array($2, ',')::bigint[])`;
    // The name is per connection, and this pool's connections serve one schema.
    const name = options.preparedStatements === false ? {} : { name: 'effects_mark_done_and_find' };
    this.query = { ...name, text, rowMode: 'array' };
  }

  /**
   * Marks `doneIds` done (a discarded row stays discarded) and returns the rows of `findIds`. Ids are
   * ledger row ids, digits only (`rowIdFromJobId` checks the ones that come from job ids).
   */
  async markDoneAndFind(doneIds: readonly string[], findIds: readonly string[]): Promise<Map<string, LedgerCheck>> {
    const found = new Map<string, LedgerCheck>();
    if (doneIds.length === 0 && findIds.length === 0) return found;
    // On any error (the query timeout included) the pool drops the connection rather than reuse it:
    // one whose statement timed out may still be running it, or be dead.
    const result = await this.pool.query<[string]>({ ...this.query, values: [doneIds.join(','), findIds.join(',')] });
    const rows = JSON.parse(result.rows[0][0]) as Array<[string, LedgerStatus, string, string, string]>;
    for (const [id, status, effect, event, eventId] of rows) found.set(id, { id, event, eventId, effect, status });
    return found;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
