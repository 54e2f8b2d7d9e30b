/**
 * The `distsampler` command line: which command, its flags, and how a refusal looks (one line,
 * `distsampler <command>: ...`, exit 2). bin/distsampler.ts runs it; tests call `main` in-process.
 */
import { readFileSync } from 'node:fs';
import { FROM_SOURCE } from '../shared/runtimeLoader.ts';
import { DistSamplerError } from '../shared/errors.ts';
import { closestName, UsageError } from './usage.ts';

type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> };

const COMMANDS: Record<string, Command> = {
  shard: { summary: "print a rank's shard, exactly as torch's DistributedSampler", load: () => import('./shardCommand.ts') },
  run: { summary: 'a coordinator and W local worker processes (like torchrun --standalone)', load: () => import('./runCommand.ts') },
  coordinator: { summary: 'a standalone coordinator for workers started elsewhere', load: () => import('./coordinatorCommand.ts') },
  worker: { summary: 'one worker process (env:// like a torchrun child)', load: () => import('./workerCommand.ts') },
};

/** This package's version, from its package.json (beside bin/, or beside dist/ once compiled). */
export function version(): string {
  const pkg: unknown = JSON.parse(readFileSync(new URL(FROM_SOURCE ? '../package.json' : '../../package.json', import.meta.url), 'utf8'));
  return typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

function help(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`);
  return ['usage: distsampler <command> [flags]', '', 'commands:', ...lines, '', 'Run `distsampler <command> --help` for its flags, `distsampler --version` for the version.'].join('\n');
}

/** Runs `distsampler <argv>`; resolves with the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V' || (rest.length === 1 && (rest[0] === '--version' || rest[0] === '-V') && name in COMMANDS)) {
    process.stdout.write(`distsampler ${version()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    const meant = closestName(name.replace(/^-+/, ''), Object.keys(COMMANDS));
    process.stderr.write(`distsampler: unknown command '${name}'${meant ? `: did you mean ${meant}?` : ''}\n${help()}\n`);
    return 2;
  }
  try {
    return await (await command.load()).run(rest);
  } catch (err) {
    process.stderr.write(`${failureLine(name, err)}\n`);
    return err instanceof UsageError ? 2 : 1;
  }
}

/**
 * Every command fails in one style, `distsampler <command>: <what happened>`: bad input (exit 2)
 * and a failure of ours (DistSamplerError: the message says it all, exit 1) alike. Anything else is
 * a bug: its stack goes with it, for the report.
 */
export function failureLine(command: string, err: unknown): string {
  if (err instanceof DistSamplerError) return `distsampler ${command}: ${err.message}`;
  const text = err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err);
  return `distsampler ${command}: internal error (a bug, please report it): ${text}`;
}
