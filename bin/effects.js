#!/usr/bin/env node
// The one place that exits the process: a timer guarantees it even if a handle stays open.
import { run } from '../dist/cli/main.js';

const code = await run(process.argv);
process.exitCode = code;
setTimeout(() => process.exit(code), 2000).unref();
