import { Option, type Command } from 'commander';
import { assertMigrated } from '../../ledger/migrate.js';
import { AUDITED_COMMANDS, getOperation, listOperations, type OperationView } from '../../ops/audit.js';
import { formatDuration } from '../../core/duration.js';
import type { ChalkInstance } from 'chalk';
import { CommandContext } from '../context.js';
import { positiveIntArg, timeArg } from '../parsers.js';
import { table } from '../render.js';

export function registerOps(program: Command): void {
  const ops = program
    .command('ops')
    .description('the audit trail: who replayed, discarded, rebuilt, paused, resumed or ramped what, and when')
    .addHelpText(
      'after',
      `
Examples:
  $ effects ops list --since 1d
  $ effects ops show 3f2a9c`,
    );

  ops
    .command('list')
    .description('recent operator actions, newest first')
    .option('--limit <n>', 'at most this many (default: 20)', positiveIntArg)
    .option('--since <time>', 'started since: a duration before now (2h) or an ISO timestamp', timeArg)
    .addOption(new Option('--command <name>', 'only this command').choices(AUDITED_COMMANDS))
    .addHelpText(
      'after',
      `
Examples:
  $ effects ops list
  $ effects ops list --since 1d --command replay
  $ effects ops list --json | jq '.operations[] | select(.outcome != "ok")'`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      try {
        await runtime.assertReachable({ db: true });
        await assertMigrated(runtime.db, runtime.settings.schema);
        const operations = await listOperations(runtime, { limit: opts.limit, since: opts.since, command: opts.command });
        if (ctx.json) ctx.printJson({ operations });
        else ctx.print(operations.length ? renderOperations(operations, ctx.chalk) : 'No operations recorded (with these filters).');
      } finally {
        await runtime.close();
      }
    });

  ops
    .command('show')
    .description('one operation: its filter, counts, outcome and error')
    .argument('<id>', 'the operation id, or its first 6+ characters')
    .addHelpText(
      'after',
      `
Examples:
  $ effects ops show 3f2a9c1b
  $ effects ops show 3f2a9c1b-8d4e-4f0a-9b1c-2d3e4f5a6b7c --json`,
    )
    .action(async (id: string, _opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      try {
        await runtime.assertReachable({ db: true });
        await assertMigrated(runtime.db, runtime.settings.schema);
        const operation = await getOperation(runtime, id);
        if (ctx.json) ctx.printJson(operation);
        else ctx.print(renderOperation(operation, ctx.chalk));
      } finally {
        await runtime.close();
      }
    });
}

/** The last operations as a table; `effects status` shows it too. */
export function renderOperations(operations: OperationView[], chalk: ChalkInstance): string {
  return table(
    ['started', 'command', 'actor', 'outcome', 'counts', 'took', 'reason', 'id'],
    operations.map((o) => [
      new Date(o.startedAt).toISOString().replace('T', ' ').slice(0, 19),
      o.command,
      o.actor,
      outcome(o, chalk),
      formatCounts(o.counts),
      o.finishedAt === null ? '-' : formatDuration(o.finishedAt - o.startedAt),
      o.reason ?? '',
      chalk.dim(o.id.slice(0, 8)),
    ]),
    chalk,
  );
}

function renderOperation(o: OperationView, chalk: ChalkInstance): string {
  const lines: Array<[string, string]> = [
    ['id', o.id],
    ['command', o.command],
    ['actor', o.actor],
    ['reason', o.reason ?? '-'],
    ['outcome', outcome(o, chalk)],
    ['started', new Date(o.startedAt).toISOString()],
    ['finished', o.finishedAt === null ? '-' : `${new Date(o.finishedAt).toISOString()} (${formatDuration(o.finishedAt - o.startedAt)})`],
    ['filter', Object.keys(o.filter).length ? JSON.stringify(o.filter) : '-'],
    ['counts', formatCounts(o.counts) || '-'],
  ];
  if (o.error) lines.push(['error', chalk.red(o.error)]);
  return lines.map(([k, v]) => `${chalk.bold(k.padEnd(9))}${v}`).join('\n');
}

function outcome(o: OperationView, chalk: ChalkInstance): string {
  if (o.outcome === 'ok') return chalk.green('ok');
  if (o.outcome === 'running') return chalk.yellow('running');
  return chalk.red(o.outcome);
}

const formatCounts = (counts: Record<string, number>) =>
  Object.entries(counts)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
