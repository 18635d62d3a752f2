import type { Command } from 'commander';
import type { Runtime } from '../../core/runtime.js';
import type { RampSummary } from '../../ops/ramp.js';
import { getStatus, type StatusReport } from '../../ops/status.js';
import { CommandContext } from '../context.js';
import { age, count, table } from '../render.js';
import { durationArg } from '../parsers.js';
import { renderOperations } from './ops.js';
import { formatRate, perSecond } from '../ramp-view.js';
import { formatDuration } from '../../core/duration.js';
import { ConnectionError, UsageError } from '../../core/errors.js';
import { sleep } from '../../core/sleep.js';

/** The shortest --watch interval: every refresh scans for queues and reads each one. */
const MIN_WATCH_MS = 1000;

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('one row per queue: depths, poison pills, limits, oldest waiting job; ledger counts')
    .option('--watch [interval]', 'refresh until Ctrl-C (default every 2s); with --json, NDJSON')
    .addHelpText(
      'after',
      `
With --watch --json, each refresh prints one compact JSON object per line (NDJSON), so line
readers and \`jq -c\` can follow it.

Examples:
  $ effects status
  $ effects status --json | jq '.queues[] | select(.poison > 0)'
  $ effects status --watch 5s
  $ effects status --watch 10s --json | jq -c '{poison: [.queues[].poison] | add}'`,
    )
    .action(async (opts, command: Command) => {
      const ctx = await CommandContext.from(command);
      const runtime = ctx.runtime();
      try {
        if (opts.watch === undefined) {
          const report = await getStatus(runtime);
          ctx.json ? ctx.printJson(toJson(report)) : ctx.print(render(report, ctx));
          return;
        }
        const everyMs = opts.watch === true ? 2000 : durationArg(opts.watch);
        if (everyMs < MIN_WATCH_MS) throw new UsageError(`--watch ${opts.watch} is too often: every 1s at the most, each refresh reads every queue.`);
        await watchStatus(ctx, runtime, everyMs);
      } finally {
        await runtime.close();
      }
    });
}

/**
 * Refreshes every `everyMs` until Ctrl-C, which ends the wait at once. A dashboard must outlive a
 * Redis blip: after a first refresh, an unreachable server is a warning (once per distinct problem)
 * and the next refresh tries again; unreachable from the start, it is an error like any command's.
 */
async function watchStatus(ctx: CommandContext, runtime: Runtime, everyMs: number): Promise<void> {
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.once('SIGINT', onSigint);
  let lastProblem: string | undefined;
  let shown = false;
  try {
    while (!stop.signal.aborted) {
      try {
        const report = await getStatus(runtime);
        shown = true;
        lastProblem = undefined;
        if (ctx.json) ctx.printJsonLine(toJson(report));
        else ctx.print(`${ctx.isTTY ? '\x1b[2J\x1b[H' : ''}${new Date().toISOString()}\n${render(report, ctx)}`);
      } catch (error) {
        if (!(error instanceof ConnectionError) || !shown) throw error;
        if (error.message !== lastProblem) process.stderr.write(`warning: ${error.message.replace(/\.$/, '')}; retrying every ${formatDuration(everyMs)}\n`);
        lastProblem = error.message;
      }
      await sleep(everyMs, stop.signal);
    }
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** The stable `status --json` shape of DESIGN.md, plus limits. */
function toJson(report: StatusReport) {
  return report;
}

function render(report: StatusReport, ctx: CommandContext): string {
  const { chalk } = ctx;
  const operations = report.recentOperations?.length
    ? `${chalk.bold('recent operations')}\n${renderOperations(report.recentOperations, chalk)}`
    : '';
  const ramp = report.ramp ? renderRamp(report.ramp, chalk) : '';
  if (report.queues.length === 0) {
    // Pending rows with no queue at all: a Redis that lost its data, more likely than a wrong prefix.
    const lostJobs = lostJobsHint(report, chalk);
    const none = lostJobs || `No queues under prefix "${ctx.settings.prefix}". Check --prefix, or start a worker.`;
    return [none, report.ledger ? renderLedger(report, chalk) : '', operations].filter(Boolean).join('\n\n');
  }
  const queues = table(
    ['queue', 'waiting', 'active', 'delayed', 'failed', 'poison', 'completed', 'paused', 'limits', 'oldest waiting'],
    report.queues.map((q) => [
      q.name,
      q.waiting,
      q.active,
      q.delayed,
      count(q.failed, chalk),
      count(q.poison, chalk, 'red'),
      q.completed,
      q.paused ? chalk.yellow('paused') : '-',
      [
        q.globalConcurrency ? `conc ${q.globalConcurrency}` : '',
        q.rateLimit ? perSecond(q.rateLimit) : '',
      ]
        .filter(Boolean)
        .join(', ') || '-',
      age(q.oldestWaitingMs),
    ]),
    chalk,
  );
  const ledger = report.ledger ? renderLedger(report, chalk) : chalk.dim(`ledger: ${report.ledgerProblem ?? 'not available'}`);
  // Pending rows with no job say more than missing queues (a wiped Redis looks like a wrong prefix).
  const lostJobs = lostJobsHint(report, chalk);
  const noneInRedis = report.queues.every((q) => !q.exists)
    ? chalk.yellow(
        `None of these queues exists in Redis under prefix "${ctx.settings.prefix}": check --prefix (a new deployment's queues appear with their first job).`,
      )
    : '';
  return [queues, ramp, ledger, lostJobs || noneInRedis, operations].filter(Boolean).join('\n\n');
}

function renderLedger(report: StatusReport, chalk: CommandContext['chalk']): string {
  return table(
    ['effect', 'pending', 'done', 'failed', 'discarded'],
    (report.ledger ?? []).map((l) => [l.effect, l.pending, l.done, count(l.failed, chalk, 'red'), l.discarded]),
    chalk,
  );
}

/**
 * Effects whose pending rows have no job to run them in their queue: what a Redis that lost its data
 * looks like (or a worker that died before its done-marks landed, or a mistyped prefix). Said here
 * because the queue table alone shows only zeros.
 */
function lostJobsHint(report: StatusReport, chalk: CommandContext['chalk']): string {
  const queued = new Map(report.queues.map((q) => [q.name, q.waiting + q.active + q.delayed]));
  const stranded = (report.ledger ?? []).filter((l) => l.pending > 0 && !queued.get(l.effect));
  if (stranded.length === 0) return '';
  const pending = stranded.reduce((sum, l) => sum + l.pending, 0);
  return chalk.yellow(
    `${pending} pending ledger row(s) of ${stranded.map((l) => l.effect).join(', ')} have no waiting, active or delayed job in their queue. ` +
      '`effects rebuild --since <when it went wrong>` queues what Redis lost and settles rows whose jobs completed; if nothing was lost, check --prefix.',
  );
}

function renderRamp(ramp: RampSummary, chalk: CommandContext['chalk']): string {
  const rates = ramp.queues.map((q) => `${q.name} ${formatRate(q.rate)}/${formatRate(q.to)} per s`).join(', ');
  const state = ramp.holding ? chalk.yellow(`holding: ${ramp.holding.reason}`) : `ends in ${formatDuration(ramp.etaMs)}`;
  return `${chalk.bold('ramp')} ${Math.round(ramp.progress * 100)}%, ${state} (${rates}); details: effects ramp status`;
}

