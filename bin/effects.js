#!/usr/bin/env node
// The one place that exits the process: a timer guarantees it even if a handle stays open.
import { run } from '../dist/cli/main.js';

// `effects poison list --json | head`: the reader is gone, so there is nobody left to tell anything.
// Stop quietly instead of crashing with a stack trace from the broken pipe.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(process.exitCode ?? 0);
  });
}

const code = await run(process.argv);
process.exitCode = code;
setTimeout(() => process.exit(code), 2000).unref();
