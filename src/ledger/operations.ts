import type { Knex } from 'knex';

export type OperationOutcome = 'running' | 'ok' | 'failed' | 'interrupted';

export interface OperationRecord {
  id: string;
  command: string;
  actor: string;
  reason: string | null;
  filter: Record<string, unknown>;
  counts: Record<string, number>;
  outcome: OperationOutcome;
  error: string | null;
  startedAt: Date;
  finishedAt: Date | null;
}

type DbOperation = Omit<OperationRecord, 'startedAt' | 'finishedAt'> & { started_at: Date; finished_at: Date | null };

const fromDb = ({ started_at, finished_at, ...rest }: DbOperation): OperationRecord => ({
  ...rest,
  startedAt: started_at,
  finishedAt: finished_at,
});

/** Every SQL statement on the operations (audit) table. */
export class Operations {
  constructor(
    readonly db: Knex,
    readonly schema: string,
  ) {}

  private table() {
    return this.db.withSchema(this.schema).table('operations');
  }

  async start(input: { command: string; actor: string; reason?: string; filter: Record<string, unknown> }): Promise<string> {
    const [row] = await this.table()
      .insert({ command: input.command, actor: input.actor, reason: input.reason ?? null, filter: input.filter })
      .returning('id');
    return row.id;
  }

  async finish(
    id: string,
    result: { outcome: Exclude<OperationOutcome, 'running'>; counts: Record<string, number>; error?: string },
  ): Promise<void> {
    await this.table()
      .where({ id })
      .update({ outcome: result.outcome, counts: result.counts, error: result.error ?? null, finished_at: this.db.fn.now() });
  }

  async list(options: { limit?: number; since?: number; command?: string } = {}): Promise<OperationRecord[]> {
    const query = this.table().orderBy('started_at', 'desc').limit(options.limit ?? 20);
    if (options.since) query.where('started_at', '>=', new Date(options.since));
    if (options.command) query.where('command', options.command);
    return ((await query) as DbOperation[]).map(fromDb);
  }

  /** Operations whose id starts with `prefix` (lower-case hex and dashes), at most `limit`. */
  async findByIdPrefix(prefix: string, limit: number): Promise<OperationRecord[]> {
    const rows = (await this.table()
      .whereRaw('id::text like ?', [`${prefix.replace(/[%_\\]/g, '')}%`])
      .orderBy('started_at', 'desc')
      .limit(limit)) as DbOperation[];
    return rows.map(fromDb);
  }

  async get(id: string): Promise<OperationRecord | undefined> {
    const row = (await this.table().where({ id }).first()) as DbOperation | undefined;
    return row && fromDb(row);
  }
}
