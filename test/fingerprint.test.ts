import { describe, expect, it } from 'vitest';
import { FingerprintCache, errorFingerprint, errorGroupId } from '../src/ops/fingerprint.js';

describe('errorFingerprint', () => {
  it('groups messages that differ only in numbers', () => {
    expect(errorFingerprint('order 123 not found')).toBe('order <n> not found');
    expect(errorFingerprint('order 456 not found')).toBe(errorFingerprint('order 123 not found'));
    expect(errorFingerprint('timeout after 5000ms')).toBe('timeout after <n>ms');
    expect(errorFingerprint('connect ECONNREFUSED 127.0.0.1:5432')).toBe('connect ECONNREFUSED <n>:<n>');
    expect(errorFingerprint('job ledger-42 failed')).toBe('job ledger-<n> failed');
  });

  it('keeps an HTTP status: a 404 and a 503 are different failures', () => {
    expect(errorFingerprint('Request failed with status code 404')).toBe('Request failed with status code 404');
    expect(errorFingerprint('Request failed with status code 503')).not.toBe(errorFingerprint('Request failed with status code 404'));
    expect(errorFingerprint('CRM answered HTTP 429 after 1200ms')).toBe('CRM answered HTTP 429 after <n>ms');
    expect(errorFingerprint('upstream said HTTP/1.1 502 for order 7')).toBe('upstream said HTTP/<n> 502 for order <n>');
    // Other numbers after "status" are still values.
    expect(errorFingerprint('order status 42 unknown')).toBe('order status <n> unknown');
  });

  it('normalises a timestamp whole, so the hour does not split a group', () => {
    const at = (time: string) => errorFingerprint(`token expired at ${time} for order 9`);
    expect(at('2026-11-27T03:12:45.120Z')).toBe('token expired at <time> for order <n>');
    expect(at('2026-11-27T14:00:01Z')).toBe(at('2026-11-27T03:12:45.120Z'));
    expect(at('2026-11-27 14:00:01+01:00')).toBe(at('2026-11-27T03:12:45.120Z'));
  });

  it('keeps digits that are part of a word or code', () => {
    expect(errorFingerprint('invalid utf8 sequence')).toBe('invalid utf8 sequence');
    expect(errorFingerprint('E11000 duplicate key')).toBe('E11000 duplicate key');
  });

  it('normalises uuids and hex ids', () => {
    expect(errorFingerprint('customer 3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b missing')).toBe('customer <uuid> missing');
    expect(errorFingerprint('document 507f1f77bcf86cd799439011 missing')).toBe('document <hex> missing');
    expect(errorFingerprint('bad pointer 0xdeadbeef')).toBe('bad pointer <hex>');
    // A long plain number is still a number, so it groups with its shorter siblings.
    expect(errorFingerprint('order 12345678 not found')).toBe('order <n> not found');
    // An ordinary word made of hex letters is left alone.
    expect(errorFingerprint('facade decade')).toBe('facade decade');
  });

  it('normalises quoted values but not apostrophes', () => {
    expect(errorFingerprint(`mailbox "bob@example.com" unavailable`)).toBe('mailbox <str> unavailable');
    expect(errorFingerprint(`unknown column 'colour' in field list`)).toBe('unknown column <str> in field list');
    expect(errorFingerprint('template `welcome_v2` missing')).toBe('template <str> missing');
    expect(errorFingerprint(`can't reach 'crm.internal'`)).toBe(`can't reach <str>`);
  });

  it('uses the first line only, collapses whitespace and caps the length', () => {
    expect(errorFingerprint('boom\n    at f (x.js:1:2)')).toBe('boom');
    expect(errorFingerprint('  too   many\tspaces ')).toBe('too many spaces');
    expect(errorFingerprint('x'.repeat(500)).length).toBeLessThanOrEqual(201);
  });

  it('names a missing message', () => {
    expect(errorFingerprint(null)).toBe('(no error message)');
    expect(errorFingerprint('')).toBe('(no error message)');
  });
});

describe('errorGroupId', () => {
  it('is short, stable, and differs by queue', () => {
    const id = errorGroupId('notify-crm', 'timeout after <n>ms');
    expect(id).toMatch(/^[0-9a-f]{8}$/);
    expect(errorGroupId('notify-crm', 'timeout after <n>ms')).toBe(id);
    expect(errorGroupId('send-email', 'timeout after <n>ms')).not.toBe(id);
  });
});

describe('FingerprintCache', () => {
  it('gives the same answer as errorFingerprint, and stays bounded', () => {
    const cache = new FingerprintCache(3);
    for (let i = 0; i < 10; i++) expect(cache.get(`order ${i} not found`)).toBe('order <n> not found');
    expect(cache.get(null)).toBe('(no error message)');
  });
});
