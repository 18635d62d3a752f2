import knexFactory, { type Knex } from 'knex';
import { afterAll, describe, expect, it } from 'vitest';
import { migrate } from '../src/ledger/migrate.js';
import { migrations } from '../src/ledger/migrations.js';
import { DATABASE_URL, namespaceFor } from './helpers.js';

/** `effects migrate` from several deploys at once, each with a pool of its own, as separate processes have. */
describe('migrate', () => {
  const schemas: string[] = [];
  const admin = knexFactory({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 2 } });

  afterAll(async () => {
    for (const schema of schemas) await admin.raw('drop schema if exists ?? cascade', [schema]);
    await admin.destroy();
  });

  it('from six processes at once on a fresh schema: each succeeds, each migration is applied once, and the ledger stays migratable', async () => {
    // Several rounds: the race this guards against (knex's lock row inserted twice) is a matter of timing.
    for (let round = 0; round < 3; round += 1) {
      const { schema } = namespaceFor(`migrate_${round}`);
      schemas.push(schema);
      // Pools of one connection too: the lock must not need one of the pool's.
      const deploys: Knex[] = Array.from({ length: 6 }, (_, i) =>
        knexFactory({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: i % 2 ? 1 : 4 } }),
      );
      try {
        const results = await Promise.all(deploys.map((db) => migrate(db, schema)));
        const applied = results.flatMap((r) => r.applied).sort();
        expect(applied).toEqual(migrations.map((m) => m.name).sort());
        for (const r of results) expect(r.current).toEqual(migrations.map((m) => m.name));
        expect(await admin.withSchema(schema).table('migrations_lock').count({ n: '*' })).toEqual([{ n: '1' }]);
        expect((await migrate(deploys[0], schema)).applied).toEqual([]);
      } finally {
        await Promise.all(deploys.map((db) => db.destroy()));
      }
    }
  });
});
