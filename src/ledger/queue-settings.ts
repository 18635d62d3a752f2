import type { Knex } from 'knex';
import type { QueueConfig } from '../queue/queues.js';

export interface QueueSetting {
  queue: string;
  paused: boolean;
  updatedBy: string | null;
  updatedAt: Date;
}

/**
 * Every SQL statement on the queue_settings table: what a queue's state must outlive Redis, which
 * may be wiped, and the processes without the app's config: the paused state an operator gave it
 * (pause/resume write it; rebuild re-applies it), and the config the workers last started with.
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

  /**
   * Records the config the worker runs each queue with (the last worker started wins, as in a
   * rolling deploy); the paused state is left as it is.
   */
  async recordConfigs(configs: ReadonlyMap<string, QueueConfig>): Promise<void> {
    if (configs.size === 0) return;
    // In queue order, so workers starting together lock the rows in one order (no deadlock); and
    // only where the config changed, so a fleet's restarts write nothing.
    const rows = [...configs]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([queue, config]) => ({ queue, config: JSON.stringify(config), config_updated_at: this.db.fn.now() }));
    await this.table()
      .insert(rows)
      .onConflict('queue')
      .merge(['config', 'config_updated_at'])
      .whereRaw('?? is distinct from excluded.config', [`queue_settings.config`]);
  }

  /** The config each queue's workers last started with, for the queues a worker has recorded one. */
  async configs(): Promise<Map<string, QueueConfig>> {
    const rows = (await this.table().whereNotNull('config').select('queue', 'config')) as Array<{ queue: string; config: unknown }>;
    // One written by another version in a shape this one does not read counts as none: defaults
    // are better than options half understood.
    return new Map(rows.filter((r) => isQueueConfig(r.config)).map((r) => [r.queue, r.config as QueueConfig]));
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

function isQueueConfig(value: unknown): boolean {
  const c = value as Partial<QueueConfig> | null;
  return (
    typeof c === 'object' &&
    c !== null &&
    Number.isInteger(c.attempts) &&
    typeof c.backoff?.type === 'string' &&
    typeof c.backoff.delay === 'number' &&
    typeof c.retention?.completedAgeMs === 'number' &&
    typeof c.retention.failedAgeMs === 'number'
  );
}
