import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/faults/**'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: files in parallel, but not so many that BullMQ timings go wild.
    maxWorkers: 2,
  },
});
