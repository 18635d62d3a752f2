export type LedgerStatus = 'pending' | 'done' | 'failed' | 'discarded';
export const LEDGER_STATUSES: LedgerStatus[] = ['pending', 'done', 'failed', 'discarded'];

/** One (event occurrence, effect): what is owed and what became of it. */
export interface LedgerRow {
  /** bigint, as a string. */
  id: string;
  event: string;
  eventId: string;
  effect: string;
  status: LedgerStatus;
  attempts: number;
  replayCount: number;
  lastError: string | null;
  createdAt: Date;
  /** When the row last became pending: emitted, or put back by a replay. */
  pendingSince: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

export interface DbLedgerRow {
  id: string;
  event: string;
  event_id: string;
  effect: string;
  status: LedgerStatus;
  attempts: number;
  replay_count: number;
  last_error: string | null;
  created_at: Date;
  pending_since: Date;
  updated_at: Date;
  finished_at: Date | null;
}

export function fromDb(row: DbLedgerRow): LedgerRow {
  return {
    id: String(row.id),
    event: row.event,
    eventId: row.event_id,
    effect: row.effect,
    status: row.status,
    attempts: row.attempts,
    replayCount: row.replay_count,
    lastError: row.last_error,
    createdAt: row.created_at,
    pendingSince: row.pending_since,
    updatedAt: row.updated_at,
    finishedAt: row.finished_at,
  };
}
