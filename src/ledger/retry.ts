import pRetry from 'p-retry';
import type { Logger } from '../core/logger.js';

/**
 * SQLSTATE classes and driver errors that mean "the server went away" or "not now" (57014: a
 * statement timeout, as when a migration holds the table), not "the query is wrong".
 */
const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', '57014', '57P01', '57P02', '57P03']);

export function isTransientDbError(error: unknown): boolean {
  const e = error as { code?: string; name?: string; message?: string };
  if (e?.code && (TRANSIENT_CODES.has(e.code) || e.code.startsWith('08'))) return true;
  if (e?.name === 'KnexTimeoutError') return true;
  // 'timeout expired' is pg's connectionTimeoutMillis (a server too busy or briefly away to accept);
  // 'Query read timeout' its query_timeout (a statement unanswered, its connection dropped).
  return /Connection terminated|connection closed|terminating connection|Client has encountered a connection error|timeout expired|Query read timeout/i.test(
    e?.message ?? '',
  );
}

/**
 * Runs a ledger statement, riding out a PostgreSQL restart or a terminated backend with backoff
 * (about 30 s in all) instead of failing the job that needed it; `signal` stops the waiting early.
 */
export function withDbRetry<T>(run: () => Promise<T>, log: Logger, what: string, signal?: AbortSignal): Promise<T> {
  return pRetry(run, {
    signal,
    retries: 12,
    minTimeout: 100,
    maxTimeout: 5000,
    randomize: true,
    shouldRetry: (error) => isTransientDbError(error),
    onFailedAttempt: (error) => {
      if (isTransientDbError(error)) {
        log.warn({ attempt: error.attemptNumber, err: { message: error.message } }, `ledger ${what} failed; retrying`);
      }
    },
  });
}
