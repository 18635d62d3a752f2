export { defineConfig, defineEffect } from './config/define.js';
export type { EffectsConfig, EffectDefinition, EffectContext, EventOf, Task, RateLimit, BackoffSetting } from './config/types.js';
export { validateConfig } from './config/schema.js';
export { resolveSettings, type Settings, type ResolvedEffect, type ConnectionFlags } from './config/settings.js';
export { loadConfigFile, findConfigFile } from './config/load.js';
export { createEffects, type Effects, type EmitOptions, type EmitResult, type EventId } from './core/effects.js';
export { Runtime } from './core/runtime.js';
export { createLogger } from './core/logger.js';
export * from './core/errors.js';
export { parseDuration, parseTime, parseRate } from './core/duration.js';
export { migrate, assertMigrated, pendingMigrations } from './ledger/migrate.js';
export { Ledger } from './ledger/ledger.js';
export type { LedgerRow, LedgerStatus } from './ledger/rows.js';
export { jobIdForRow, rowIdFromJobId } from './queue/keys.js';
export { discoverQueues } from './queue/discover.js';
export { startWorker, type WorkerHandle, type WorkerOptions } from './worker/worker.js';
export { startScheduler, type SchedulerHandle } from './scheduler/scheduler.js';
export { getStatus, type StatusReport, type QueueStatus } from './ops/status.js';
export { rebuild, type RebuildOptions, type RebuildResult } from './ops/rebuild.js';
export { restoreQueueSettings, type RestoredQueue } from './ops/restore-queues.js';
export { listOperations, getOperation, type OperationView, type ListOperationsOptions } from './ops/audit.js';
export { QueueSettings, type QueueSetting } from './ledger/queue-settings.js';
export { PoisonAlerter, type PoisonAlerterOptions, type AlerterStats } from './alerts/webhook.js';
export { poisonMessage, type PoisonAlert } from './alerts/poison-message.js';
export { TokenBucket, type TokenBucketOptions } from './core/token-bucket.js';
export { pauseQueues, resumeQueues, type PauseOptions, type PauseResult, type ResumeOptions, type ResumeResult } from './ops/pause.js';
export {
  startRamp,
  getRampStatus,
  getRampSummary,
  cancelRamp,
  type StartRampOptions,
  type StartRampResult,
  type RampStatus,
  type RampQueueStatus,
  type RampSummary,
  type CancelRampOptions,
  type CancelRampResult,
} from './ops/ramp.js';
export { limitAt, rateAt, rateWindow, buildPlan, type RampPlan, type RampCurve } from './ramp/plan.js';
export { applyRamp, type RampTick } from './ramp/apply.js';
export { startRampTicker, type RampTicker } from './ramp/ticker.js';
export { wakeWorkers } from './queue/wake.js';
export { listPoison, showPoison, type PoisonListOptions, type PoisonList, type PoisonJob, type PoisonDetail, type LedgerRowView, type ErrorGroup } from './ops/poison.js';
export { replay, type ReplayOptions, type ReplayResult } from './ops/replay.js';
export { discard, type DiscardOptions, type DiscardResult } from './ops/discard.js';
export type { JobFilter } from './ops/job-filter.js';
export type { BulkOptions, BulkPlan, BulkProgress } from './ops/bulk.js';
export { BRAKE_DEFAULTS, type BrakeOptions, type BrakeReport } from './ops/brake.js';
export { errorFingerprint, errorGroupId } from './ops/fingerprint.js';
