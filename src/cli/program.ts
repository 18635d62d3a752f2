import { Command, CommanderError, Option } from 'commander';
import { UsageError } from '../core/errors.js';
import { registerDiscard } from './commands/discard.js';
import { registerMigrate } from './commands/migrate.js';
import { registerOps } from './commands/ops.js';
import { registerPause } from './commands/pause.js';
import { registerPoison } from './commands/poison.js';
import { registerRamp } from './commands/ramp.js';
import { registerRebuild } from './commands/rebuild.js';
import { registerReplay } from './commands/replay.js';
import { registerResume } from './commands/resume.js';
import { registerScheduler } from './commands/scheduler.js';
import { registerStatus } from './commands/status.js';
import { registerWorker } from './commands/worker.js';

export const VERSION = '0.1.0';

/** The `effects` command tree. Each command lives in commands/ and only renders what the core returns. */
export function buildProgram(setExitCode: (code: number) => void): Command {
  const program = new Command('effects')
    .description('Durable, queued side effects: run them, and see and fix what went wrong.')
    .exitOverride()
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .showSuggestionAfterError(true)
    .addOption(new Option('--redis <url>', 'Redis URL; with --redis-cluster, seed nodes\' URLs, comma-separated').env('EFFECTS_REDIS_URL'))
    // No commander .env(): it would read EFFECTS_REDIS_CLUSTER=false as on. resolveSettings reads it.
    .option('--redis-cluster', 'connect to a Redis Cluster (also EFFECTS_REDIS_CLUSTER=true); needs a hash-tag prefix such as {effects}')
    .option('--no-redis-cluster', 'connect to one Redis server, whatever the environment or config file says')
    .addOption(new Option('--db <url>', 'PostgreSQL URL of the ledger database').env('EFFECTS_DATABASE_URL'))
    .addOption(new Option('--prefix <prefix>', 'BullMQ key prefix (default: effects)').env('EFFECTS_PREFIX'))
    .addOption(new Option('--schema <schema>', 'PostgreSQL schema of the ledger (default: effects)').env('EFFECTS_SCHEMA'))
    .addOption(new Option('--config <path>', 'config file (default: ./effects.config.{ts,mts,mjs,js})').env('EFFECTS_CONFIG'))
    .addOption(
      new Option('--actor <name>', 'who runs this, for the audit trail (default: the OS user)').env('EFFECTS_ACTOR'),
    )
    .option('--json', 'machine-readable output on stdout, nothing else')
    .option('--no-color', 'plain output (also NO_COLOR)')
    .addHelpText(
      'after',
      `
Sources, highest first: flag > environment (EFFECTS_REDIS_URL or REDIS_URL,
EFFECTS_REDIS_CLUSTER, EFFECTS_DATABASE_URL or DATABASE_URL, EFFECTS_PREFIX, EFFECTS_SCHEMA,
EFFECTS_CONFIG)
> config file > default (redis://127.0.0.1:6379, postgres://postgres@127.0.0.1:5432/postgres).

Exit codes: 0 success, 1 runtime failure (e.g. Redis unreachable), 2 usage error.

Examples:
  $ effects migrate
  $ effects worker --metrics-port 9464
  $ effects status --json
  $ effects rebuild --since 3h --dry-run
  $ effects status --redis-cluster --redis redis://10.0.0.1:6379,redis://10.0.0.2:6379 --prefix '{effects}'`,
    );

  // commander's .version() prints the bare number, even with --json (which promises JSON on stdout).
  program.option('-V, --version', 'output the version number').on('option:version', () => {
    // The whole command line (commander keeps it, untyped): --json may come after -V.
    const json = (program as Command & { rawArgs: string[] }).rawArgs.includes('--json');
    process.stdout.write(json ? `${JSON.stringify({ version: VERSION })}\n` : `${VERSION}\n`);
    throw new CommanderError(0, 'commander.version', VERSION);
  });
  program.hook('preAction', (_program, action) => refuseFlagsTakenAsValues(action));

  registerWorker(program, setExitCode);
  registerScheduler(program, setExitCode);
  registerStatus(program);
  registerMigrate(program);
  registerRebuild(program, setExitCode);
  registerPoison(program);
  registerReplay(program, setExitCode);
  registerDiscard(program, setExitCode);
  registerPause(program);
  registerResume(program, setExitCode);
  registerRamp(program);
  registerOps(program);
  refuseMissingSubcommands(program);
  return program;
}

/**
 * commander answers a command group run without its subcommand (`effects poison`) with the group's
 * help on stderr and exit 1, which reads as a runtime failure. Like git or kubectl, it is a usage
 * error (exit 2), with an `error:` line that says what was expected.
 */
function refuseMissingSubcommands(command: Command): void {
  const subcommands = command.commands.filter((c) => c.name() !== 'help');
  if (subcommands.length === 0) return;
  for (const sub of subcommands) refuseMissingSubcommands(sub);
  const path = (c: Command | null): string => (c ? [path(c.parent), c.name()].filter(Boolean).join(' ') : '');
  command.exitOverride((error) => {
    if (error.code !== 'commander.help' || error.exitCode === 0) throw error;
    // `effects help nosuch` ends here too, with the unknown name as its last word.
    const unknown = command.args.at(-1);
    throw new UsageError(
      unknown === undefined
        ? `missing subcommand: '${path(command)}' expects one of: ${subcommands.map((c) => c.name()).join(', ')}.`
        : `unknown command '${unknown}'.`,
      `See \`${path(command)} --help\`.`,
    );
  });
}

/**
 * commander gives an option that needs a value the next word whatever it is, so `--actor --json`
 * means the actor "--json" and no JSON: a forgotten value would silently change what runs. A value
 * that is one of the command's own flags is that mistake.
 */
function refuseFlagsTakenAsValues(action: Command): void {
  const chain: Command[] = [];
  for (let c: Command | null = action; c; c = c.parent) chain.push(c);
  const flags = new Set(chain.flatMap((c) => c.options.flatMap((o) => [o.long, o.short])).filter(Boolean));
  for (const command of chain) {
    for (const option of command.options) {
      const name = option.attributeName();
      if (!option.required || command.getOptionValueSource(name) !== 'cli') continue;
      const value: unknown = command.getOptionValue(name);
      const flag = (Array.isArray(value) ? value : [value]).find(
        (v): v is string => typeof v === 'string' && flags.has(v.split('=')[0]),
      );
      if (flag) throw new UsageError(`${option.long} needs a value, but got the option ${flag}.`, `Give ${option.long} a value: ${option.flags}.`);
    }
  }
}
