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
 * Parses a point in time: a duration means "that long before now", anything else must be an
 * ISO-8601 timestamp. Returns epoch milliseconds.
 */
export function parseTime(text: string, flag = 'time', now = Date.now()): number {
  const trimmed = String(text).trim();
  if (DURATION.test(trimmed)) return now - parseDuration(trimmed, flag);
  if (/^\d{4}-\d{2}-\d{2}/.test(trimmed)) {
    const at = Date.parse(trimmed);
    if (!Number.isNaN(at)) return at;
  }
  throw new UsageError(
    `Invalid ${flag} "${text}": expected a duration before now (90s, 15m, 2h, 3d) or an ISO-8601 timestamp (2026-11-26T09:00:00Z)`,
  );
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
