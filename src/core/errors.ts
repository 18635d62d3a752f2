/**
 * Every error the operator can see has a class here, and each class carries the exit code the CLI
 * uses for it. Exit codes are public API: 0 success, 1 runtime failure, 2 usage error.
 */

export const ExitCode = {
  ok: 0,
  runtime: 1,
  usage: 2,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** Base class: a message meant for a person, an exit code, and an optional hint on what to do. */
export class EffectsError extends Error {
  readonly exitCode: ExitCodeValue = ExitCode.runtime;
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bad flags, bad durations, unknown queues: the operator asked for something that cannot be. */
export class UsageError extends EffectsError {
  override readonly exitCode = ExitCode.usage;
}

/** The config file is missing keys, has unknown ones, or has values of the wrong type. */
export class ConfigError extends EffectsError {
  override readonly exitCode = ExitCode.usage;
  constructor(
    readonly issues: ConfigIssue[],
    source?: string,
  ) {
    super(
      `Invalid config${source ? ` in ${source}` : ''}:\n` +
        issues.map((i) => `  - ${i.path || '(root)'}: ${i.message}`).join('\n'),
    );
  }
}

export interface ConfigIssue {
  /** Dotted path of the offending key, e.g. `effects.2.attempts`. */
  path: string;
  message: string;
}

/** Redis or PostgreSQL could not be reached. The URL in the message never carries a password. */
export class ConnectionError extends EffectsError {}

/** The ledger tables are missing or older than this version expects. */
export class NotMigratedError extends EffectsError {}

/** A job, queue or ledger row named by the operator does not exist. */
export class NotFoundError extends EffectsError {}

/** What was thrown, as an Error: effects and drivers may throw anything. */
export function asError(thrown: unknown): Error {
  return thrown instanceof Error ? thrown : new Error(String(thrown));
}
