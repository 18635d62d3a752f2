import { z } from 'zod';
import { closest } from 'fastest-levenshtein';
import { ConfigError, type ConfigIssue } from '../core/errors.js';
import type { EffectsConfig } from './types.js';

const fn = z.custom<(...args: never[]) => unknown>((v) => typeof v === 'function', {
  message: 'expected a function',
});
const durationLike = z.union([z.string(), z.number().nonnegative()]);
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
    ])
    .optional(),
  concurrency: z.number().int().positive().optional(),
  globalConcurrency: z.number().int().positive().optional(),
  rateLimit: z.strictObject({ max: z.number().int().positive(), per: durationLike }).optional(),
});

const configSchema = z.strictObject({
  redis: z.string().min(1).optional(),
  database: z.string().min(1).optional(),
  prefix: z.string().min(1).optional(),
  schema: z
    .string()
    .regex(/^[a-z_][a-z0-9_]*$/i, 'expected a PostgreSQL identifier (letters, digits, underscore)')
    .optional(),
  poison: z.strictObject({ threshold: z.number().int().positive().optional() }).optional(),
  alerts: z.strictObject({ webhook: z.string().url().optional() }).optional(),
  worker: z
    .strictObject({
      shutdownTimeout: durationLike.optional(),
      lockDuration: z.number().int().positive().optional(),
      stalledInterval: z.number().int().positive().optional(),
    })
    .optional(),
  scheduler: z
    .strictObject({ every: z.string().optional(), lookback: z.string().optional() })
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
          const suggestion = known.length ? closest(key, known) : undefined;
          issues.push({
            path: path ? `${path}.${key}` : key,
            message: `unknown key${suggestion ? `; did you mean "${suggestion}"?` : ''}`,
          });
        }
      } else {
        issues.push({ path, message: issue.message });
      }
    }
  } else {
    const seen = new Map<string, number>();
    result.data.effects.forEach((effect, index) => {
      const first = seen.get(effect.name);
      if (first !== undefined) {
        issues.push({
          path: `effects.${index}.name`,
          message: `duplicate effect name "${effect.name}" (also effects.${first})`,
        });
      } else seen.set(effect.name, index);
    });
  }
  if (issues.length) throw new ConfigError(issues, source);
  return result.data as EffectsConfig;
}
