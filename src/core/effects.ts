import type { Knex } from 'knex';
import { assertDatabaseUrl, assertRedisSetting } from '../config/connection-urls.js';
import { validateConfig } from '../config/schema.js';
import { connectionSecrets, resolveSettings, type ConnectionFlags } from '../config/settings.js';
import type { EffectsConfig } from '../config/types.js';
import { withDbRetry } from '../ledger/retry.js';
import { MAX_TASK_FIELD_LENGTH, pushRows, type PushableRow } from '../queue/push.js';
import { asError, UsageError } from './errors.js';
import { createLogger, errorSummary, logDestination, type Logger } from './logger.js';
import { Runtime, type RuntimeOptions } from './runtime.js';

export interface EmitOptions {
  /** The caller's knex transaction: the ledger rows commit or roll back with the business write. */
  trx?: Knex.Transaction | null;
}

/**
 * What an event is about: a non-empty string of at most 1,000 characters, a safe integer or a
 * bigint (a bigint column's value). The task carries it as a string.
 */
export type EventId = string | number | bigint;

export interface EmitResult {
  /** Ledger row ids, one per subscribed effect; empty when no effect subscribes to the event. */
  ledgerIds: string[];
  effects: string[];
}

/** `E`: the events `emit` accepts, the config's own where its types say (see `EventOf`). */
export interface Effects<E extends string = string> {
  /**
   * Records which effects `event` owes for `id`, then pushes one thin task per effect. With a
   * transaction, the push waits for its commit; a rollback leaves neither row nor job. A failed push
   * is logged, not thrown: the rows stay pending and the scheduler's rebuild enqueues them.
   */
  emit(event: E, id: EventId, options?: EmitOptions): Promise<EmitResult>;
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
  /**
   * Where emit's warnings go (an unsubscribed event, a failed push) and, at info, one `scheduling`
   * line per emit. @defaultValue JSON lines on stderr at `EFFECTS_LOG_LEVEL`, else `warn`
   */
  logger?: Logger;
  /**
   * How long `emit` (without a transaction) and `close` wait for a push. While Redis is down a push
   * waits for it to come back; the endpoint must not. @defaultValue 2000
   */
  pushTimeoutMs?: number;
}

