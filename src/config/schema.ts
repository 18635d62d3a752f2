import { z } from 'zod';
import { closest, distance } from 'fastest-levenshtein';
import { parseDuration } from '../core/duration.js';
import { ConfigError, type ConfigIssue } from '../core/errors.js';
import type { EffectsConfig } from './types.js';

const fn = z.custom<(...args: never[]) => unknown>((v) => typeof v === 'function', {
  message: 'expected a function',
});
/** Checked here with the one duration parser, so a bad duration is reported with every other error. */
const durationText = z.string().refine(
  (text) => {
    try {
      parseDuration(text);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'expected a duration like 90s, 15m, 2h or 3d' },
);
const durationLike = z.union([durationText, z.number().nonnegative()], {
  error: 'expected a duration like 90s, 15m, 2h or 3d, or milliseconds',
});
const queueName = z
  .string()
  .min(1)
  .refine((s) => !s.includes(':'), 'may not contain ":" (BullMQ uses it to build keys)')
  .refine((s) => !s.startsWith('__effects'), 'names starting with "__effects" are reserved');

const effectSchema = z.strictObject({
  name: queueName,
  on: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
  run: fn,
  isNeeded: fn.optional(),
  attempts: z.number().int().positive().optional(),
  backoff: z
    .union([
      z.enum(['exponential+jitter', 'exponential', 'fixed']),
      z.strictObject({
        type: z.enum(['exponential', 'fixed']),
        delay: z.number().int().nonnegative().optional(),
        jitter: z.number().min(0).max(1).optional(),
      }),
    ], {
      error:
        "expected 'exponential+jitter', 'exponential', 'fixed', or { type: 'exponential' | 'fixed', delay?: ms (a whole number, 0 or more), jitter?: 0 to 1 }",
    })
    .optional(),
  concurrency: z.number().int().positive().optional(),
  globalConcurrency: z.number().int().positive().optional(),
  rateLimit: z.strictObject({ max: z.number().int().positive(), per: durationLike }).optional(),
});

/**
 * Connection settings written as `process.env.X` in a config file are '' where X is set empty:
 * that means "not set here", not an error.
 */
const configSchema = z.strictObject({
  redis: z.string().optional(),
  redisCluster: z.boolean().optional(),
  database: z.string().optional(),
  prefix: z.string().min(1).optional(),
  schema: z
    .string()
    .regex(/^[a-z_][a-z0-9_]*$/i, 'expected a PostgreSQL identifier (letters, digits, underscore)')
    .optional(),
  poison: z.strictObject({ threshold: z.number().int().positive().optional() }).optional(),
  alerts: z.strictObject({ webhook: z.union([z.literal(''), z.string().url()]).optional() }).optional(),
  worker: z
    .strictObject({
      shutdownTimeout: durationLike.optional(),
      lockDuration: z.number().int().positive().optional(),
      stalledInterval: z.number().int().positive().optional(),
      startupJitter: durationLike.optional(),
      preparedStatements: z.boolean().optional(),
    })
    .optional(),
  scheduler: z
    .strictObject({ every: durationText.optional(), lookback: durationText.optional() })
    .optional(),
  retention: z
    .strictObject({ completedAge: durationLike.optional(), failedAge: durationLike.optional() })
    .optional(),
  effects: z.array(effectSchema),
});

/** The keys each object accepts, for "did you mean" on unknown keys. */
function knownKeys(path: PropertyKey[]): string[] {
  let shape: z.ZodType = configSchema;
  for (const segment of path) {
    if (shape instanceof z.ZodOptional) shape = shape.unwrap() as z.ZodType;
    if (shape instanceof z.ZodArray && typeof segment === 'number') shape = shape.element as z.ZodType;
    else if (shape instanceof z.ZodObject) shape = (shape.shape as Record<string, z.ZodType>)[String(segment)];
    if (!shape) return [];
  }
  if (shape instanceof z.ZodOptional) shape = shape.unwrap() as z.ZodType;
  return shape instanceof z.ZodObject ? Object.keys(shape.shape) : [];
}

/**
 * Checks a config object and returns it typed, or throws one ConfigError listing every problem,
 * each with the path of the bad key and, for unknown keys, the closest known one.
 */
export function validateConfig(input: unknown, source?: string): EffectsConfig {
  const result = configSchema.safeParse(input);
  const issues: ConfigIssue[] = [];
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = issue.path.map(String).join('.');
      if (issue.code === 'unrecognized_keys') {
        const known = knownKeys(issue.path);
        for (const key of issue.keys) {
          const suggestion = suggest(key, known);
          issues.push({
            path: path ? `${path}.${key}` : key,
            message: `unknown key${suggestion ? `; did you mean "${suggestion}"?` : ''}`,
          });
        }
      } else if (issue.path.length === 0) {
        issues.push({ path, message: 'expected an object: export default defineConfig({ effects: [...] })' });
      } else {
        issues.push({ path, message: issue.message });
      }
    }
  }
  // Checked on the raw input, not only after a clean parse: every error at once includes duplicates.
  issues.push(...duplicateNames(input));
  if (issues.length || !result.success) throw new ConfigError(issues, source);
  return result.data as EffectsConfig;
}

/** The closest known key, when it is close enough to be a typo rather than a different word. */
function suggest(key: string, known: string[]): string | undefined {
  if (known.length === 0) return undefined;
  const candidate = closest(key, known);
  return distance(key, candidate) <= Math.max(2, Math.floor(candidate.length / 3)) ? candidate : undefined;
}

function duplicateNames(input: unknown): ConfigIssue[] {
  const effects = (input as { effects?: unknown } | null)?.effects;
  if (!Array.isArray(effects)) return [];
  const issues: ConfigIssue[] = [];
  const seen = new Map<string, number>();
  effects.forEach((effect, index) => {
    const name = (effect as { name?: unknown } | null)?.name;
    if (typeof name !== 'string') return;
    const first = seen.get(name);
    if (first !== undefined) {
      issues.push({ path: `effects.${index}.name`, message: `duplicate effect name "${name}" (also effects.${first})` });
    } else seen.set(name, index);
  });
  return issues;
}
