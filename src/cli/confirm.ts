import readline from 'node:readline/promises';
import { EffectsError, UsageError } from '../core/errors.js';

/** Bulk commands go ahead without asking up to this many jobs. */
export const CONFIRM_ABOVE = 100;

export interface ConfirmBulk {
  /** How many jobs the command would touch. */
  count: number;
  /** What it would do to them, for the question: "enqueue", "replay", "discard". */
  verb: string;
  /** `--yes` was given. */
  yes: boolean;
  /** Worth knowing before answering, shown in brackets after the count. */
  note?: string;
}

/**
 * The bulk-command gate: above CONFIRM_ABOVE jobs, ask on a terminal, and without one require
 * `--yes` (exit 2 saying so). Declining throws (exit 1): nothing was done.
 */
export async function confirmBulk({ count, verb, yes, note }: ConfirmBulk): Promise<void> {
  if (yes || count <= CONFIRM_ABOVE) return;
  const interactive = Boolean(process.stdin.isTTY && process.stderr.isTTY);
  if (!interactive) {
    throw new UsageError(
      `This would ${verb} ${count} jobs (more than ${CONFIRM_ABOVE}) and there is no terminal to confirm on.`,
      'Pass --yes to go ahead, or --dry-run to see what would happen.',
    );
  }
  // The question goes to stderr: stdout stays clean for --json.
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  // Ctrl-C at the question is a "no", not a hang.
  const cancel = new AbortController();
  rl.on('SIGINT', () => cancel.abort());
  let answer = '';
  try {
    const aside = note ? ` (${note})` : '';
    answer = await rl.question(`${verb[0].toUpperCase()}${verb.slice(1)} ${count} jobs${aside}? [y/N] `, { signal: cancel.signal });
  } catch {
    process.stderr.write('\n');
  } finally {
    rl.close();
  }
  if (!/^y(es)?$/i.test(answer.trim())) throw new EffectsError('Not confirmed: nothing was done.');
}
