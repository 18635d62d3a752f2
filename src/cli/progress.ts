import cliProgress from 'cli-progress';

export interface Progress {
  update(value: number, payload?: Record<string, string | number>): void;
  stop(): void;
}

const quiet: Progress = { update() {}, stop() {} };

/**
 * A progress bar on stderr for long bulk runs, only when a person is watching (stderr is a terminal
 * and the output is not --json); otherwise a no-op, so piped and scripted runs stay clean.
 */
export function progressBar(options: { total: number; json: boolean; label: string; extra?: string }): Progress {
  if (options.json || !process.stderr.isTTY || options.total <= 0) return quiet;
  const bar = new cliProgress.SingleBar(
    {
      format: `${options.label} [{bar}] {percentage}% | {value}/{total} | ETA {eta_formatted}${options.extra ? ` | ${options.extra}` : ''}`,
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  // Every {placeholder} of `extra` starts at 0, so the first frame does not show it raw.
  const initial = Object.fromEntries([...(options.extra ?? '').matchAll(/\{(\w+)\}/g)].map((m) => [m[1], 0]));
  bar.start(options.total, 0, initial);
  return {
    update: (value, payload) => bar.update(Math.min(value, options.total), payload),
    stop: () => bar.stop(),
  };
}
