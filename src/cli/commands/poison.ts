import type { Command } from 'commander';
import { listPoison, showPoison, type PoisonDetail, type PoisonList } from '../../ops/poison.js';
import { CommandContext } from '../context.js';
import { addJobFilterOptions, jobFilterFrom } from '../job-filter-options.js';
import { positiveIntArg } from '../parsers.js';
import { age, table } from '../render.js';

export function registerPoison(program: Command): void {
  const poison = program
    .command('poison')
    .description('poison pills: jobs whose attempts reached the threshold, failed or waiting to retry')
    .addHelpText(
      'after',
      `
Examples:
  $ effects poison list --by-error
  $ effects poison show notify-crm ledger-4812`,
    );

  addJobFilterOptions(
    poison
      .command('list')
      .description('list poison pills on every BullMQ queue under the prefix, newest failure first'),
  )
    .option('--threshold <n>', 'attempts that make a poison pill (default: poison.threshold of the config, else 5)', positiveIntArg)
    .option('--limit <n>', 'jobs to show; the total counts every match (default: 100)', positiveIntArg)
    .option('--by-error', 'group by queue and error fingerprint, with count, first and last seen')
    .addHelpText(
      'after',
      `
Works on any BullMQ queue under --prefix, with no config file. A job counts once its attempts
reach the threshold, whether it failed for good or waits in the delayed set for another retry.
--min-attempts lists jobs with fewer attempts too (e.g. --min-attempts 1: every failure).
Times are when the job last failed (for a job waiting to retry: when its last attempt started).

Examples:
  $ effects poison list
  $ effects poison list --by-error --since 2h
  $ effects poison list --queue notify-crm --grep 'ECONNRESET|timeout' --limit 20
  $ effects poison list --prefix bull --threshold 3 --json | jq '.jobs[].id'`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      try {
        const list = await listPoison(runtime, {
          ...jobFilterFrom(opts),
          threshold: opts.threshold,
          limit: opts.limit,
          byError: Boolean(opts.byError),
        });
        if (ctx.json) ctx.printJson(list);
        else ctx.print(renderList(list, ctx, Boolean(opts.byError)));
      } finally {
        await runtime.close();
      }
    });

  poison
    .command('show')
    .description('everything about one job: data, attempts, every recorded error and stack, timestamps, ledger row')
    .argument('<queue>', 'the queue (effect) name')
    .argument('<job-id>', 'the BullMQ job id')
    .option('--threshold <n>', 'attempts that make a poison pill (default: poison.threshold of the config, else 5)', positiveIntArg)
    .addHelpText(
      'after',
      `
Exit codes: 1 when the job does not exist, 2 when the queue is unknown (the known ones are listed).

Examples:
  $ effects poison show notify-crm ledger-4812
  $ effects poison show notify-crm ledger-4812 --json | jq '.errors[-1].stack'`,
    )
    .action(async (queue: string, jobId: string, opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      try {
        const detail = await showPoison(runtime, queue, jobId, { threshold: opts.threshold });
        if (ctx.json) ctx.printJson(detail);
        else ctx.print(renderDetail(detail, ctx));
      } finally {
        await runtime.close();
      }
    });
}

const clip = (text: string | null, max: number) =>
  !text ? '-' : text.length > max ? `${text.slice(0, max - 1)}…` : text.split('\n', 1)[0];

const ago = (at: number | null, now = Date.now()) => (at === null ? '-' : `${age(Math.max(0, now - at))} ago`);

