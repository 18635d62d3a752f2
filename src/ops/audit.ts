import os from 'node:os';
import { NotFoundError } from '../core/errors.js';
import type { Runtime } from '../core/runtime.js';
import { assertMigrated } from '../ledger/migrate.js';
import { Operations, type OperationRecord } from '../ledger/operations.js';

/** Every command the audit trail records, as the operator would type it. */
export const AUDITED_COMMANDS = ['replay', 'discard', 'rebuild', 'pause', 'resume', 'resume --ramp', 'ramp cancel'] as const;
export type AuditedCommand = (typeof AUDITED_COMMANDS)[number];

export interface AuditInput {
  command: AuditedCommand;
  /** Who: `--actor`, else the OS user. */
  actor?: string;
  reason?: string;
  /** The filter or parameters the operation ran with (no secrets). */
  filter?: Record<string, unknown>;
}

export const defaultActor = (): string => {
  try {
    return process.env.EFFECTS_ACTOR || os.userInfo().username;
  } catch {
    return 'unknown';
  }
};

/**
 * Runs an operator action and records it in the audit trail: a row when it starts, its counts and
 * outcome when it ends (`interrupted` when `interrupted()` says so, `failed` when it throws, with
 * the counts of what it had done when `partial` tells).
 * Returns the action's result with the operation id.
 */
export async function audited<T extends object>(
  runtime: Runtime,
  input: AuditInput,
  action: (operationId: string) => Promise<T>,
  options: {
    counts: (result: T) => Record<string, number>;
    interrupted?: (result: T) => boolean;
    /** What the action had done when it threw, for the record's counts. */
    partial?: () => T | undefined;
  },
): Promise<T & { operationId: string }> {
  const operations = new Operations(runtime.db, runtime.settings.schema);
  const id = await operations.start({
    command: input.command,
    actor: input.actor || defaultActor(),
    reason: input.reason,
    filter: input.filter ?? {},
  });
  try {
    const result = await action(id);
    await operations.finish(id, {
      outcome: options.interrupted?.(result) ? 'interrupted' : 'ok',
      counts: options.counts(result),
    });
    return { ...result, operationId: id };
  } catch (error) {
    const partial = options.partial?.();
    await operations
      .finish(id, { outcome: 'failed', counts: partial ? options.counts(partial) : {}, error: (error as Error).message })
      .catch(() => undefined);
    throw error;
  }
}

/** An operation record as the operator API and `--json` give it: times in epoch ms. */
export type OperationView = Omit<OperationRecord, 'startedAt' | 'finishedAt'> & { startedAt: number; finishedAt: number | null };

export const operationView = (r: OperationRecord): OperationView => ({
  ...r,
  startedAt: r.startedAt.getTime(),
  finishedAt: r.finishedAt ? r.finishedAt.getTime() : null,
});

export interface ListOperationsOptions {
  /** Newest first, at most this many. @defaultValue 20 */
  limit?: number;
  /** Started at or after this time (epoch ms). @defaultValue no bound */
  since?: number;
  /** Only this command (`rebuild`, `replay`, `resume --ramp`, ...). @defaultValue all */
  command?: string;
}

/** The audit trail, newest first. */
export async function listOperations(runtime: Runtime, options: ListOperationsOptions = {}): Promise<OperationView[]> {
  return (await new Operations(runtime.db, runtime.settings.schema).list(options)).map(operationView);
}

/**
 * One operation by its id or by a unique prefix of it (at least 6 characters, as a short id is
 * copied from a table). Not found or ambiguous: NotFoundError (exit 1).
 */
export async function getOperation(runtime: Runtime, id: string): Promise<OperationView> {
  const wanted = id.trim().toLowerCase();
  if (!/^[0-9a-f-]{6,36}$/.test(wanted)) {
    throw new NotFoundError(`No operation "${id}": an operation id is a UUID (or its first 6+ characters).`, 'List them with `effects ops list`.');
  }
  const found = await new Operations(runtime.db, runtime.settings.schema).findByIdPrefix(wanted, 2);
  if (found.length === 0) throw new NotFoundError(`No operation "${id}".`, 'List them with `effects ops list`.');
  if (found.length > 1) {
    throw new NotFoundError(`"${id}" matches several operations.`, 'Give more characters of the id.');
  }
  return operationView(found[0]);
}

/**
 * Why no audit record can be written now (the database is unreachable or not migrated), or null.
 * Queue controls (pause, resume, ramp) use it: they must work in an outage, PostgreSQL's included.
 */
export async function auditUnavailable(runtime: Runtime): Promise<string | null> {
  try {
    await runtime.assertReachable({ db: true });
    await assertMigrated(runtime.db, runtime.settings.schema);
    return null;
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * audited() for actions that must not depend on the database: when it cannot take an audit record,
 * the action runs anyway with a null operation id, and `auditSkipped` says why, for the caller to
 * warn about. `action` gets the operation id, and whether the database is there to use.
 */
export async function auditedIfReachable<T extends object>(
  runtime: Runtime,
  input: AuditInput,
  action: (operationId: string | null, dbAvailable: boolean) => Promise<T>,
  options: {
    counts: (result: T) => Record<string, number>;
    /** Why the database is unusable, when the caller has found that out already (no second wait). */
    unavailable?: string;
  },
): Promise<T & { operationId: string | null; auditSkipped: string | null }> {
  const unavailable = options.unavailable ?? (await auditUnavailable(runtime));
  if (unavailable) return { ...(await action(null, false)), operationId: null, auditSkipped: unavailable };
  const result = await audited(runtime, input, (id) => action(id, true), options);
  return { ...result, auditSkipped: null };
}
