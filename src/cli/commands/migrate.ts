import type { Command } from 'commander';
import { migrate } from '../../ledger/migrate.js';
import { CommandContext } from '../context.js';

export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('create or upgrade the ledger tables')
    .addHelpText(
      'after',
      `
Examples:
  $ effects migrate
  $ effects migrate --db postgres://app@db.internal:5432/app --schema effects`,
    )
    .action(async (_opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      try {
        await runtime.assertReachable({ db: true });
        const result = await migrate(runtime.db, ctx.settings.schema);
        if (ctx.json) ctx.printJson(result);
        else if (result.applied.length === 0) ctx.print(`Ledger in schema "${result.schema}" is up to date.`);
        else ctx.print(`Applied to schema "${result.schema}": ${result.applied.join(', ')}`);
      } finally {
        await runtime.close();
      }
    });
}
