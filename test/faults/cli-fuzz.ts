/**
 * Pieces of the bad-input scenario: the CLI's vocabulary read from its own command tree, fast-check
 * arbitraries of argument lists mixing real flags with hostile values, and an in-process runner
 * that captures what `run(argv)` prints.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command, Option } from 'commander';
import fc from 'fast-check';
import { run } from '../../src/cli/main.js';
import { buildProgram } from '../../src/cli/program.js';

interface CommandShape {
  words: string[];
  /** Long flags, and whether each takes a value. */
  options: Array<{ flag: string; takesValue: boolean }>;
}

const optionShape = (option: Option) => ({
  flag: option.long ?? option.short ?? option.flags,
  takesValue: option.required || option.optional,
});

/** Every command path of the CLI (`poison list`, `ramp status`, ...) with its options. */
export function commandShapes(): { global: CommandShape['options']; commands: CommandShape[] } {
  const program = buildProgram(() => {});
  const commands: CommandShape[] = [];
  const walk = (command: Command, words: string[]) => {
    for (const sub of command.commands) {
      const path = [...words, sub.name()];
      commands.push({ words: path, options: sub.options.map(optionShape) });
      walk(sub, path);
    }
  };
  walk(program, []);
  return { global: program.options.map(optionShape), commands };
}

const HOSTILE_DIR = path.join(os.tmpdir(), `effects-fuzz-${process.pid}`);

/** Removes the files hostileConfigFiles() wrote. */
export function removeHostileConfigFiles(): void {
  rmSync(HOSTILE_DIR, { recursive: true, force: true });
}

/** Config files a hostile --config may point at (in a temporary folder: removeHostileConfigFiles()). */
export function hostileConfigFiles(): string[] {
  const dir = HOSTILE_DIR;
  mkdirSync(dir, { recursive: true });
  const files: Record<string, string> = {
    'throws.mjs': 'throw new Error("config exploded at load time");\n',
    'not-config.mjs': 'export default 42;\n',
    'bad-keys.mjs': 'export default { effects: [{ name: "a:b", on: 7, run: 1 }], retries: 3, poison: { threshold: -1 } };\n',
    'syntax.ts': 'export default { effects: [ ;\n',
    'valid.mjs': 'export default { effects: [{ name: "fuzz-effect", on: "fuzzed", run() {} }] };\n',
  };
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  return [...Object.keys(files).map((name) => path.join(dir, name)), dir, path.join(dir, 'missing.ts'), '/dev/null'];
}

/** Values an operator (or a script gone wrong) might pass: junk, edge numbers, injections, URLs. */
export function hostileValue(configFiles: string[]): fc.Arbitrary<string> {
  const constants = [
    '', ' ', '-', '--', '---', '-1', '0', '00', '1', '1.5', '1e309', 'NaN', 'Infinity', '-Infinity', '9'.repeat(40),
    "1'; drop table ledger; --", '1 OR 1=1', '"; drop schema public cascade; --', '$(reboot)', '`id`', '%s%s%n', '%',
    '*', '?', '[', '\\', '../../../../etc/passwd', '\u0000', '\n', '\r\n', '\t', '\u202e', '🔥', '__proto__',
    'constructor', 'x'.repeat(10_000), '3h', '-3h', '0s', '90s', '15m', '3d', '1000000d', '1y', 'ms', '1.5h',
    '2026-11-26T00:00:00Z', '2026-13-45T25:61:00Z', '1970-01-01', '9999-12-31T23:59:59Z', 'yesterday', '10/s', '0/s',
    '-5/s', '1/0s', '10/m', '1e9/s', 'a,b,,c', ',', 'send-confirmation-email', 'fuzz-effect', '__effects_scheduler',
    'ledger-1', 'ledger-0', 'ledger--1', 'redis://127.0.0.1:1', 'redis://:hunter2@127.0.0.1:1/0', 'rediss://127.0.0.1:1',
    'redis://[::1', 'postgres://fuzz:hunter2@127.0.0.1:1/db?sslmode=require', 'postgres://%zz@127.0.0.1:1/db',
    'http://example.invalid', 'mysql://127.0.0.1:1', 'true', 'false', 'null', 'undefined', '{}', '[]', '{"a":1}',
    ...configFiles,
  ];
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...constants) },
    { weight: 1, arbitrary: fc.string({ maxLength: 30 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }) },
    { weight: 1, arbitrary: fc.integer().map(String) },
  );
}

/** Argument lists: a real command (or not), real and made-up flags in any order, values, positionals. */
export function argvArbitrary(configFiles: string[]): fc.Arbitrary<string[]> {
  const { global, commands } = commandShapes();
  const value = hostileValue(configFiles);
  const shapes = [...commands, { words: [], options: [] }, { words: ['help'], options: [] }, { words: ['no-such-command'], options: [] }];
  return fc.constantFrom(...shapes).chain((shape): fc.Arbitrary<string[]> => {
    const options = [...shape.options, ...global];
    const option = fc.constantFrom(...options);
    const withValue: fc.Arbitrary<string[]> = option.chain((o) =>
      o.takesValue ? value.map((v) => [o.flag, v]) : fc.constant<string[]>([o.flag]),
    );
    const bare: fc.Arbitrary<string[]> = option.map((o) => [o.flag]);
    const joined: fc.Arbitrary<string[]> = option.chain((o) => value.map((v) => [`${o.flag}=${v}`]));
    const odd: fc.Arbitrary<string[]> = fc
      .constantFrom('--nope', '-x', '--json=yes', '--help', '-h', '--version', '--no-json')
      .map((t) => [t]);
    const optionTokens = fc.oneof(
      { weight: 4, arbitrary: withValue },
      { weight: 1, arbitrary: bare },
      { weight: 1, arbitrary: joined },
      { weight: 1, arbitrary: odd },
    );
    return fc
      .tuple(fc.array(optionTokens, { maxLength: 5 }), fc.array(value, { maxLength: 2 }), fc.boolean())
      .map(([opts, positionals, positionalsFirst]) => {
        const flags = opts.flat();
        return positionalsFirst ? [...shape.words, ...positionals, ...flags] : [...shape.words, ...flags, ...positionals];
      });
  });
}

export interface CapturedRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * `run(argv)` in this process, with stdout and stderr captured: 20 ms a case instead of the 300 ms a
 * spawned node costs. `env` is applied for the call and restored after.
 */
export async function runInProcess(args: string[], env: Record<string, string | undefined> = {}): Promise<CapturedRun> {
  const out: string[] = [];
  const err: string[] = [];
  const writeOut = process.stdout.write;
  const writeErr = process.stderr.write;
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  process.stdout.write = ((chunk: string | Uint8Array) => out.push(String(chunk)) > 0) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => err.push(String(chunk)) > 0) as typeof process.stderr.write;
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    const code = await run(['node', 'effects', ...args]);
    return { code, stdout: out.join(''), stderr: err.join('') };
  } finally {
    process.stdout.write = writeOut;
    process.stderr.write = writeErr;
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** A stack frame line, as Node prints them. */
export const STACK_FRAME = /^\s+at .+(\(.*:\d+:\d+\)|:\d+:\d+)\s*$/m;
