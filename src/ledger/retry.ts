import pRetry from 'p-retry';
import { errorSummary, type Logger } from '../core/logger.js';

/**
 * SQLSTATE classes and driver errors that mean "the server went away" or "not now" (57014: a
 * statement timeout, as when a migration holds the table; 53300: too many connections, as when a
 * fleet restarts together; 40P01 and 40001: a deadlock or serialization failure, which the server
 * resolves by failing one side), not "the query is wrong".
 */
const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  '57014',
  '57P01',
  '57P02',
  '57P03',
  '53300',
  '40P01',
  '40001',
]);

export function isTransientDbError(error: unknown): boolean {
  const e = error as { code?: string; name?: string; message?: string };
  if (e?.code && (TRANSIENT_CODES.has(e.code) || e.code.startsWith('08'))) return true;
  if (e?.name === 'KnexTimeoutError') return true;
  // 'timeout expired' is pg's connectionTimeoutMillis (a server too busy or briefly away to accept);
  // 'timeout exceeded when trying to connect' the same limit on a statement queued in a pg pool
  // whose connection stays busy (a read behind one that waits on a lock); 'Query read timeout' its
  // query_timeout (a statement unanswered, its connection dropped).
  return /Connection terminated|connection closed|terminating connection|Client has encountered a connection error|timeout expired|timeout exceeded when trying to connect|Query read timeout/i.test(
    e?.message ?? '',
  );
}

/**
 * Runs a ledger statement, riding out a PostgreSQL restart or a terminated backend with backoff
 * (about 30 s in all) instead of failing the job that needed it; `signal` stops the waiting early.
 * The first attempt runs bare: nearly every statement succeeds at once, and the worker's hot path
 * runs hundreds a second, so only a failure pays for the retry machinery.
 */
export async function withDbRetry<T>(run: () => Promise<T>, log: Logger, what: string, signal?: AbortSignal): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (!isTransientDbError(error) || signal?.aborted) throw error;
    warnRetrying(log, what, 1, error as Error);
  }
  return pRetry(run, {
    signal,
    retries: 12,
    minTimeout: 100,
    maxTimeout: 5000,
    randomize: true,
    shouldRetry: (error) => isTransientDbError(error),
    onFailedAttempt: (error) => {
      if (isTransientDbError(error)) warnRetrying(log, what, error.attemptNumber + 1, error);
    },
  });
}

function warnRetrying(log: Logger, what: string, attempt: number, error: Error): void {
  log.warn({ attempt, err: errorSummary(error) }, `ledger ${what} failed; retrying`);
}
