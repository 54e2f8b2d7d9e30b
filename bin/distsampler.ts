#!/usr/bin/env -S npx tsx
/**
 * The `distsampler` CLI: parses flags and calls into shared/, coordinator/ and worker/.
 * Each command lives in its own file and exports `run(argv): Promise<number>` (the exit code).
 */
import { UsageError } from './usage.ts';

type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> };

const COMMANDS: Record<string, Command> = {
  shard: { summary: "print a rank's shard, exactly as torch's DistributedSampler", load: () => import('./shardCommand.ts') },
  run: { summary: 'a coordinator and W local worker processes (like torchrun --standalone)', load: () => import('./runCommand.ts') },
  coordinator: { summary: 'a standalone coordinator for workers started elsewhere', load: () => import('./coordinatorCommand.ts') },
  worker: { summary: 'one worker process (env:// like a torchrun child)', load: () => import('./workerCommand.ts') },
};

function help(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`);
  return ['usage: distsampler <command> [flags]', '', 'commands:', ...lines, '', 'Run `distsampler <command> --help` for its flags.'].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`distsampler: unknown command '${name}'\n${help()}\n`);
    return 2;
  }
  try {
    return await (await command.load()).run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`distsampler ${name}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}

main(process.argv.slice(2))
  .then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      process.stderr.write(`distsampler: ${message}\n`);
      process.exitCode = 1;
    },
  )
  .finally(() => {
    // A forked worker's IPC channel would keep the process alive after its work is done;
    // leaving it is no orphaning, so the exit-with-parent watch goes first.
    process.removeAllListeners('disconnect');
    if (process.connected) process.disconnect();
  });
