import { UsageError } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';

/**
 * The one place connection settings are checked, before any driver sees them. Both drivers read a
 * string that is not their URL as a host name or socket (`--redis notaurl`, `--db localhost`), so a
 * typo would fail later as an unreachable server (exit 1): it is bad input (exit 2), and the message
 * names the setting, the expected form, and the value without its password.
 */
interface ConnectionSetting {
  what: string;
  expected: string;
  sources: string;
  accepts(url: string): boolean;
}

const REDIS: ConnectionSetting = {
  what: 'Redis URL',
  // What ioredis takes, less the forms that hide a typo (a bare host or port, `//host`).
  expected: 'redis://[[user]:password@]host[:port][/db], rediss:// for TLS, or a Unix socket path such as /run/redis/redis.sock',
  sources: '--redis, EFFECTS_REDIS_URL / REDIS_URL, or `redis` in the config file',
  // ioredis reads `//host` as a URL without its scheme, not as a path, and decodes the user and
  // password, failing on a stray `%` with only "URI malformed".
  accepts: (url) =>
    (/^rediss?:\/\//i.test(url) && URL.canParse(url) && userinfoDecodes(url) && !userinfoCutShort(url)) ||
    (url.startsWith('/') && !url.startsWith('//')),
};

const DATABASE: ConnectionSetting = {
  what: 'PostgreSQL URL',
  expected: 'postgres://[user[:password]@]host[:port]/database[?sslmode=...], or a socket directory such as /var/run/postgresql',
  sources: '--db, EFFECTS_DATABASE_URL / DATABASE_URL, or `database` in the config file',
  // The driver parses it as a URL, failing only at connect time, reported as an unreachable server,
  // on one it cannot parse. As the driver does, an empty host (`user:pw@/db?host=/socket/dir`, Cloud
  // SQL's form) is parsed with a stand-in.
  accepts: (url) =>
    (/^postgres(ql)?:\/\//i.test(url) && (URL.canParse(url) || URL.canParse(url.replace('@/', '@localhost/'))) && !userinfoCutShort(url)) ||
    url.startsWith('/'),
};

/** The usual reason a URL with a password does not parse. */
const ENCODE_PASSWORD = 'A password containing @ : / ? # or % is written percent-encoded (%40 %3A %2F %3F %23 %25).';

function assertConnectionUrl(setting: ConnectionSetting, url: string): void {
  if (setting.accepts(url)) return;
  const hint = `Expected ${setting.expected}. Check ${setting.sources}.${url.includes('@') ? ` ${ENCODE_PASSWORD}` : ''}`;
  throw new UsageError(`Not a ${setting.what}: ${redactUrl(url)}.`, hint);
}

/**
 * An authority without an `@`, and an `@` after it: a password with a `/`, `?` or `#` in it, not
 * percent-encoded, which a URL parser reads as the end of the host (`u:12#x@db` is host u, port 12)
 * rather than as an error. An `@` in the query of a URL whose credentials came first is its own.
 */
function userinfoCutShort(url: string): boolean {
  const rest = url.slice(url.indexOf('//') + 2);
  const end = rest.search(/[/?#]/);
  return end >= 0 && !rest.slice(0, end).includes('@') && rest.includes('@', end);
}

function userinfoDecodes(url: string): boolean {
  const { username, password } = new URL(url);
  try {
    decodeURIComponent(username);
    decodeURIComponent(password);
    return true;
  } catch {
    return false;
  }
}

const assertRedisUrl = (url: string): void => assertConnectionUrl(REDIS, url);

/**
 * A Redis setting: one URL, or with `cluster` the comma-separated URLs of a cluster's seed nodes
 * (over TCP: a cluster's nodes tell each other's addresses, not sockets).
 */
export function assertRedisSetting(setting: string, cluster: boolean): void {
  const urls = redisSeedUrls(setting);
  for (const url of urls) assertRedisUrl(url);
  if (!cluster && urls.length > 1) {
    throw new UsageError(
      `Several Redis URLs given (${urls.map(redactUrl).join(', ')}).`,
      'A list of URLs names the seed nodes of a Redis Cluster: add --redis-cluster (EFFECTS_REDIS_CLUSTER=true, or `redisCluster: true` in the config file).',
    );
  }
  if (!cluster) return;
  const socket = urls.find((url) => url.startsWith('/'));
  if (socket) {
    throw new UsageError(`A Redis Cluster is reached over TCP, not a Unix socket (${socket}).`, 'Give its seed nodes as redis://host:port.');
  }
  // A cluster has database 0 only; a URL naming another would be quietly sent to 0.
  const numbered = urls.find((url) => !/^\/?0?$/.test(new URL(url).pathname));
  if (numbered) {
    throw new UsageError(`A Redis Cluster has database 0 only: ${redactUrl(numbered)}.`, 'Drop the /N after the port.');
  }
}
export const assertDatabaseUrl = (url: string): void => assertConnectionUrl(DATABASE, url);

/**
 * The URLs in a Redis setting: one, or the comma-separated seed nodes of a Redis Cluster. A comma
 * splits only before a scheme, so one inside a password stays where it is.
 */
export function redisSeedUrls(setting: string): string[] {
  return setting
    .split(/,\s*(?=rediss?:\/\/)/i)
    .map((url) => url.trim())
    .filter(Boolean);
}
