import { pino, type Logger, type LoggerOptions } from 'pino';
import { secretScrubber } from './redact.js';

export type { Logger };

export interface LoggerSettings {
  /** @defaultValue `'info'`, or `EFFECTS_LOG_LEVEL` */
  level?: string;
  /** Human-readable lines instead of JSON. @defaultValue true when stdout is a TTY */
  pretty?: boolean;
  /** Where lines go. @defaultValue stdout */
  destination?: NodeJS.WritableStream;
  /**
   * Connection URLs whose passwords are cut from every line, whatever field they hide in (a driver
   * error that quotes its connection string, say). @defaultValue none
   */
  secrets?: Array<string | undefined>;
}

/**
 * One logger for the whole process: JSON lines for machines, pretty lines for a terminal.
 * Fields that could hold credentials are redacted at the source, before any transport sees them.
 */
export function createLogger(settings: LoggerSettings = {}): Logger {
  const options: LoggerOptions = {
    level: settings.level ?? process.env.EFFECTS_LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    redact: {
      paths: ['password', '*.password', 'connection.password', 'headers.authorization'],
      censor: '***',
    },
  };
  const scrub = secretScrubber(settings.secrets ?? []);
  if (scrub) options.hooks = { streamWrite: scrub };
  const pretty = settings.pretty ?? (Boolean(process.stdout.isTTY) && !settings.destination);
  if (pretty) {
    return pino({
      ...options,
      transport: { target: 'pino-pretty', options: { colorize: !process.env.NO_COLOR, translateTime: 'HH:MM:ss.l' } },
    });
  }
  if (settings.destination) return pino(options, settings.destination);
  // Asynchronous writes to stdout: lines that arrive while a write is in flight go out together in
  // the next one, instead of one blocking write per line (3 lines per job cost a busy worker about
  // a tenth of its time). An idle process still writes each line at once, and pino flushes what is
  // left when the process exits.
  return pino(options, pino.destination({ dest: 1, sync: false }));
}

/** A logger that drops everything: the default for library use until the app passes its own. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
