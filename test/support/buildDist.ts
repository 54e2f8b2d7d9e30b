/**
 * vitest's globalSetup: the compiled package (dist/) built once per test run, from the sources
 * as they are now, before any test starts. The process tests run it (test/support/cli.ts) as
 * `npx distsampler` would, and test/package.test.ts packs it.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  const build = fileURLToPath(new URL('../../bin/build.mjs', import.meta.url));
  const { status, stderr, stdout } = spawnSync(process.execPath, [build], { encoding: 'utf8' });
  if (status !== 0) throw new Error(`npm run build failed (exit ${status}); the process tests run its output:\n${stdout}${stderr}`);
}
