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
  // ioredis reads `//host` as a URL without its scheme, not as a path.
  accepts: (url) => (/^rediss?:\/\//i.test(url) && URL.canParse(url)) || (url.startsWith('/') && !url.startsWith('//')),
};

const DATABASE: ConnectionSetting = {
  what: 'PostgreSQL URL',
  expected: 'postgres://[user[:password]@]host[:port]/database[?sslmode=...], or a socket directory such as /var/run/postgresql',
  sources: '--db, EFFECTS_DATABASE_URL / DATABASE_URL, or `database` in the config file',
  accepts: (url) => /^postgres(ql)?:\/\//i.test(url) || url.startsWith('/'),
};

function assertConnectionUrl(setting: ConnectionSetting, url: string): void {
  if (setting.accepts(url)) return;
  throw new UsageError(`Not a ${setting.what}: ${redactUrl(url)}.`, `Expected ${setting.expected}. Check ${setting.sources}.`);
}

export const assertRedisUrl = (url: string): void => assertConnectionUrl(REDIS, url);
export const assertDatabaseUrl = (url: string): void => assertConnectionUrl(DATABASE, url);
