/**
 * Ledger writes that trail the Redis work of a bulk action: a batch's ledger update runs while the
 * next batch is read and moved in Redis, at most `maxInFlight` at a time, so PostgreSQL and Redis
 * work side by side instead of taking turns. The first failure is thrown by `drain()` (and by the
 * next `add()`), never lost; `failed` lets the action stop before it touches Redis again, so at
 * most the batches whose writes were in flight are done in Redis without their ledger update.
 */
export class WriteBehind {
  private readonly inFlight = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(private readonly maxInFlight = 2) {}

  /** Starts `write`, first waiting for room. */
  async add(write: () => Promise<unknown>): Promise<void> {
    while (this.inFlight.size >= this.maxInFlight) await Promise.race(this.inFlight);
    this.throwIfFailed();
    const running: Promise<void> = write().then(
      () => undefined,
      (error: unknown) => {
        this.failure ??= { error };
      },
    );
    const tracked = running.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  /** Whether a write has failed: the action should stop before its next batch. */
  get failed(): boolean {
    return this.failure !== undefined;
  }

  /** Waits for every write; throws the first failure. */
  async drain(): Promise<void> {
    await Promise.all(this.inFlight);
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }
}
