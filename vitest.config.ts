import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // dist/, built once before any test: the process tests run the compiled CLI.
    globalSetup: ['test/support/buildDist.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Multi-process tests fork workers of their own; two test files at a time suit 2 cores.
    // One module context per worker, not per file: the files clean up after themselves, and
    // importing vitest and the product again for each of 40 files cost 10 s of the suite.
    maxWorkers: 2,
    isolate: false,
    reporters: ['default', './test/support/summaryReporter.ts'],
  },
});
