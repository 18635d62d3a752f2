import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, chownSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/**
 * Private Redis and PostgreSQL servers for tests that stop, kill or wipe a server, so the shared
 * ones (and CI's) are never touched. Each listens on a free port and is removed by stop().
 */

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs = 15000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitForExit(child: ChildProcess, timeoutMs = 10000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export interface PrivateRedis {
  port: number;
  url: string;
  /** Starts the server again on the same port (after stop or kill), empty: it keeps nothing. */
  start(): Promise<void>;
  /** SIGKILL: as abrupt as a crash. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export async function startPrivateRedis(options: { password?: string } = {}): Promise<PrivateRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  // With a password, clients must AUTH: the secrets tests need a real credential to leak (or not).
  const auth = options.password ? ['--requirepass', options.password] : [];
  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...auth], {
      stdio: 'ignore',
    });
    await waitForPort(port);
  };
  const kill = async () => {
    if (!child) return;
    child.kill('SIGKILL');
    await waitForExit(child);
    child = undefined;
  };
  await start();
  const url = options.password
    ? `redis://:${encodeURIComponent(options.password)}@127.0.0.1:${port}`
    : `redis://127.0.0.1:${port}`;
  return { port, url, start, kill, stop: kill };
}

export interface PrivateRedisCluster {
  /** The seed nodes' URLs, comma-separated, as `--redis` takes them with `--redis-cluster`. */
  url: string;
  ports: number[];
  /** Kills every node (SIGKILL) and starts it again: same slots, no keys, as after a power cut. */
  restart(): Promise<void>;
  /** Kills one node (SIGKILL); `restart()` brings it back with the others. */
  killNode(port: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A Redis Cluster of `masters` nodes without replicas, its slots spread by `redis-cli --cluster
 * create`. Each node's cluster bus port is a free port of its own (not port + 10000, which may be
 * taken or out of range).
 */
export async function startPrivateRedisCluster(masters = 3): Promise<PrivateRedisCluster> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'effects-redis-cluster-'));
  let children: ChildProcess[] = [];
  const nodes: Array<{ port: number; busPort: number }> = [];
  for (let i = 0; i < masters; i += 1) nodes.push({ port: await freePort(), busPort: await freePort() });
  const ports = nodes.map((node) => node.port);
  // Each node keeps its identity and slots in its nodes-<port>.conf, so a restarted node rejoins as it was.
  const startNodes = async () => {
    children = nodes.map(({ port, busPort }) =>
      spawn(
        'redis-server',
        [
          '--port', String(port), '--cluster-port', String(busPort), '--bind', '127.0.0.1',
          '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, `nodes-${port}.conf`),
          '--dir', dir, '--save', '', '--appendonly', 'no',
        ],
        { stdio: 'ignore' },
      ),
    );
    await Promise.all(ports.map((port) => waitForPort(port)));
  };
  const killNodes = async () => {
    for (const child of children) child.kill('SIGKILL');
    await Promise.all(children.map((child) => waitForExit(child)));
  };
  // Every node must know every slot's owner before a client's first command lands on it.
  const waitUntilServing = async () => {
    const deadline = Date.now() + 15_000;
    const serving = (port: number) =>
      execFileSync('redis-cli', ['-p', String(port), 'cluster', 'info']).toString().includes('cluster_state:ok');
    while (!ports.every(serving)) {
      if (Date.now() > deadline) throw new Error('the Redis Cluster did not reach cluster_state:ok within 15 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const stop = async () => {
    await killNodes();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await startNodes();
    const addresses = ports.map((port) => `127.0.0.1:${port}`);
    execFileSync('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'], {
      stdio: 'ignore',
    });
    await waitUntilServing();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    url: ports.map((port) => `redis://127.0.0.1:${port}`).join(','),
    ports,
    async restart() {
      await killNodes();
      await startNodes();
      await waitUntilServing();
    },
    async killNode(port: number) {
      const child = children[ports.indexOf(port)];
      child.kill('SIGKILL');
      await waitForExit(child);
    },
    stop,
  };
}

export interface PrivatePostgres {
  port: number;
  /** URL of the `postgres` database of this cluster. */
  url: string;
  /** pg_ctl restart -m fast: every backend goes away, the data stays. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function pgBinDir(): string {
  const versions = readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a));
  return path.join('/usr/lib/postgresql', versions[0], 'bin');
}

/** initdb refuses to run as root; run the server tools as the postgres user when we are root. */
function asPostgres(command: string, args: string[]): void {
  const isRoot = process.getuid?.() === 0;
  if (isRoot) execFileSync('runuser', ['-u', 'postgres', '--', command, ...args], { stdio: 'ignore' });
  else execFileSync(command, args, { stdio: 'ignore' });
}

/**
 * The same, without blocking the event loop: while the server restarts, the test's clients see
 * their connections drop as a running app would, not all at once after the fact.
 */
function asPostgresAsync(command: string, args: string[]): Promise<void> {
  const isRoot = process.getuid?.() === 0;
  const [file, argv] = isRoot ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
  return new Promise((resolve, reject) =>
    execFile(file, argv, (error) => (error ? reject(error) : resolve())),
  );
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const port = await freePort();
  const bin = pgBinDir();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'effects-pg-'));
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
    chownSync(dir, uid, gid);
  }
  const data = path.join(dir, 'data');
  asPostgres(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']);
  const ctl = (...args: string[]) =>
    asPostgres(path.join(bin, 'pg_ctl'), ['-D', data, '-w', '-t', '30', '-l', path.join(dir, 'log'), ...args]);
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`;
  ctl('-o', options, 'start');
  return {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async restart() {
      await asPostgresAsync(path.join(bin, 'pg_ctl'), [
        '-D', data, '-w', '-t', '30', '-l', path.join(dir, 'log'), '-o', options, '-m', 'fast', 'restart',
      ]);
    },
    async stop() {
      try {
        ctl('-m', 'immediate', 'stop');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

export interface SilentableProxy {
  port: number;
  /** Connections open now stop passing bytes either way, as after a failover or a lost NAT entry. */
  silenceOpenConnections(): void;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of a server, to make the connections through it go silent without closing:
 * neither side hears anything until its own timeouts give up. New connections pass as usual.
 */
export async function startSilentableProxy(target: { host: string; port: number }): Promise<SilentableProxy> {
  const pairs: Array<[net.Socket, net.Socket]> = [];
  const silenced: net.Socket[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    pairs.push([client, upstream]);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    silenceOpenConnections() {
      for (const [client, upstream] of pairs.splice(0)) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
        silenced.push(client, upstream);
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of [...silenced, ...pairs.flat()]) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
