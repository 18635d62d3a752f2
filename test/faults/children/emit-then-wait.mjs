// An app process for scenario 4: on "go" (stdin) it places one order, emitting in the transaction,
// and prints "committed <id>" once the transaction has committed. The test kills it right then,
// while Redis holds its push back, so it dies between commit and push.
// Runs on the built package (dist/); configured by FAULTS_CHILD (JSON).
import readline from 'node:readline';
import knexFactory from 'knex';
import { createEffects } from '../../../dist/index.js';

const { redis, database, prefix, schema, appSchema, effects: names } = JSON.parse(process.env.FAULTS_CHILD);
const db = knexFactory({ client: 'pg', connection: database, pool: { min: 1, max: 2 } });
const effects = createEffects({
  redis,
  database,
  prefix,
  schema,
  effects: names.map((name) => ({ name, on: 'order_placed', run() {} })),
});
// Open the connections and load BullMQ's scripts now, so that on "go" the push is one write away.
await Promise.all(names.map((name) => effects.runtime.queues.get(name).waitUntilReady()));
await db.raw('select 1');
console.log('ready');

for await (const line of readline.createInterface({ input: process.stdin })) {
  if (line.trim() !== 'go') continue;
  const id = await db.transaction(async (trx) => {
    const [order] = await trx.withSchema(appSchema).table('orders').insert({ customer: 'child', total_cents: 1 }).returning('id');
    await effects.emit('order_placed', String(order.id), { trx });
    return String(order.id);
  });
  console.log(`committed ${id}`);
}
