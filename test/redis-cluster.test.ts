import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import calculateSlot from 'cluster-key-slot';
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEffects, defineEffect, type Effects } from '../src/index.js';
import { discoverQueues } from '../src/queue/discover.js';
import { startScheduler, type SchedulerHandle } from '../src/scheduler/scheduler.js';
import { startWorker, type WorkerHandle } from '../src/worker/worker.js';
import { REDIS_URL, deleteKeys, runCli, setupServices, waitFor, type TestServices } from './helpers.js';
import { startPrivateRedisCluster, type PrivateRedisCluster } from './servers.js';

/**
 * Everything an operator does, on a Redis Cluster of three masters: the worker, emit, the operator
 * commands (status, poison, replay, pause, rebuild), the scheduler and a ramp, each of which runs BullMQ's scripts and ours
 * over keys that must share a slot. The prefix is a hash tag, as the README asks.
 */
const definitions = [
  defineEffect({ name: 'send-email', on: 'order_placed', async run() {} }),
  defineEffect({
    name: 'sync-crm',
    on: 'order_placed',
    attempts: 2,
    backoff: { type: 'fixed', delay: 10 },
    async run(task) {
      if (task.id === 'bad') throw new Error('CRM rejected the customer');
    },
  }),
];

const CONFIG_SOURCE = `export default {
  redisCluster: true,
  poison: { threshold: 2 },
  effects: [
    { name: 'send-email', on: 'order_placed', run() {} },
    { name: 'sync-crm', on: 'order_placed', attempts: 2, backoff: { type: 'fixed', delay: 10 }, run() {} },
  ],
};
`;

