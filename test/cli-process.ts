import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, waitFor } from './helpers.js';

/**
 * Long-running CLI processes (worker, scheduler) for tests that signal or kill them, and a config
 * file whose effect records its runs in a file and blocks as long as the process is told to.
 */

export interface CliProcess {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** The JSON log lines on stdout, parsed (pino writes JSON when stdout is not a TTY). */
  logs(): Array<Record<string, unknown>>;
  /** Resolves when stdout or stderr matches. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves with the exit code (or the signal) once the process has exited and its output is read. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if still running: for cleanup. */
  kill(): Promise<void>;
}

export function spawnCli(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): CliProcess {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin/effects.js'), ...args], {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, NO_COLOR: '1', EFFECTS_LOG_LEVEL: 'info', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    logs: () =>
      stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    async waitForOutput(pattern, timeoutMs = 15000) {
      await waitFor(() => pattern.test(stdout) || pattern.test(stderr) || child.exitCode !== null, timeoutMs).catch(
        () => undefined,
      );
      if (!pattern.test(stdout) && !pattern.test(stderr)) {
        throw new Error(`no output matching ${pattern} (exit ${child.exitCode})\nstdout:\n${stdout}\nstderr:\n${stderr}`);
      }
    },
    exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

export interface RunsFile {
  file: string;
  /** Lines `start <id> <pid>` and `end <id> <pid>`, in order. */
  lines(): string[];
  count(kind: 'start' | 'end', id?: string): number;
}

export function runsFile(dir: string): RunsFile {
  const file = path.join(dir, 'runs.log');
  const lines = () => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);
  return {
    file,
    lines,
    count: (kind, id) => lines().filter((l) => l.startsWith(`${kind} `) && (id === undefined || l.split(' ')[1] === id)).length,
  };
}

/**
 * Writes `effects.config.mjs` into `dir`: one effect `slow` on `order_placed` that appends to
 * runs.log and sleeps BLOCK_MS (read from the worker's environment), with short BullMQ locks so a
 * killed worker's job is recovered within seconds, and no start-up jitter.
 */
export function writeSlowEffectConfig(dir: string): string {
  const file = path.join(dir, 'effects.config.mjs');
  const runs = path.join(dir, 'runs.log');
  writeFileSync(
    file,
    `import { appendFileSync } from 'node:fs';
const record = (line) => appendFileSync(${JSON.stringify(runs)}, line + '\\n');
export default {
  worker: { lockDuration: 1000, stalledInterval: 1000, startupJitter: 0 },
  effects: [
    {
      name: 'slow',
      on: 'order_placed',
      attempts: 3,
      backoff: { type: 'fixed', delay: 100 },
      async run(task) {
        record('start ' + task.id + ' ' + process.pid);
        await new Promise((resolve) => setTimeout(resolve, Number(process.env.BLOCK_MS ?? 0)));
        record('end ' + task.id + ' ' + process.pid);
      },
    },
  ],
};
`,
  );
  writeFileSync(runs, '');
  return file;
}

/** The effect definitions of writeSlowEffectConfig, for emitting from the test process. */
export const slowEffectForEmit = [
  { name: 'slow', on: 'order_placed', attempts: 3, backoff: { type: 'fixed' as const, delay: 100 }, run: async () => {} },
];
