import { Chalk, type ChalkInstance } from 'chalk';
import type { Command } from 'commander';
import { findConfigFile, loadConfigFile } from '../config/load.js';
import { connectionSecrets, resolveSettings, type Settings } from '../config/settings.js';
import type { EffectsConfig } from '../config/types.js';
import { UsageError } from '../core/errors.js';
import { createLogger, silentLogger, type Logger } from '../core/logger.js';
import { secretScrubber } from '../core/redact.js';
import { Runtime } from '../core/runtime.js';

/** The flags every command accepts (declared once in program.ts). */
export interface GlobalFlags {
  redis?: string;
  redisCluster?: boolean;
  db?: string;
  prefix?: string;
  schema?: string;
  config?: string;
  json?: boolean;
  color?: boolean;
  actor?: string;
}

/** What a command needs from the command line: settings, a runtime, and how to print. */
export class CommandContext {
  readonly chalk: ChalkInstance;
  /**
   * Every printed text goes through it: jobs failed by other code (or by versions that stored error
   * text as it came) can hold the passwords of the URLs this command was given.
   */
  private readonly scrub: (text: string) => string;

  private constructor(
    readonly flags: GlobalFlags,
    readonly config: EffectsConfig | undefined,
    readonly configFile: string | undefined,
    readonly settings: Settings,
    readonly out: NodeJS.WritableStream,
  ) {
    const colorOff = flags.color === false || 'NO_COLOR' in process.env || !(out as NodeJS.WriteStream).isTTY;
    this.chalk = new Chalk({ level: colorOff ? 0 : 1 });
    this.scrub = secretScrubber(connectionSecrets(settings)) ?? ((text) => text);
  }

  /** Reads the global flags of `command`, finds and loads the config file if there is one. */
  static async from(command: Command, out: NodeJS.WritableStream = process.stdout): Promise<CommandContext> {
    const flags = command.optsWithGlobals() as GlobalFlags;
    const configFile = findConfigFile(flags.config);
    const config = configFile ? await loadConfigFile(configFile) : undefined;
    const settings = resolveSettings(config, flags);
    return new CommandContext(flags, config, configFile, settings, out);
  }

  get json(): boolean {
    return Boolean(this.flags.json);
  }

  get isTTY(): boolean {
    return Boolean((this.out as NodeJS.WriteStream).isTTY) && !this.json;
  }

  /** Refuses to go on without effect definitions (worker, scheduler). */
  requireEffects(): void {
    if (!this.config || this.settings.effects.length === 0) {
      throw new UsageError(
        this.configFile ? `No effects are defined in ${this.configFile}.` : 'No config file found.',
        'Create effects.config.ts (or .mjs/.js) exporting defineConfig({ effects: [...] }), or pass --config PATH.',
      );
    }
  }

  runtime(logger: Logger = silentLogger()): Runtime {
    return new Runtime(this.settings, { logger });
  }

  /** The process logger of long-running commands: JSON lines, or pretty on a terminal. */
  processLogger(): Logger {
    return createLogger({ secrets: connectionSecrets(this.settings) });
  }

  print(text: string): void {
    this.out.write(this.scrub(text.endsWith('\n') ? text : `${text}\n`));
  }

  printJson(value: unknown): void {
    this.out.write(this.scrub(`${JSON.stringify(value, null, 2)}\n`));
  }

  /** One compact object on one line (NDJSON): for output that repeats, read line by line. */
  printJsonLine(value: unknown): void {
    this.out.write(this.scrub(`${JSON.stringify(value)}\n`));
  }
}
