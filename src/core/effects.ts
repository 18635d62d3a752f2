import type { Knex } from 'knex';
import { assertDatabaseUrl, assertRedisSetting } from '../config/connection-urls.js';
import { validateConfig } from '../config/schema.js';
import { resolveSettings, type ConnectionFlags } from '../config/settings.js';
import type { EffectsConfig } from '../config/types.js';
import { withDbRetry } from '../ledger/retry.js';
import { pushRows, type PushableRow } from '../queue/push.js';
import type { Logger } from './logger.js';
import { Runtime, type RuntimeOptions } from './runtime.js';

export interface EmitOptions {
  /** The caller's knex transaction: the ledger rows commit or roll back with the business write. */
  trx?: Knex.Transaction;
}

export interface EmitResult {
  /** Ledger row ids, one per subscribed effect; empty when no effect subscribes to the event. */
  ledgerIds: string[];
  effects: string[];
}

export interface Effects {
  /**
   * Records which effects `event` owes for `id`, then pushes one thin task per effect. With a
   * transaction, the push waits for its commit; a rollback leaves neither row nor job. A failed push
   * is logged, not thrown: the rows stay pending and the scheduler's rebuild enqueues them.
   */
  emit(event: string, id: string | number, options?: EmitOptions): Promise<EmitResult>;
  /**
   * Waits for pushes still in flight (at most the push timeout), then closes the connections this
   * object opened. `emit` throws afterwards; rows of a transaction that commits later stay pending
   * for the scheduler's rebuild.
   */
  close(): Promise<void>;
  readonly runtime: Runtime;
}

export interface CreateEffectsOptions extends RuntimeOptions {
  /** Connection overrides, as the CLI's flags. */
  flags?: ConnectionFlags;
  logger?: Logger;
  /**
   * How long `emit` (without a transaction) and `close` wait for a push. While Redis is down a push
   * waits for it to come back; the endpoint must not. @defaultValue 2000
   */
  pushTimeoutMs?: number;
}

export function createEffects(config: EffectsConfig, options: CreateEffectsOptions = {}): Effects {
  const settings = resolveSettings(validateConfig(config), options.flags);
  // At start-up, not at the first emit: a bad URL would otherwise show only as a warning per push
  // while the rows pile up for the scheduler.
  assertRedisSetting(settings.redisUrl, settings.redisCluster);
  assertDatabaseUrl(settings.databaseUrl);
  const runtime = new Runtime(settings, options);
  const log = runtime.logger;
  const inFlight = new Set<Promise<unknown>>();
  const pushTimeoutMs = options.pushTimeoutMs ?? 2000;
  /** Resolves when `promise` settles or the push timeout passes, whichever is first. */
  const bounded = (promise: Promise<unknown>) => {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      promise,
      new Promise((resolve) => {
        timer = setTimeout(resolve, pushTimeoutMs);
        timer.unref();
      }),
    ]).finally(() => clearTimeout(timer));
  };

  /** Tracks a background push so that `close` can wait for it; a failure is logged, not thrown. */
  const track = (work: Promise<unknown>, ledgerIds: string[]) => {
    const pushing = work
      .catch((error: Error) =>
        log.warn(
          { err: { message: error.message }, ledgerIds },
          'push failed; the rows stay pending and the scheduler will enqueue them',
        ),
      )
      .finally(() => inFlight.delete(pushing));
    inFlight.add(pushing);
    return pushing;
  };
  const push = async (rows: readonly PushableRow[]) => {
    await pushRows(runtime, rows);
    log.debug({ ledgerIds: rows.map((r) => r.id) }, 'pushed');
  };
  /** Set by close(): emit refuses. */
  let closing = false;
  /**
   * Aborted once the connections are closed: a push then would reopen them, and leak them, and a
   * read-back retrying against a database that is away stops waiting.
   */
  const closeAbort = new AbortController();
  const closed = () => closeAbort.signal.aborted;
  const leftToScheduler = (ledgerIds: string[]) =>
    log.warn({ ledgerIds }, 'closed before the push after commit; what the transaction committed stays pending for the scheduler');
  /**
   * Pushes what the transaction committed. Only the outermost transaction commits (a savepoint's
   * release does not), and its outcome is read back from the ledger rather than taken from knex:
   * knex resolves on an explicit `trx.rollback()`, and a commit whose reply was lost rejects although
   * the rows are there. What is not there was rolled back and is owed by no one.
   */
  const pushAfterCommit = async (trx: Knex.Transaction, rows: readonly PushableRow[]) => {
    let outermost = trx;
    while (outermost.parentTransaction) outermost = outermost.parentTransaction;
    await outermost.executionPromise.catch(() => {});
    const ledgerIds = rows.map((r) => r.id);
    if (closed()) return leftToScheduler(ledgerIds);
    let owed: readonly PushableRow[] = rows;
    try {
      const kept = await withDbRetry(() => runtime.ledger.findByIds(ledgerIds), log, 'read-back after commit', closeAbort.signal);
      owed = rows.filter((r) => kept.has(r.id));
      if (owed.length < rows.length) {
        log.debug({ ledgerIds: ledgerIds.filter((id) => !kept.has(id)) }, 'transaction rolled back; nothing to push');
      }
    } catch (error) {
      if (closed()) return leftToScheduler(ledgerIds);
      // Outcome unknown: push them all. The worker skips a job whose row does not exist, and row ids
      // are never reused.
      log.warn({ err: { message: (error as Error).message }, ledgerIds }, 'cannot read back what the transaction kept; pushing every row');
    }
    if (owed.length === 0) return;
    if (closed()) return leftToScheduler(ledgerIds);
    await push(owed);
  };

  return {
    runtime,
    async emit(event, rawId, { trx } = {}) {
      if (closing) throw new Error('emit() after close(): create a new effects object');
      const id = String(rawId);
      const effects = (runtime.effectsByEvent.get(event) ?? []).map((e) => e.name);
      if (effects.length === 0) {
        log.warn({ event, id }, 'no effect subscribes to this event; nothing emitted');
        return { ledgerIds: [], effects };
      }
      const rows = await runtime.ledger.owe(event, id, effects, trx);
      log.info({ event, id, effects }, 'scheduling');
      const ledgerIds = rows.map((r) => r.id);
      if (trx) track(pushAfterCommit(trx, rows), ledgerIds);
      // The push goes on in the background past the timeout; the rows are safe in the ledger.
      else await bounded(track(push(rows), ledgerIds));
      return { ledgerIds, effects };
    },
    async close() {
      closing = true;
      await bounded(Promise.allSettled([...inFlight]));
      closeAbort.abort();
      await runtime.close();
    },
  };
}
