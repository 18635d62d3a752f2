import { describe, expect, it } from 'vitest';
import { parseTime } from '../src/core/duration.js';
import { UsageError } from '../src/core/errors.js';

describe('parseTime', () => {
  const now = Date.UTC(2026, 5, 15, 12, 0, 0);

  it('takes a duration as that long before now', () => {
    expect(parseTime('2h', '--since', now)).toBe(now - 2 * 3_600_000);
  });

  it('takes ISO-8601 timestamps with Z, an offset, or none (date only: UTC; date and time: local)', () => {
    expect(parseTime('2026-11-26T09:00:00Z')).toBe(Date.UTC(2026, 10, 26, 9));
    expect(parseTime('2026-11-26t09:00z')).toBe(Date.UTC(2026, 10, 26, 9));
    expect(parseTime('2026-11-26T09:00:00.250Z')).toBe(Date.UTC(2026, 10, 26, 9, 0, 0, 250));
    expect(parseTime('2026-11-26T09:00:00.123456Z')).toBe(Date.UTC(2026, 10, 26, 9, 0, 0, 123));
    expect(parseTime('2026-11-26T10:30:00+01:30')).toBe(Date.UTC(2026, 10, 26, 9));
    expect(parseTime('2026-11-26T05:00-0400')).toBe(Date.UTC(2026, 10, 26, 9));
    expect(parseTime('2026-11-26 09:00:00Z')).toBe(Date.UTC(2026, 10, 26, 9));
    expect(parseTime('2026-11-26')).toBe(Date.UTC(2026, 10, 26));
    expect(parseTime('2026-11-26T09:00')).toBe(new Date(2026, 10, 26, 9).getTime());
    expect(parseTime('2024-02-29T23:59:59Z')).toBe(Date.UTC(2024, 1, 29, 23, 59, 59));
  });

  it('refuses dates and times that do not exist, saying what was expected', () => {
    for (const text of [
      '2026-02-31',
      '2025-02-29',
      '2026-04-31T10:00:00Z',
      '2026-13-01',
      '2026-00-10',
      '2026-01-00',
      '2026-01-01T24:00:00Z',
      '2026-01-01T10:60Z',
      '2026-01-01T10:00:60Z',
      '2026-01-01T10:00:00+24:00',
      '2026-01-01T10:00:00+01:60',
    ]) {
      expect(() => parseTime(text, '--since')).toThrow(UsageError);
      expect(() => parseTime(text, '--since')).toThrow(`Invalid --since "${text}": no such date or time`);
    }
  });

  it('refuses what is not ISO 8601, though Date.parse takes it', () => {
    for (const text of ['2026-1-5', '2026-01-01T10', '2026-01-01T10:00:00 GMT', '2026-01-01Tuesday', '2026-01-01T10:00:00+1', 'yesterday']) {
      expect(() => parseTime(text, '--since')).toThrow(
        'expected a duration before now (90s, 15m, 2h, 3d) or an ISO-8601 timestamp (2026-11-26T09:00:00Z)',
      );
    }
  });
});
