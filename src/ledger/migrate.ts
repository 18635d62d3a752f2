import type { Knex } from 'knex';
import { NotMigratedError } from '../core/errors.js';
import { migrations, type Migration } from './migrations.js';

const MIGRATIONS_TABLE = 'migrations';

function source(schema: string, list: readonly Migration[]): Knex.MigrationSource<Migration> {
  return {
    getMigrations: async () => [...list],
    getMigrationName: (m) => m.name,
    getMigration: async (m) => ({ up: (db: Knex) => m.up(db, schema), down: (db: Knex) => m.down(db, schema) }),
  };
}

/**
 * knex's migrator settings for the ledger in `schema`. `list` defaults to every migration; a prefix
 * of it is the ledger an older release left, for testing an upgrade.
 */
export function migratorConfig(schema: string, list: readonly Migration[] = migrations): Knex.MigratorConfig {
  return { migrationSource: source(schema, list), schemaName: schema, tableName: MIGRATIONS_TABLE };
}

export interface MigrateResult {
  schema: string;
  applied: string[];
  /** Every migration now in force, oldest first. */
  current: string[];
}

/**
 * Creates the schema if needed and applies every pending migration. Safe to run concurrently: one
 * process at a time migrates a schema, the others wait and find nothing left to do.
 */
export async function migrate(db: Knex, schema: string): Promise<MigrateResult> {
  // knex's own lock is a row of a table it creates on first use: processes starting together on a
  // fresh schema can each insert one (then every run finds the table "already locked"), or collide
  // creating the schema. A PostgreSQL advisory lock keeps them apart: a transaction's, so that it
  // ends with the transaction (behind PgBouncer in transaction mode too), and the migrations run in
  // that same transaction, on its one connection, so a pool of one connection is enough.
  return db.transaction(async (trx) => {
    await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`effects.migrate:${schema}`]);
    await trx.raw('create schema if not exists ??', [schema]);
    const [, applied] = (await trx.migrate.latest(migratorConfig(schema))) as [number, string[]];
    const [completed] = (await trx.migrate.list(migratorConfig(schema))) as [Array<{ name: string }>, unknown];
    return { schema, applied, current: completed.map((m) => m.name) };
  });
}

/** Pending migration names; an empty list means the ledger is up to date. */
export async function pendingMigrations(db: Knex, schema: string): Promise<string[]> {
  const exists = await db.schema.withSchema(schema).hasTable(MIGRATIONS_TABLE);
  if (!exists) return migrations.map((m) => m.name);
  const done = new Set(
    (await db.withSchema(schema).select('name').from(MIGRATIONS_TABLE)).map((r: { name: string }) => r.name),
  );
  return migrations.map((m) => m.name).filter((name) => !done.has(name));
}

/** Refuses to go on against a ledger that is missing or older than this version. */
export async function assertMigrated(db: Knex, schema: string): Promise<void> {
  const pending = await pendingMigrations(db, schema);
  if (pending.length) {
    throw new NotMigratedError(
      `The ledger in schema "${schema}" is not migrated (pending: ${pending.join(', ')}).`,
      'Run `effects migrate` against this database first.',
    );
  }
}
