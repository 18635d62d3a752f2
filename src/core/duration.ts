import ms from 'ms';
import { UsageError } from './errors.js';

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$/;

/**
 * Parses an operator-facing duration such as `90s`, `15m`, `2h` or `3d` into milliseconds.
 * A bare number is refused: `--since 3` is more likely a mistake than three milliseconds.
 */
export function parseDuration(text: string, flag = 'duration'): number {
  const trimmed = String(text).trim();
  if (!DURATION.test(trimmed)) {
    throw new UsageError(
      `Invalid ${flag} "${text}": expected a duration like 90s, 15m, 2h or 3d`,
    );
  }
  return ms(trimmed as ms.StringValue);
}

/**
 * ISO 8601 as operators type it: a date, optionally a time (T or a space, minutes, seconds,
 * fractions) and a zone (Z, +HH:MM, +HHMM, +HH). No zone: a date alone is UTC and a date with a
 * time is local, as in JavaScript.
 */
const ISO_TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|([+-])(\d{2})(?::?(\d{2}))?)?)?$/i;

/**
 * Parses a point in time: a duration means "that long before now", anything else must be an
 * ISO-8601 timestamp. Returns epoch milliseconds.
 */
export function parseTime(text: string, flag = 'time', now = Date.now()): number {
  const trimmed = String(text).trim();
  if (DURATION.test(trimmed)) return now - parseDuration(trimmed, flag);
  const match = ISO_TIMESTAMP.exec(trimmed);
  const at = match ? isoTime(match) : undefined;
  if (at !== undefined) return at;
  throw new UsageError(
    `Invalid ${flag} "${text}": ${match ? 'no such date or time; ' : ''}expected a duration before now (90s, 15m, 2h, 3d) or an ISO-8601 timestamp (2026-11-26T09:00:00Z)`,
  );
}

/**
 * The instant a well-formed timestamp names, or undefined when its fields name none (February 31,
 * 24:00, +25:00). Date.parse would roll 2026-02-31 over to March 3 and act on the wrong window.
 */
function isoTime(match: RegExpExecArray): number | undefined {
  const [, y, mo, d, h, mi = '0', s = '0', fraction = '', zone, sign, oh = '0', om = '0'] = match;
  const fields = [y, mo, d, h ?? '0', mi, s].map(Number);
  const [year, month, day, hour, minute, second] = fields;
  const ms = Number(fraction.padEnd(3, '0').slice(0, 3));
  if (hour > 23 || minute > 59 || second > 59 || Number(oh) > 23 || Number(om) > 59) return undefined;
  // The calendar check: a day or month out of range comes back as other fields.
  const utc = new Date(Date.UTC(year, month - 1, day, hour, minute, second, ms));
  utc.setUTCFullYear(year); // Date.UTC reads years 0-99 as 1900-1999
  const back = [utc.getUTCFullYear(), utc.getUTCMonth() + 1, utc.getUTCDate(), utc.getUTCHours(), utc.getUTCMinutes(), utc.getUTCSeconds()];
  if (back.some((value, i) => value !== fields[i])) return undefined;
  if (zone === undefined && h !== undefined) {
    return new Date(year, month - 1, day, hour, minute, second, ms).getTime();
  }
  const offsetMinutes = sign ? (sign === '-' ? -1 : 1) * (Number(oh) * 60 + Number(om)) : 0;
  return utc.getTime() - offsetMinutes * 60_000;
}

/**
 * An operator's time window, checked the same way by every command that takes one: `--since` not
 * in the future, and before `--until`. Equal times leave an empty window, a mistake to report rather
 * than "nothing matched".
 */
export function assertTimeWindow(since: number | undefined, until: number | undefined, now = Date.now()): void {
  if (since !== undefined && since > now) {
    throw new UsageError(`--since is in the future (${new Date(since).toISOString()}); expected a time before now, such as 2h or an ISO timestamp.`);
  }
  if (since !== undefined && until !== undefined && since >= until) {
    throw new UsageError(
      `--since ${new Date(since).toISOString()} is not before --until ${new Date(until).toISOString()}; expected --since to be the earlier time.`,
    );
  }
}

/** Parses a rate such as `50`, `50/s` or `600/m` into jobs per second. */
export function parseRate(text: string, flag = '--rate'): number {
  const match = /^(\d+(?:\.\d+)?)(?:\/(s|m|h))?$/.exec(String(text).trim());
  const perUnit = { s: 1, m: 60, h: 3600 } as const;
  if (match) {
    const rate = Number(match[1]) / perUnit[(match[2] ?? 's') as keyof typeof perUnit];
    if (rate > 0) return rate;
  }
  throw new UsageError(`Invalid ${flag} "${text}": expected a positive rate like 50/s or 600/m`);
}

/**
 * Parses a share such as a failure rate: `10%`, `0.1` or `2.5%`, into a fraction above 0 and below 1.
 */
export function parseRatio(text: string, flag = 'ratio'): number {
  const match = /^(\d+(?:\.\d+)?)(%?)$/.exec(String(text).trim());
  if (match) {
    const ratio = match[2] ? Number(match[1]) / 100 : Number(match[1]);
    if (ratio > 0 && ratio < 1) return ratio;
  }
  throw new UsageError(`Invalid ${flag} "${text}": expected a share above 0 and below 1, like 10% or 0.1`);
}

/** Formats milliseconds for people: `1h 5m`, `42s`, `350ms`. */
export function formatDuration(millis: number): string {
  if (!Number.isFinite(millis)) return '-';
  if (millis < 1000) return `${Math.round(millis)}ms`;
  const seconds = Math.round(millis / 1000);
  const parts: string[] = [];
  const units: Array<[string, number]> = [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]];
  let rest = seconds;
  for (const [unit, size] of units) {
    const n = Math.floor(rest / size);
    if (n > 0) parts.push(`${n}${unit}`);
    rest -= n * size;
    if (parts.length === 2) break;
  }
  return parts.join(' ');
}