describe('on a Redis Cluster', () => {
  let cluster: PrivateRedisCluster;
  let services: TestServices;
  let effects: Effects;
  let worker: WorkerHandle | undefined;
  let scheduler: SchedulerHandle | undefined;
  let configFile: string;

  const cli = (args: string[]) =>
    runCli(['--config', configFile, '--redis', cluster.url, '--db', services.databaseUrl, '--prefix', services.prefix, '--schema', services.schema, ...args]);
  const json = async (args: string[]) => {
    const result = await cli([...args, '--json']);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout);
  };
  const statusOf = async (queue: string) =>
    ((await json(['status'])).queues as Array<Record<string, unknown>>).find((q) => q.name === queue);
  const rows = () => services.db.withSchema(services.schema).table('ledger').orderBy('id');

  beforeAll(async () => {
    cluster = await startPrivateRedisCluster(3);
    services = await setupServices('redis-cluster', { redisUrl: cluster.url, redisCluster: true });
    await services.migrate();
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'effects-cluster-'));
    configFile = path.join(dir, 'effects.config.mjs');
    await fs.writeFile(configFile, CONFIG_SOURCE);
    const settings = services.settings({ effects: definitions });
    effects = createEffects(
      { effects: definitions, redisCluster: true },
      { flags: { redis: settings.redisUrl, db: settings.databaseUrl, prefix: services.prefix, schema: services.schema } },
    );
  }, 60_000);

  afterAll(async () => {
    await worker?.close({ timeoutMs: 3000 });
    await scheduler?.close();
    await effects?.close();
    await services?.cleanup();
    await cluster?.stop();
    if (configFile) await fs.rm(path.dirname(configFile), { recursive: true, force: true });
  });

  it('runs emitted effects to done, and finds the poison pill', async () => {
    worker = await startWorker(services.runtime({ effects: definitions, poison: { threshold: 2 } }));
    for (let i = 0; i < 20; i += 1) await effects.emit('order_placed', `order-${i}`);
    await effects.emit('order_placed', 'bad');
    await waitFor(async () => (await rows()).filter((r) => r.status === 'pending').length === 0);
    const byStatus = (await rows()).map((r) => `${r.effect}:${r.event_id}:${r.status}`);
    expect(byStatus.filter((r) => r.endsWith(':done'))).toHaveLength(41);
    expect(byStatus.filter((r) => !r.endsWith(':done'))).toEqual(['sync-crm:bad:failed']);

    const crm = await statusOf('sync-crm');
    expect(crm).toMatchObject({ completed: 20, failed: 1, poison: 1, waiting: 0 });
    const poison = await json(['poison', 'list']);
    expect(poison.total).toBe(1);
    expect(poison.jobs[0]).toMatchObject({ queue: 'sync-crm', data: { event: 'order_placed', id: 'bad' }, attemptsMade: 2 });
  });

  it('replays and pauses through the CLI', async () => {
    const replayed = await json(['replay', '--queue', 'sync-crm', '--yes', '--brake-sample', '1', '--brake-wait', '5s']);
    expect(replayed).toMatchObject({ matched: 1, replayed: 1 });
    // It fails again (the bug is still there) and is back among the poison pills.
    await waitFor(async () => (await statusOf('sync-crm'))?.failed === 1, 10_000);

    expect((await cli(['pause', '--queue', 'send-email'])).code).toBe(0);
    expect(await statusOf('send-email')).toMatchObject({ paused: true });
    expect((await cli(['resume', '--queue', 'send-email'])).code).toBe(0);
    expect(await statusOf('send-email')).toMatchObject({ paused: false });
  });

  it('rebuilds the owed tasks after the cluster lost every key', async () => {
    await worker?.close({ timeoutMs: 3000 });
    worker = undefined;
    for (let i = 0; i < 5; i += 1) await effects.emit('order_placed', `late-${i}`);
    await waitFor(async () => (await statusOf('send-email'))?.waiting === 5);

    await deleteKeys(services.redis, `${services.prefix}:*`);
    expect(await statusOf('send-email')).toMatchObject({ waiting: 0 });

    const rebuilt = await json(['rebuild', '--since', '1h', '--yes']);
    expect(rebuilt).toMatchObject({ scanned: 10, enqueued: 10, dryRun: false });
    expect(await statusOf('send-email')).toMatchObject({ waiting: 5 });
    expect(await statusOf('sync-crm')).toMatchObject({ waiting: 5 });
  });

  it('runs the scheduler: its periodic rebuild and a ramp', async () => {
    const rebuilds: number[] = [];
    scheduler = await startScheduler(services.runtime({ effects: definitions }), {
      everyMs: 1_000,
      rampTickMs: 100,
      onRebuild: (result) => rebuilds.push(result.enqueued),
    });
    await deleteKeys(services.redis, `${services.prefix}:*`);
    await waitFor(async () => (await statusOf('sync-crm'))?.waiting === 5, 10_000);
    expect(rebuilds.some((n) => n > 0)).toBe(true);

    expect((await cli(['pause', '--queue', 'send-email'])).code).toBe(0);
    const ramp = await json(['resume', '--queue', 'send-email', '--ramp', '1s', '--from', '5', '--to', '10', '--detach']);
    expect(ramp).toMatchObject({ outcome: 'detached', ramp: { active: true } });
    await waitFor(async () => (await json(['ramp', 'status'])).active === false, 10_000);
    expect(await statusOf('send-email')).toMatchObject({ paused: false });
  });

  it('keeps a running worker working after every node of the cluster restarts empty', async () => {
    await scheduler?.close();
    scheduler = undefined;
    worker = await startWorker(services.runtime({ effects: definitions }));
    await waitFor(async () => (await rows()).filter((r) => r.status === 'pending').length === 0);

    await cluster.restart();
    // The same worker process, not restarted, takes the jobs pushed after the restart.
    const after = Array.from({ length: 5 }, (_, i) => `after-restart-${i}`);
    for (const id of after) await effects.emit('order_placed', id);
    await waitFor(async () => {
      const owed = (await rows()).filter((r) => after.includes(r.event_id));
      return owed.length === 10 && owed.every((r) => r.status === 'done');
    }, 20_000);
    expect(worker.workers.every((w) => w.isRunning())).toBe(true);
    // A client that has not spoken since the restart finds the queues too (it dials the prefix's master again).
    expect(await discoverQueues(services.redis, services.prefix)).toEqual(['send-email', 'sync-crm']);
  });

  it('serves commands while a node that holds none of its keys is down, and fails health when its own is', async () => {
    // The port of the master serving each slot range: the prefix's keys all live in one slot.
    const slots = await (services.redis as Cluster).cluster('SLOTS');
    const slot = calculateSlot(`${services.prefix}:x`);
    const owner = slots.find(([from, to]) => slot >= from && slot <= to)![2][1];
    const other = cluster.ports.find((port) => port !== owner)!;
    await worker?.close({ timeoutMs: 3000 });
    worker = await startWorker(services.runtime({ effects: definitions }), { metricsPort: 0 });
    const health = () => fetch(`http://127.0.0.1:${(worker!.metricsServer!.address() as AddressInfo).port}/healthz`).then((r) => r.status);
    expect(await health()).toBe(200);

    // Before the cluster marks it failed (15 s by default), everything of ours still answers.
    await cluster.killNode(other);
    expect((await statusOf('send-email'))?.name).toBe('send-email');
    expect(await health()).toBe(200);

    await cluster.killNode(owner);
    await waitFor(async () => (await health()) === 503, 5000);
    const down = await cli(['status']);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/Cannot reach Redis Cluster at redis:\/\/127\.0\.0\.1:\d+/);

    await cluster.restart();
    // The cluster's own recovery (nodes meeting again, slots served) takes longer on a loaded machine.
    await waitFor(async () => (await health()) === 200, 30_000);
  }, 60_000);

  it('refuses a prefix that is not a hash tag, before connecting (exit 2)', async () => {
    const result = await runCli(['status', '--redis-cluster', '--redis', cluster.url, '--prefix', 'effects']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('On a Redis Cluster the prefix must be a hash tag such as {effects}');
  });

  it('names --redis-cluster when a cluster node is reached as a single server (exit 2)', async () => {
    const node = cluster.url.split(',')[0];
    const one = await runCli(['status', '--redis', node, '--prefix', services.prefix, '--db', services.databaseUrl]);
    expect(one.code).toBe(2);
    expect(one.stderr).toContain(`Redis at ${node} is a node of a Redis Cluster`);
    expect(one.stderr).toContain('--redis-cluster');

    const several = await runCli(['status', '--redis', cluster.url, '--prefix', services.prefix]);
    expect(several.code).toBe(2);
    expect(several.stderr).toContain('Several Redis URLs given');
  });

  it('says so when --redis-cluster reaches a single server (exit 2)', async () => {
    const single = await runCli(['status', '--redis-cluster', '--redis', REDIS_URL, '--prefix', '{effects_single}', '--db', services.databaseUrl]);
    expect(single.code).toBe(2);
    expect(single.stderr).toContain(`Redis at ${REDIS_URL} is not a Redis Cluster`);
  });
});
