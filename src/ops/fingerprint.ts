import { createHash } from 'node:crypto';

/**
 * Error fingerprints: the shape of an error message with its variable parts replaced, so that
 * "order 123 not found" and "order 456 not found" fall into one group. The one place this is done;
 * `poison list --by-error`, the replay plan and the replay brake all use it.
 */

/** Longest fingerprint kept: long messages rarely differ usefully past this point. */
const MAX_LENGTH = 200;

/**
 * An HTTP status right after "status", "status code" or "HTTP": kept, because a 404 and a 503 are
 * different failures (one permanent, one passing) that a replay or a discard by group must not mix.
 */
const HTTP_STATUS_BEFORE = /(?:status(?: code)?|HTTP(?:\/[\d.]+)?)[ :=]\s?$/i;
const keepHttpStatus = (match: string, offset: number, text: string) =>
  /^[1-5]\d\d$/.test(match) && HTTP_STATUS_BEFORE.test(text.slice(Math.max(0, offset - 20), offset)) ? match : '<n>';

// Order matters: quoted values first (their contents vanish whole), then ids, then bare numbers.
const RULES: Array<[RegExp, string | ((match: string, offset: number, text: string) => string)]> = [
  // A quote that opens a value is not preceded by a letter: the apostrophe in "can't" is not one.
  [/(?<![\p{L}\p{N}])"[^"\n]*"/gu, '<str>'],
  [/(?<![\p{L}\p{N}])'[^'\n]*'/gu, '<str>'],
  [/`[^`\n]*`/g, '<str>'],
  // A timestamp whole: its hour is glued to the "T", where the number rule below would keep it.
  [/\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?/g, '<time>'],
  [/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, '<uuid>'],
  [/\b0x[0-9a-f]+\b/gi, '<hex>'],
  // Hex ids (object ids, hashes, trace ids): runs of 8+ hex digits with both a letter and a digit,
  // so that a long plain number stays a number and groups with its shorter siblings.
  [/\b(?=[0-9a-f]*[a-f])(?=[a-f]*\d)[0-9a-f]{8,}\b/gi, '<hex>'],
  // Numbers not glued to a preceding letter or digit: "order 42", "5000ms", "127.0.0.1:5432", not "utf8" or "E11000".
  [/(?<![\p{L}\p{N}_.])-?\d+(?:\.\d+)*/gu, keepHttpStatus],
  [/\s+/g, ' '],
];

/** The fingerprint of an error message: its first line with numbers, ids and quoted values normalised. */
export function errorFingerprint(message: string | null | undefined): string {
  if (!message) return '(no error message)';
  const firstLine = message.split('\n', 1)[0];
  let text = firstLine;
  for (const [pattern, replacement] of RULES) {
    // Two calls, one per overload of String.replace (TypeScript picks one by the argument's type).
    text = typeof replacement === 'string' ? text.replace(pattern, replacement) : text.replace(pattern, replacement);
  }
  text = text.trim();
  return (text.length > MAX_LENGTH ? `${text.slice(0, MAX_LENGTH)}…` : text) || '(no error message)';
}

/**
 * A short, stable id for an error group (a fingerprint within one queue), to scope a replay or a
 * discard to it: `effects replay --error-group 3fa9c2d1`.
 */
export function errorGroupId(queue: string, fingerprint: string): string {
  return createHash('sha1').update(`${queue}\0${fingerprint}`).digest('hex').slice(0, 8);
}

/**
 * Fingerprints many messages quickly: in an incident most failures share a handful of distinct
 * messages, so each distinct message is normalised once. Bounded, so memory stays flat.
 */
export class FingerprintCache {
  private readonly cache = new Map<string, string>();

  constructor(private readonly maxEntries = 10_000) {}

  get(message: string | null | undefined): string {
    const key = message ?? '';
    let fingerprint = this.cache.get(key);
    if (fingerprint === undefined) {
      fingerprint = errorFingerprint(message);
      if (this.cache.size >= this.maxEntries) this.cache.clear();
      this.cache.set(key, fingerprint);
    }
    return fingerprint;
  }
}
