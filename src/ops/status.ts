import type { Runtime } from '../core/runtime.js';
import type { EffectCounts } from '../ledger/ledger.js';
import { asError, ConnectionError } from '../core/errors.js';
import { listOperations, type OperationView } from './audit.js';
import { getRampSummary, type RampSummary } from './ramp.js';
import { discoverQueues } from '../queue/discover.js';
import { redisKeys } from '../queue/keys.js';
import { countPoison } from '../queue/poison-scan.js';

export interface QueueStatus {
  name: string;
  waiting: number;
  active: number;
  delayed: number;
  failed: number;
  /** Failed or delayed jobs whose attempts reached the poison threshold. */
  poison: number;
  completed: number;
  paused: boolean;
  /** Age of the oldest waiting job in ms, or null when none waits. */
  oldestWaitingMs: number | null;
  /** Fleet-wide limits from the queue's meta hash; null when unlimited. */
  globalConcurrency: number | null;
  rateLimit: { max: number; durationMs: number } | null;
  /** False for a configured queue that Redis does not hold (no job was ever pushed, or Redis lost it). */
  exists: boolean;
}

export interface StatusReport {
  queues: QueueStatus[];
  /** Per-effect ledger counts, or null when the database is not reachable or not migrated. */
  ledger: EffectCounts[] | null;
  /** Why `ledger` is null: the server unreachable (its URL without password, and the cause), or no ledger in the schema. */
  ledgerProblem: string | null;
  /** The last operator actions (audit trail), newest first; null when the database cannot be read. */
  recentOperations: OperationView[] | null;
  /** The ramp in progress (`effects ramp status` has the details), or null when none runs. */
  ramp: RampSummary | null;
}

/** How many operations `status` shows. */
const RECENT_OPERATIONS = 5;

/** Every queue under the prefix (configured or discovered), and the ledger when it can be read. */
export async function getStatus(runtime: Runtime, options: { now?: number } = {}): Promise<StatusReport> {
  const now = options.now ?? Date.now();
  await runtime.assertReachable({ redis: true });
  const { names, inRedis } = await queuesOf(runtime);
  // A configured queue that Redis does not hold is shown empty without opening it: opening a BullMQ
  // Queue writes its meta hash, and a status (under a mistyped --prefix, say) must write nothing.
  const queues = await Promise.all(names.map((name) => (inRedis.has(name) ? queueStatus(runtime, name, now) : emptyQueue(name))));
  // The ledger is optional here: queues are worth showing without it, with the reason it is missing.
  let ledgerProblem: string | null = null;
  let dbReachable = true;
  try {
    await runtime.assertReachable({ db: true });
  } catch (error) {
    // A database setting that is no URL at all stays a usage error.
    if (!(error instanceof ConnectionError)) throw error;
    ledgerProblem = error.message;
    dbReachable = false;
  }
  const [ledger, recentOperations] = dbReachable
    ? await Promise.all([
        runtime.ledger.countByEffect().catch((error: unknown) => {
          ledgerProblem = ledgerReadProblem(runtime, error);
          return null;
        }),
        listOperations(runtime, { limit: RECENT_OPERATIONS }).catch(() => null),
      ])
    : [null, null];
  return { queues, ledger, ledgerProblem, recentOperations, ramp: await getRampSummary(runtime) };
}

/** Why the ledger could not be counted, in words: no ledger at all, or the server's own reason. */
function ledgerReadProblem(runtime: Runtime, error: unknown): string {
  const { schema } = runtime.settings;
  // undefined_table: never migrated (or another --schema was meant).
  if ((error as { code?: string }).code === '42P01') return `no ledger in schema "${schema}": run \`effects migrate\`, or check --schema`;
  // knex puts the statement before the server's message ("select ... - reason"): the reason is what
  // helps, and this statement has no " - " of its own.
  const text = asError(error).message;
  const message = text.startsWith('select ') && text.includes(' - ') ? text.slice(text.indexOf(' - ') + 3) : text;
  return `cannot read the ledger in schema "${schema}" (${runtime.scrubSecrets(message)}); run \`effects migrate\` if it was never set up`;
}

/** Configured effects plus every BullMQ queue found under the prefix, sorted. */
export async function listQueues(runtime: Runtime): Promise<string[]> {
  return (await queuesOf(runtime)).names;
}

/** `listQueues`, and which of them Redis holds (a configured queue may not exist yet). */
async function queuesOf(runtime: Runtime): Promise<{ names: string[]; inRedis: Set<string> }> {
  const inRedis = new Set(await discoverQueues(runtime.redis, runtime.settings.prefix));
  return { names: [...new Set([...runtime.effectsByName.keys(), ...inRedis])].sort(), inRedis };
}

function emptyQueue(name: string): QueueStatus {
  return {
    name,
    waiting: 0,
    active: 0,
    delayed: 0,
    failed: 0,
    poison: 0,
    completed: 0,
    paused: false,
    oldestWaitingMs: null,
    globalConcurrency: null,
    rateLimit: null,
    exists: false,
  };
}

async function queueStatus(runtime: Runtime, name: string, now: number): Promise<QueueStatus> {
  const queue = runtime.queues.get(name);
  const keys = redisKeys(runtime.settings.prefix);
  const [counts, paused, meta, oldestId] = await Promise.all([
    queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'failed', 'completed'),
    queue.isPaused(),
    runtime.redis.hmget(keys.queue(name, 'meta'), 'concurrency', 'max', 'duration'),
    runtime.redis.lindex(keys.queue(name, 'wait'), -1),
  ]);
  const oldestTimestamp = oldestId ? await runtime.redis.hget(keys.job(name, oldestId), 'timestamp') : null;
  const [concurrency, max, duration] = meta;
  return {
    name,
    waiting: (counts.waiting ?? 0) + (counts.prioritized ?? 0),
    active: counts.active ?? 0,
    delayed: counts.delayed ?? 0,
    failed: counts.failed ?? 0,
    poison: await countPoison(runtime.redis, runtime.settings.prefix, name, runtime.settings.poisonThreshold),
    completed: counts.completed ?? 0,
    paused,
    oldestWaitingMs: oldestTimestamp ? Math.max(0, now - Number(oldestTimestamp)) : null,
    globalConcurrency: concurrency ? Number(concurrency) : null,
    rateLimit: max && duration ? { max: Number(max), durationMs: Number(duration) } : null,
    exists: true,
  };
}
