import type { ChalkInstance } from 'chalk';
import { formatDuration } from '../core/duration.js';
import type { QueueLimits } from '../queue/limits.js';
import type { RampStatus } from '../ops/ramp.js';
import { endsAt, limitRate, planProgress, sampleTotalRate, type RampPlan } from '../ramp/plan.js';
import { asciiChart } from './chart.js';
import { table } from './render.js';

const CHART_WIDTH = 60;

export const clock = (t: number) => new Date(t).toISOString().slice(11, 19);
/** Jobs per second for people: whole numbers as they are, fractions to three significant digits or so. */
export const formatRate = (r: number) =>
  Number.isInteger(r) ? String(r) : r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);

/** A BullMQ rate limit as jobs per second (`50/s`), the unit ramps and `--rate` speak. */
export function perSecond(rateLimit: NonNullable<QueueLimits['rateLimit']>): string {
  return `${formatRate(limitRate(rateLimit))}/s`;
}

/** `17 per 200ms (85/s), conc 4`, or `unlimited`. */
export function formatLimits(limits: QueueLimits): string {
  const parts: string[] = [];
  if (limits.rateLimit) {
    parts.push(`${limits.rateLimit.max} per ${formatDuration(limits.rateLimit.durationMs)} (${perSecond(limits.rateLimit)})`);
  }
  if (limits.concurrency) parts.push(`conc ${limits.concurrency}`);
  return parts.join(', ') || 'unlimited';
}

/** One line: the plan in words. */
export function describePlan(plan: RampPlan): string {
  const tos = [...new Set(plan.queues.map((q) => q.to))].sort((a, b) => a - b);
  const target = tos.length === 1 ? `${formatRate(tos[0])}/s` : `${formatRate(tos[0])}-${formatRate(tos.at(-1)!)}/s (each queue its own)`;
  const carried = plan.queues.filter((q) => q.from !== undefined).length;
  return [
    `${plan.curve} ${formatRate(plan.from)}/s -> ${target} per queue over ${formatDuration(plan.durationMs)}`,
    carried ? `${carried} queue(s) carried over from the ramp before` : '',
    plan.staggerMs ? `stagger ${formatDuration(plan.staggerMs)}` : '',
    plan.holdOnErrors !== null ? `holds while failures > ${Number((plan.holdOnErrors * 100).toFixed(2))}%` : '',
  ]
    .filter(Boolean)
    .join(', ');
}

/** The whole `ramp status` view: plan, per-queue table, hold reason, and the curve so far. */
export function renderRampStatus(status: RampStatus, chalk: ChalkInstance): string {
  const { plan } = status;
  if (!plan) return 'No ramp is active, and none ended in the last day.';
  const lines: string[] = [];
  const state = status.active
    ? status.holding
      ? chalk.yellow('HOLDING')
      : chalk.green('active')
    : chalk.dim(`${plan.outcome} at ${clock(plan.endedAt ?? status.now)} (no ramp is active)`);
  lines.push(`${chalk.bold(`ramp ${plan.id}`)}  ${state}  by ${plan.createdBy}`);
  lines.push(`  ${describePlan(plan)}`);
  if (status.active) {
    lines.push(
      `  started ${clock(plan.startAt)}, ${Math.round(status.progress * 100)}% done, ends ${clock(status.endsAt!)} (in ${formatDuration(status.etaMs!)}${status.holding ? ', later while it holds' : ''})`,
    );
  } else {
    lines.push(`  started ${clock(plan.startAt)}, ended ${clock(plan.endedAt ?? status.now)}`);
  }
  if (status.holding) {
    lines.push(chalk.yellow(`  holding since ${clock(status.holding.since)}: ${status.holding.reason}`));
  } else if (plan.holdOnErrors !== null && plan.lastCheck) {
    const fr = status.failureRate === null ? 'too few attempts to judge' : `${(status.failureRate * 100).toFixed(1)}%`;
    lines.push(`  failure rate ${fr} (${plan.lastCheck.failed} of ${plan.lastCheck.finished} attempts in the last ${formatDuration(plan.lastCheck.windowMs)})`);
  }
  if (status.active) {
    lines.push(
      status.applier
        ? `  applied by scheduler ${status.applier} (and by \`effects resume\` while it waits)`
        : chalk.yellow('  no scheduler seen: the ramp advances only while an `effects resume` waits for it; run `effects scheduler`'),
    );
  }
  if (plan.removed.length) lines.push(`  taken out by a pause: ${plan.removed.join(', ')}`);
  lines.push('');
  lines.push(
    table(
      ['queue', 'phase', 'plan/s', 'limit in force', 'paused', 'to/s', 'after the ramp', 'starts', 'ends'],
      status.queues.map((q) => [
        q.name,
        q.phase === 'ramping' ? chalk.green(q.phase) : q.phase,
        q.phase === 'pending' ? '-' : formatRate(q.rate),
        formatLimits(q.applied),
        q.paused ? chalk.yellow('paused') : '-',
        formatRate(q.to),
        `${formatLimits(q.after)} (${q.afterSource === 'config' ? 'config' : 'as before'})`,
        clock(q.startsAt),
        clock(q.endsAt),
      ]),
      chalk,
    ),
  );
  lines.push('');
  lines.push(renderCurve(plan, status.active ? status.now : (plan.endedAt ?? status.now)));
  if (status.active) {
    lines.push('');
    lines.push(chalk.dim('Stop it: `effects ramp cancel` keeps the limits in force now; `--restore` puts the configured ones back.'));
  }
  return lines.join('\n');
}

/** Total planned jobs per second over the plan: done so far as `#`, still to come as `.`. */
export function renderCurve(plan: RampPlan, now: number): string {
  const start = plan.startAt;
  const end = Math.max(endsAt(plan, now), now, start + 1);
  const samples = sampleTotalRate(plan, start, end, CHART_WIDTH);
  const doneColumns = Math.round(((Math.min(now, end) - start) / (end - start)) * (CHART_WIDTH - 1)) + 1;
  return [
    'jobs/s (all queues)',
    asciiChart(
      samples.map((s) => s.rate),
      { doneColumns, formatY: (v) => formatRate(v), xLabels: [clock(start), clock(end)] },
    ),
  ].join('\n');
}

/** The line a waiting `resume --ramp` prints: progress, each started queue's rate, ETA, hold. */
export function progressLine(status: RampStatus): string {
  const { plan } = status;
  if (!plan) return 'ramp ended';
  const running = status.queues.filter((q) => q.phase !== 'pending');
  const rates = running.length ? `${running.map((q) => `${q.name} ${formatRate(q.rate)}/s`).join(', ')}` : 'no queue started yet';
  const pending = status.queues.length - running.length;
  return [
    `ramp ${Math.round(planProgress(plan, status.now) * 100)}%`,
    rates + (pending ? ` (+${pending} pending)` : ''),
    `ETA ${formatDuration(status.etaMs ?? 0)}`,
    status.holding ? `HOLDING: ${status.holding.reason}` : '',
  ]
    .filter(Boolean)
    .join(' | ');
}
