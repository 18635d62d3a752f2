import type { LedgerRow } from '../ledger/rows.js';
import type { Runtime } from '../core/runtime.js';
import { jobIdForRow } from './keys.js';
import { jobOptionsFrom, queueConfigOf, type QueueConfig } from './queues.js';
import type { Task } from '../config/types.js';

/** What a job is made of: the row's id (for the job id), its event and event id, its effect (the queue). */
/**
 * Longest event name or id a thin task may carry: a pointer, not a payload. `emit` refuses longer
 * ones; the worker fails a job that carries one as a poison pill.
 */
export const MAX_TASK_FIELD_LENGTH = 1000;

export type PushableRow = Pick<LedgerRow, 'id' | 'event' | 'eventId' | 'effect'>;

/**
 * The anemic scheduler: one thin job per ledger row, `{ event, id }` and nothing else, with a job
 * id derived from the row. Pushing a row twice is a no-op while BullMQ still holds its job.
 */
export async function pushRows(
  runtime: Runtime,
  rows: readonly PushableRow[],
  /** Each queue's config where the runtime's config file does not define its effect (see `queueConfigs`). */
  configs?: ReadonlyMap<string, QueueConfig>,
): Promise<number> {
  const byEffect = new Map<string, PushableRow[]>();
  for (const row of rows) {
    const list = byEffect.get(row.effect);
    if (list) list.push(row);
    else byEffect.set(row.effect, [row]);
  }
  await Promise.all(
    [...byEffect].map(([effectName, effectRows]) => {
      const config = configs?.get(effectName) ?? queueConfigOf(runtime.effectsByName.get(effectName), runtime.settings);
      return runtime.queues.get(effectName).addBulk(
        effectRows.map((row) => ({
          name: row.event,
          data: { event: row.event, id: row.eventId } satisfies Task,
          opts: jobOptionsFrom(config, jobIdForRow(row.id)),
        })),
      );
    }),
  );
  return rows.length;
}
