import type { Knex } from 'knex';
import { assertClusterPrefix, connectionSecrets, type ResolvedEffect, type Settings } from '../config/settings.js';
import { createDb } from '../ledger/db.js';
import { Ledger } from '../ledger/ledger.js';
import { QueueRegistry } from '../queue/queues.js';
import { assertRedisReachable, createRedis, isCluster, type RedisClient } from '../queue/redis.js';
import { ConnectionError } from './errors.js';
import { silentLogger, type Logger } from './logger.js';
import { redactUrl, secretScrubber } from './redact.js';

export interface RuntimeOptions {
  logger?: Logger;
  /** The app's own knex instance, to share its pool instead of opening one. Not closed by us. */
  db?: Knex;
  /** An existing ioredis connection, to one server or a cluster. Not closed by us. */
  redis?: RedisClient;
}

/**
 * The connections and registries one process shares: opened lazily, closed once. Every part of the
 * core (emit, worker, scheduler, operator functions) works from a Runtime.
 */
export class Runtime {
  readonly logger: Logger;
  readonly effectsByName: Map<string, ResolvedEffect>;
  /** Effects by the event that owes them. */
  readonly effectsByEvent: Map<string, ResolvedEffect[]>;
  /**
   * Cuts the passwords of this process's Redis and PostgreSQL URLs from a text, in every form they
   * take (secretScrubber): for text bound for storage or output that a driver or an effect wrote.
   */
  readonly scrubSecrets: (text: string) => string;
  private redisConnection?: RedisClient;
  private dbConnection?: Knex;
  private queueRegistry?: QueueRegistry;
  private ledgerInstance?: Ledger;

  constructor(
    readonly settings: Settings,
    private readonly options: RuntimeOptions = {},
  ) {
    this.logger = options.logger ?? silentLogger();
    this.effectsByName = new Map(settings.effects.map((e) => [e.name, e]));
    this.effectsByEvent = new Map();
    this.scrubSecrets = secretScrubber(connectionSecrets(settings)) ?? ((text) => text);
    // The app's own cluster client needs the hash-tag prefix as much as ours does.
    if (options.redis && isCluster(options.redis)) assertClusterPrefix(settings.prefix);
    for (const effect of settings.effects) {
      for (const event of effect.events) {
        this.effectsByEvent.set(event, [...(this.effectsByEvent.get(event) ?? []), effect]);
      }
    }
  }

  get redis(): RedisClient {
    this.redisConnection ??= this.options.redis ?? createRedis(this.redisTarget);
    return this.redisConnection;
  }

  private get redisTarget() {
    const cluster = this.settings.redisCluster || (this.options.redis !== undefined && isCluster(this.options.redis));
    return { url: this.settings.redisUrl, cluster, prefix: this.settings.prefix };
  }

  get db(): Knex {
    this.dbConnection ??= this.options.db ?? createDb(this.settings.databaseUrl);
    return this.dbConnection;
  }

  get ledger(): Ledger {
    this.ledgerInstance ??= new Ledger(this.db, this.settings.schema);
    return this.ledgerInstance;
  }

  get queues(): QueueRegistry {
    this.queueRegistry ??= new QueueRegistry(this.redis, this.settings.prefix);
    return this.queueRegistry;
  }

  /** Fails fast (exit 1 in the CLI) when a needed server is down, naming it without its password. */
  async assertReachable(needs: { redis?: boolean; db?: boolean }): Promise<void> {
    // Both connections first: a malformed URL throws here, before a check is left running unawaited.
    const redis = needs.redis ? this.redis : undefined;
    const db = needs.db ? this.db : undefined;
    const checks: Promise<void>[] = [];
    if (redis) checks.push(assertRedisReachable(redis, this.redisTarget));
    if (db) checks.push(this.assertDbReachable(db));
    const results = await Promise.allSettled(checks);
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failures.length) throw failures[0].reason;
  }

  /** True when the ledger database answers; used where the ledger is optional (status). */
  async isDbReachable(): Promise<boolean> {
    const db = this.db; // a malformed URL is bad input, not an unreachable server
    return this.assertDbReachable(db).then(
      () => true,
      () => false,
    );
  }

  private async assertDbReachable(db: Knex): Promise<void> {
    try {
      await db.raw('select 1');
    } catch (error) {
      const reason = this.scrubSecrets((error as Error).message || (error as Error).name);
      throw new ConnectionError(
        `Cannot reach PostgreSQL at ${redactUrl(this.settings.databaseUrl)} (${reason}).`,
        'Is PostgreSQL running? Check --db, EFFECTS_DATABASE_URL / DATABASE_URL, or `database` in the config file.',
      );
    }
  }

  async close(): Promise<void> {
    await this.queueRegistry?.close();
    if (this.redisConnection && !this.options.redis) this.redisConnection.disconnect();
    if (this.dbConnection && !this.options.db) await this.dbConnection.destroy();
    this.queueRegistry = undefined;
    this.redisConnection = undefined;
    this.dbConnection = undefined;
    this.ledgerInstance = undefined;
  }
}
