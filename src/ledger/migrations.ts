import type { Knex } from 'knex';

/**
 * Numbered migrations of the ledger schema. Append only: a released migration never changes.
 * Each runs inside the configured schema (knex's `withSchema`).
 */
export interface Migration {
  name: string;
  up(db: Knex, schema: string): Promise<void>;
  down(db: Knex, schema: string): Promise<void>;
}

export const migrations: Migration[] = [
  {
    name: '001_ledger',
    async up(db, schema) {
      await db.schema.withSchema(schema).createTable('ledger', (t) => {
        t.bigIncrements('id').primary();
        t.text('event').notNullable();
        t.text('event_id').notNullable();
        t.text('effect').notNullable();
        t.text('status').notNullable().defaultTo('pending');
        t.integer('attempts').notNullable().defaultTo(0);
        t.integer('replay_count').notNullable().defaultTo(0);
        t.text('last_error');
        t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(db.fn.now());
        t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(db.fn.now());
        t.timestamp('finished_at', { useTz: true });
        t.check(`status in ('pending', 'done', 'failed', 'discarded')`, [], 'ledger_status_check');
      });
      // "Pending since T" is the rebuild's question: a range scan over a partial index.
      await db.raw(
        `create index ledger_pending_by_created on ??.ledger (created_at, id) where status = 'pending'`,
        [schema],
      );
      await db.raw(`create index ledger_by_event on ??.ledger (event, event_id)`, [schema]);
      await db.raw(`create index ledger_by_effect_status on ??.ledger (effect, status)`, [schema]);
    },
    async down(db, schema) {
      await db.schema.withSchema(schema).dropTableIfExists('ledger');
    },
  },
  {
    name: '002_operations',
    async up(db, schema) {
      // The audit trail of operator actions: who did what to which jobs, and what came of it.
      await db.schema.withSchema(schema).createTable('operations', (t) => {
        t.uuid('id').primary().defaultTo(db.raw('gen_random_uuid()'));
        t.text('command').notNullable();
        t.text('actor').notNullable();
        t.text('reason');
        t.jsonb('filter').notNullable().defaultTo('{}');
        t.jsonb('counts').notNullable().defaultTo('{}');
        t.text('outcome').notNullable().defaultTo('running');
        t.text('error');
        t.timestamp('started_at', { useTz: true }).notNullable().defaultTo(db.fn.now());
        t.timestamp('finished_at', { useTz: true });
        t.check(`outcome in ('running', 'ok', 'failed', 'interrupted')`, [], 'operations_outcome_check');
      });
      await db.raw(`create index operations_by_started on ??.operations (started_at desc)`, [schema]);
    },
    async down(db, schema) {
      await db.schema.withSchema(schema).dropTableIfExists('operations');
    },
  },
  {
    name: '003_queue_settings',
    async up(db, schema) {
      // What an operator set on a queue that must outlive Redis: a wiped Redis forgets that a queue
      // was paused, and rebuild puts it back from here.
      await db.schema.withSchema(schema).createTable('queue_settings', (t) => {
        t.text('queue').primary();
        t.boolean('paused').notNullable().defaultTo(false);
        t.text('updated_by');
        t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(db.fn.now());
      });
    },
    async down(db, schema) {
      await db.schema.withSchema(schema).dropTableIfExists('queue_settings');
    },
  },
  {
    name: '004_pending_since',
    async up(db, schema) {
      // "Pending since T" means since the row last became pending (a replay puts a failed row back),
      // not since it was created: the scheduler's rebuild looks back a day and must find a row
      // replayed long after its emit. A constant default is stored once, not written into every row
      // (PostgreSQL 11+), so the column comes without rewriting a large table under its lock; only
      // pending rows, the ones a rebuild reads, then get their best-known time, created_at. Other rows
      // keep the migration's time, which matters only once a replay sets it anew.
      await db.raw(`alter table ??.ledger add column pending_since timestamptz not null default now()`, [schema]);
      await db.raw(`drop index ??.ledger_pending_by_created`, [schema]);
      await db.raw(`update ??.ledger set pending_since = created_at where status = 'pending'`, [schema]);
      await db.raw(
        `create index ledger_pending_since on ??.ledger (pending_since, id) where status = 'pending'`,
        [schema],
      );
    },
    async down(db, schema) {
      await db.raw(
        `create index ledger_pending_by_created on ??.ledger (created_at, id) where status = 'pending'`,
        [schema],
      );
      // Drops ledger_pending_since with it.
      await db.raw(`alter table ??.ledger drop column pending_since`, [schema]);
    },
  },
  {
    name: '005_queue_config',
    async up(db, schema) {
      // The job options and limits the workers last started with: what a rebuild run without the
      // app's config file (an operator's machine, after a Redis wipe) gives the jobs and queues it
      // makes, instead of defaults that may allow a third party ten times the configured rate.
      await db.schema.withSchema(schema).alterTable('queue_settings', (t) => {
        t.jsonb('config');
        t.timestamp('config_updated_at', { useTz: true });
      });
    },
    async down(db, schema) {
      await db.schema.withSchema(schema).alterTable('queue_settings', (t) => {
        t.dropColumns('config', 'config_updated_at');
      });
    },
  },
  {
    name: '006_failed_at',
    async up(db, schema) {
      // Every rebuild looks for failed rows whose jobs Redis no longer holds (lost with it, or removed
      // by retention), by when they failed: a range scan over failed rows only, which are few, instead
      // of the whole ledger. Building it reads the whole ledger once while writes wait (migrations run
      // in a transaction); on a large ledger an operator creates it beforehand, CONCURRENTLY, under
      // this name, and this step finds it there.
      await db.raw(`create index if not exists ledger_failed_at on ??.ledger (finished_at, id) where status = 'failed'`, [schema]);
    },
    async down(db, schema) {
      await db.raw('drop index ??.ledger_failed_at', [schema]);
    },
  },
];
