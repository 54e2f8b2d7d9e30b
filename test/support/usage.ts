/**
 * A command's refusal of bad flags, checked in-process: the command's own `run(argv)` must throw
 * a UsageError before it prints or starts anything. What the process does with that error (exit
 * 2, `distsampler <command>: ` and the message on one line) is the same for every refusal, and
 * a few process tests check it once per command.
 */
import { expect, vi } from 'vitest';
import { UsageError } from '../../bin/usage.ts';

const COMMANDS = {
  run: () => import('../../bin/runCommand.ts'),
  coordinator: () => import('../../bin/coordinatorCommand.ts'),
  worker: () => import('../../bin/workerCommand.ts'),
  shard: () => import('../../bin/shardCommand.ts'),
} as const;

export type CommandName = keyof typeof COMMANDS;

/**
 * Runs `distsampler <command> <argv>` in this process with `env` over the environment (a value
 * of '' stands for an unset variable, as a child would see it) and returns the refusal's message.
 * Fails if the command did not refuse, printed anything first, or said more than one line.
 */
export async function refusal(command: CommandName, argv: string[], env: Record<string, string> = {}): Promise<string> {
  for (const [name, value] of Object.entries(env)) vi.stubEnv(name, value);
  const printed: string[] = [];
  const capture = (chunk: string | Uint8Array): boolean => {
    printed.push(String(chunk));
    return true;
  };
  const out = vi.spyOn(process.stdout, 'write').mockImplementation(capture);
  const err = vi.spyOn(process.stderr, 'write').mockImplementation(capture);
  const label = `${command} ${argv.join(' ')}`;
  let outcome: unknown;
  try {
    outcome = await (await COMMANDS[command]()).run(argv);
  } catch (thrown) {
    outcome = thrown;
  } finally {
    out.mockRestore();
    err.mockRestore();
    vi.unstubAllEnvs();
  }
  if (!(outcome instanceof UsageError)) throw new Error(`${label}: expected a UsageError, got ${outcome instanceof Error ? `${outcome.name}: ${outcome.message}` : `exit code ${String(outcome)}`}`);
  expect(printed.join(''), `${label}: nothing is printed or started before the refusal`).toBe('');
  expect(outcome.message, label).not.toContain('\n');
  return outcome.message;
}

/** `refusal`, with the message matching every pattern. */
export async function expectRefusal(command: CommandName, argv: string[], patterns: RegExp[], env: Record<string, string> = {}): Promise<void> {
  const message = await refusal(command, argv, env);
  for (const pattern of patterns) expect(message, `${command} ${argv.join(' ')}`).toMatch(pattern);
}
