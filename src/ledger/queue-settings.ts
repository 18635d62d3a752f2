import type { Knex } from 'knex';

export interface QueueSetting {
  queue: string;
  paused: boolean;
  updatedBy: string | null;
  updatedAt: Date;
}

/**
 * Every SQL statement on the queue_settings table: the state an operator gave a queue (paused), kept
 * in the database because Redis may be wiped. pause/resume write it; rebuild re-applies it.
 */
export class QueueSettings {
  constructor(
    readonly db: Knex,
    readonly schema: string,
  ) {}

  private table() {
    return this.db.withSchema(this.schema).table('queue_settings');
  }

  /** Remembers that `queues` are (or are no longer) paused. */
  async setPaused(queues: string | readonly string[], paused: boolean, actor?: string): Promise<void> {
    const names = typeof queues === 'string' ? [queues] : [...queues];
    if (names.length === 0) return;
    await this.table()
      .insert(names.map((queue) => ({ queue, paused, updated_by: actor ?? null })))
      .onConflict('queue')
      .merge({ paused, updated_by: actor ?? null, updated_at: this.db.fn.now() });
  }

  /** Names of the queues an operator left paused. */
  async listPaused(): Promise<string[]> {
    const rows = (await this.table().where({ paused: true }).orderBy('queue').select('queue')) as Array<{ queue: string }>;
    return rows.map((r) => r.queue);
  }

  async list(): Promise<QueueSetting[]> {
    const rows = (await this.table().orderBy('queue')) as Array<{
      queue: string;
      paused: boolean;
      updated_by: string | null;
      updated_at: Date;
    }>;
    return rows.map((r) => ({ queue: r.queue, paused: r.paused, updatedBy: r.updated_by, updatedAt: r.updated_at }));
  }
}
