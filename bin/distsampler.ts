#!/usr/bin/env -S npx tsx
/**
 * The `distsampler` CLI: parses flags and calls into shared/, coordinator/ and worker/.
 * Each command lives in its own file and exports `run(argv): Promise<number>` (the exit code);
 * bin/cli.ts picks the command. This file is the process around it.
 */
import { main } from './cli.ts';

main(process.argv.slice(2))
  .then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      // main reports every command's failure itself: this is one of main's own (a bug).
      const message = err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err);
      process.stderr.write(`distsampler: internal error (a bug, please report it): ${message}\n`);
      process.exitCode = 1;
    },
  )
  .finally(() => {
    // A forked worker's IPC channel would keep the process alive after its work is done;
    // leaving it is no orphaning, so the exit-with-parent watch goes first.
    process.removeAllListeners('disconnect');
    if (process.connected) process.disconnect();
  });