export function createEffects<E extends string = string>(config: EffectsConfig<E>, options: CreateEffectsOptions = {}): Effects<E> {
  const settings = resolveSettings(validateConfig(config), options.flags);
  // At start-up, not at the first emit: a bad URL would otherwise show only as a warning per push
  // while the rows pile up for the scheduler.
  assertRedisSetting(settings.redisUrl, settings.redisCluster);
  assertDatabaseUrl(settings.databaseUrl);
  // On stderr: an app's stdout may be its output (a CLI's JSON, a pipe), which a library's
  // diagnostics must not mix into.
  const logger =
    options.logger ??
    createLogger({
      level: process.env.EFFECTS_LOG_LEVEL || 'warn',
      pretty: false,
      secrets: connectionSecrets(settings),
      destination: logDestination(2),
    });
  const runtime = new Runtime(settings, { ...options, logger });
  const log = runtime.logger;
  /** Pushes in flight, and emits still writing their rows: close() waits for both. */
  const inFlight = new Set<Promise<unknown>>();
  /** The rows of the pushes sent to Redis and not yet answered. */
  const pushing = new Set<readonly PushableRow[]>();
  const emitting = new Set<Promise<unknown>>();
  /**
   * The rows emitted in each outermost transaction not yet settled: one read-back and one push per
   * commit, however many events the transaction emits.
   */
  const owedByTransaction = new WeakMap<Knex.Transaction, PushableRow[]>();
  const pushTimeoutMs = options.pushTimeoutMs ?? 2000;
  /** Resolves when `promise` settles (to its value) or the push timeout passes (to TIMED_OUT). */
  const bounded = (promise: Promise<unknown>) => {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      promise,
      new Promise<typeof TIMED_OUT>((resolve) => {
        timer = setTimeout(() => resolve(TIMED_OUT), pushTimeoutMs);
        timer.unref();
      }),
    ]).finally(() => clearTimeout(timer));
  };

  /**
   * Tracks a background push so that `close` can wait for it; a failure is logged, not thrown. One
   * that ends after close() is not: close() already named its rows as left to the scheduler.
   */
  const track = (work: Promise<unknown>, rows: readonly PushableRow[]) => {
    const pushing = work
      .catch((error: Error) => {
        if (closed()) return;
        log.warn(
          { err: errorSummary(error), ledgerIds: rows.map((r) => r.id) },
          'push failed; the rows stay pending and the scheduler will enqueue them',
        );
      })
      .finally(() => inFlight.delete(pushing));
    inFlight.add(pushing);
    return pushing;
  };
  const push = async (rows: readonly PushableRow[]) => {
    // Closed meanwhile: a push now would open the connections again, and leave them open.
    if (closed()) return leftToScheduler(rows.map((r) => r.id));
    const pushed = pushRows(runtime, rows);
    pushing.add(rows);
    try {
      // While Redis is away the push waits for it (BullMQ's connections queue commands): say so once,
      // after a commit as much as in an emit without a transaction, which returns at this moment.
      if ((await bounded(pushed)) === TIMED_OUT) {
        log.warn(
          { ledgerIds: rows.map((r) => r.id), pushTimeoutMs },
          'push still waiting for Redis; it goes on in the background, and the rows stay pending for the scheduler if it never lands',
        );
      }
      await pushed;
    } finally {
      pushing.delete(rows);
    }
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
    log.warn({ ledgerIds }, 'closed before the push; these rows stay pending for the scheduler');
  /**
   * Pushes what the transaction committed. Only the outermost transaction commits (a savepoint's
   * release does not), and its outcome is read back from the ledger rather than taken from knex:
   * knex resolves on an explicit `trx.rollback()`, and a commit whose reply was lost rejects although
   * the rows are there. What is not there was rolled back and is owed by no one.
   */
  const pushAfterCommit = async (outermost: Knex.Transaction, rows: readonly PushableRow[]) => {
    try {
      await outermost.executionPromise.catch(() => {});
    } finally {
      owedByTransaction.delete(outermost);
    }
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
      log.warn({ err: errorSummary(asError(error)), ledgerIds }, 'cannot read back what the transaction kept; pushing every row');
    }
    if (owed.length === 0) return;
    if (closed()) return leftToScheduler(ledgerIds);
    await push(owed);
  };

  const emitNow = async (event: string, id: string, trx: Knex.Transaction | undefined): Promise<EmitResult> => {
    const effects = (runtime.effectsByEvent.get(event) ?? []).map((e) => e.name);
    if (effects.length === 0) {
      log.warn({ event, id }, 'no effect subscribes to this event; nothing emitted');
      return { ledgerIds: [], effects };
    }
    const rows = await runtime.ledger.owe(event, id, effects, trx);
    log.info({ event, id, effects }, 'scheduling');
    const ledgerIds = rows.map((r) => r.id);
    if (trx) {
      let outermost = trx;
      while (outermost.parentTransaction) outermost = outermost.parentTransaction;
      const owed = owedByTransaction.get(outermost);
      // The push registered by the transaction's first emit reads this list after the commit.
      if (owed) owed.push(...rows);
      else {
        const list = [...rows];
        owedByTransaction.set(outermost, list);
        track(pushAfterCommit(outermost, list), list);
      }
    } else {
      // The push goes on in the background past the timeout (and says so); the rows are safe in the ledger.
      await bounded(track(push(rows), rows));
    }
    return { ledgerIds, effects };
  };

  return {
    runtime,
    async emit(event, rawId, options = {}) {
      // null as much as undefined: no transaction.
      const trx = options.trx ?? undefined;
      if (closing) throw new Error('emit() after close(): create a new effects object');
      const id = eventIdText(rawId);
      if (typeof event !== 'string' || event.length === 0 || event.length > MAX_TASK_FIELD_LENGTH) {
        throw new UsageError(`emit(): the event must be a non-empty string of at most ${MAX_TASK_FIELD_LENGTH} characters.`);
      }
      // A knex instance or a finished object here would never settle a push: refuse it now.
      if (trx !== undefined && !(trx.isTransaction && trx.executionPromise instanceof Promise)) {
        throw new UsageError('emit(): `trx` must be a knex transaction (from `knex.transaction()`), not the knex instance.');
      }
      const emitted = emitNow(event, id, trx);
      emitting.add(emitted);
      return emitted.finally(() => emitting.delete(emitted));
    },
    async close() {
      closing = true;
      // An emit still writing its rows pushes them next: let it, and the pushes, within one push timeout.
      await bounded(Promise.allSettled([...emitting]).then(() => Promise.allSettled([...inFlight])));
      // Pushes still waiting for Redis end with the connections: their rows are the scheduler's. (A push
      // still waiting for its commit or read-back says so itself when it gets there.)
      const stranded = [...pushing].flat().map((r) => r.id);
      closeAbort.abort();
      if (stranded.length > 0) leftToScheduler(stranded);
      await runtime.close();
      // Our own logger writes behind: its last lines go out now, not only at a clean process exit.
      if (!options.logger) await new Promise<void>((resolve) => logger.flush(() => resolve()));
    },
  };
}

const TIMED_OUT = Symbol('timed out');

/**
 * The id as the task carries it. Refused here, in the app's transaction, rather than by the worker
 * later as a poison pill: what is not an id (undefined, an object, NaN), an integer JavaScript has
 * already rounded, and text too long for a thin task.
 */
function eventIdText(id: EventId): string {
  const text =
    typeof id === 'string' || typeof id === 'bigint' ? String(id) : Number.isSafeInteger(id) ? String(id) : undefined;
  if (text === undefined || text.length === 0 || text.length > MAX_TASK_FIELD_LENGTH) {
    const shown = typeof id === 'string' ? `a string of ${id.length} characters` : typeof id === 'number' ? String(id) : typeof id;
    throw new UsageError(
      `emit(): the id must be a non-empty string of at most ${MAX_TASK_FIELD_LENGTH} characters, a safe integer or a bigint; got ${shown}.`,
    );
  }
  return text;
}
