import { CommanderError, InvalidArgumentError } from 'commander';
import { EffectsError, ExitCode } from '../core/errors.js';
import { buildProgram } from './program.js';

/**
 * Runs the CLI and returns its exit code. Every error ends here: a message and a hint on stderr,
 * never a stack trace unless EFFECTS_DEBUG is set.
 */
export async function run(argv: string[] = process.argv): Promise<number> {
  let exitCode: number = ExitCode.ok;
  const program = buildProgram((code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (error) {
    return report(error);
  }
}

function report(error: unknown): number {
  if (error instanceof InvalidArgumentError) {
    // A parser called inside an action (`status --watch -2`). commander prints the errors of its
    // own parsing and then throws a plain CommanderError; this one nobody has printed yet.
    process.stderr.write(`error: ${error.message}\n`);
    return ExitCode.usage;
  }
  if (error instanceof CommanderError) {
    // commander has already printed its message. Help asked for (--help, `effects help`) and
    // --version exit 0; help shown because something was missing (`commander.help` with a
    // non-zero code) is a usage error, turned into one in program.ts.
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return ExitCode.ok;
    return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
  }
  if (error instanceof EffectsError) {
    process.stderr.write(`error: ${error.message}\n${error.hint ? `hint: ${error.hint}\n` : ''}`);
    return error.exitCode;
  }
  const err = error as Error;
  process.stderr.write(`error: ${err?.message ?? String(error)}\n`);
  if (process.env.EFFECTS_DEBUG) process.stderr.write(`${err?.stack}\n`);
  else process.stderr.write('hint: set EFFECTS_DEBUG=1 for the stack trace.\n');
  return ExitCode.runtime;
}
