import type { Knex } from 'knex';
import type { Effects } from '../../src/index.js';

/**
 * The example app's own tables: orders, and a sink where each effect records that it ran
 * (unique per effect and order, with a run counter, so duplicates are visible).
 */
export async function createAppTables(db: Knex, schema: string): Promise<void> {
  await db.raw('create schema if not exists ??', [schema]);
  await db.raw(
    `create table if not exists ??.orders (
       id bigserial primary key,
       customer text not null,
       total_cents integer not null,
       created_at timestamptz not null default now())`,
    [schema],
  );
  await db.raw(
    `create table if not exists ??.effect_runs (
       effect text not null,
       order_id text not null,
       runs integer not null default 1,
       first_run_at timestamptz not null default now(),
       primary key (effect, order_id))`,
    [schema],
  );
}

export interface OrderInput {
  customer: string;
  totalCents: number;
}

/**
 * The endpoint: one transaction writes the order and records the effects it owes. No side effect
 * runs here, so the endpoint is as fast and as reliable as one insert.
 */
export async function placeOrder(db: Knex, effects: Effects, schema: string, input: OrderInput): Promise<string> {
  return db.transaction(async (trx) => {
    const [order] = await trx
      .withSchema(schema)
      .table('orders')
      .insert({ customer: input.customer, total_cents: input.totalCents })
      .returning('id');
    const id = String(order.id);
    await effects.emit('order_placed', id, { trx });
    return id;
  });
}