function renderList(list: PoisonList, ctx: CommandContext, byError: boolean): string {
  const { chalk } = ctx;
  if (list.queues.length === 0) {
    return `No queues under prefix "${ctx.settings.prefix}". Check --prefix (BullMQ's own default is "bull").`;
  }
  if (list.total === 0) {
    const none = chalk.green(`No poison pills (jobs with ${list.threshold}+ attempts) in ${list.queues.length} queue(s).`);
    if (!list.failedBelowThreshold) return none;
    return `${none}\n${chalk.yellow(
      `${list.failedBelowThreshold} job(s) failed for good with fewer attempts (an UnrecoverableError, or \`attempts\` below the threshold); an effects worker treats them as poison pills and alerts on them. \`effects poison list --min-attempts 1\` lists them.`,
    )}`;
  }
  const lines = [
    `${chalk.red.bold(String(list.total))} poison pill${list.total === 1 ? '' : 's'} (${list.threshold}+ attempts), ${list.queues.length} queue(s) scanned`,
    '',
  ];
  if (byError && list.groups) {
    lines.push(
      table(
        ['group', 'queue', 'count', 'first seen', 'last seen', 'error', 'sample ids'],
        list.groups.map((g) => [
          g.id,
          g.queue,
          g.count,
          ago(g.firstSeen),
          ago(g.lastSeen),
          clip(g.error, 70),
          g.sampleIds.slice(-3).join(', '),
        ]),
        chalk,
      ),
      '',
      chalk.dim('Replay or discard one group: effects replay --error-group <group> --dry-run'),
    );
    return lines.join('\n');
  }
  lines.push(
    table(
      ['queue', 'id', 'name', 'attempts', 'state', 'replays', 'last failed', 'error'],
      list.jobs.map((j) => [
        j.queue,
        j.id,
        j.name,
        j.attemptsMade,
        j.state,
        j.replayCount ? chalk.yellow(String(j.replayCount)) : chalk.dim('0'),
        ago(j.lastFailedAt),
        clip(j.failedReason, 60),
      ]),
      chalk,
    ),
  );
  if (list.jobs.length < list.total) lines.push(chalk.dim(`showing the newest ${list.jobs.length} of ${list.total}; --limit N for more`));
  const again = list.jobs.filter((j) => j.replayCount > 1).length;
  if (again) {
    lines.push(chalk.yellow(`${again} of them replayed more than once and failed again: look at the cause before replaying them again`));
  }
  lines.push(chalk.dim('Details: effects poison show <queue> <id>. Groups: --by-error.'));
  return lines.join('\n');
}

function renderDetail(d: PoisonDetail, ctx: CommandContext): string {
  const { chalk } = ctx;
  const time = (at: number | null) => (at === null ? '-' : `${new Date(at).toISOString()} (${ago(at)})`);
  const lines = [
    `${chalk.bold(`${d.queue} / ${d.id}`)}  ${d.poison ? chalk.red('poison pill') : chalk.dim(`not a poison pill (threshold ${d.threshold})`)}`,
    `state       ${d.state}${d.retryAt ? ` (next attempt ${new Date(d.retryAt).toISOString()})` : ''}`,
    `name        ${d.name}`,
    `data        ${JSON.stringify(d.data)}`,
    `attempts    ${d.attemptsMade} made of ${d.maxAttempts} allowed (${d.attemptsStarted} started)`,
    `replayed    ${d.replayCount} time${d.replayCount === 1 ? '' : 's'}${d.replayCount > 1 ? chalk.yellow('  (replayed again and again: look at the cause)') : ''}`,
    `created     ${time(d.timestamp)}`,
    `processed   ${time(d.processedOn)}`,
    `finished    ${time(d.finishedOn)}`,
    `error       ${d.failedReason ?? '-'}`,
    '',
  ];
  if (d.ledger) {
    const l = d.ledger;
    lines.push(
      chalk.bold('ledger row'),
      `  id ${l.id}  effect ${l.effect}  event ${l.event} ${l.eventId}  status ${l.status}  attempts ${l.attempts}  replays ${l.replayCount}`,
      `  created ${new Date(l.createdAt).toISOString()}  updated ${new Date(l.updatedAt).toISOString()}${l.lastError ? `\n  last error ${l.lastError}` : ''}`,
      '',
    );
  } else {
    lines.push(chalk.dim(`ledger row: none (${d.ledgerNote})`), '');
  }
  lines.push(chalk.bold(`recorded errors (${d.errors.length}, oldest first)`));
  // Retries of one bug repeat one stack: print each run of identical stacks once.
  for (let i = 0; i < d.errors.length; ) {
    let j = i;
    while (j + 1 < d.errors.length && d.errors[j + 1].stack === d.errors[i].stack) j += 1;
    const label = j > i ? `#${i + 1}-#${j + 1}` : `#${i + 1}`;
    lines.push(`${chalk.dim(label)} ${d.errors[i].stack.split('\n').join('\n    ')}`);
    i = j + 1;
  }
  if (d.logs.length) lines.push('', chalk.bold('job log'), ...d.logs.map((l) => `  ${l}`));
  return lines.join('\n');
}
