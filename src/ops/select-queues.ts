import type { Runtime } from '../core/runtime.js';
import { UsageError } from '../core/errors.js';
import { listQueues } from './status.js';

export interface QueueSelection {
  /** These queues, in this order. */
  queues?: string[];
  /** Every queue under the prefix (configured or found in Redis), sorted by name. */
  all?: boolean;
}

/**
 * The queues a queue control (pause, resume, ramp) acts on: exactly one of --queue or --all, and only
 * queues that exist under the prefix or in the config. Given queues keep the operator's order (a
 * ramp starts them in it), without repeats.
 */
export async function selectQueues(runtime: Runtime, selection: QueueSelection): Promise<string[]> {
  const given = [...new Set(selection.queues ?? [])];
  if (selection.all && given.length) throw new UsageError('Pass either --queue Q (repeatable) or --all, not both.');
  if (!selection.all && given.length === 0) throw new UsageError('Which queues? Expected --queue Q (repeatable) or --all.');
  const known = await listQueues(runtime);
  if (known.length === 0) {
    throw new UsageError(
      `No queues under prefix "${runtime.settings.prefix}".`,
      'Check --prefix (or EFFECTS_PREFIX), or pass --config so the configured effects count.',
    );
  }
  if (selection.all) return known;
  const unknown = given.filter((q) => !known.includes(q));
  if (unknown.length) {
    throw new UsageError(`Unknown queue(s): ${unknown.join(', ')}. Expected one of: ${known.join(', ')}.`);
  }
  return given;
}
