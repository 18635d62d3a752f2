import { defineConfig } from 'vitest/config';

/**
 * The fault-injection suite (`npm run test:faults`): kills workers, wipes and restarts servers.
 * Files run one at a time, since each one loads the machine and some time their recovery.
 */
export default defineConfig({
  test: {
    include: ['test/faults/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 180_000,
    hookTimeout: 90_000,
    globalSetup: ['test/faults/global-setup.ts'],
  },
});
