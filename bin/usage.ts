/** Command-line flag parsing shared by every command, on node:util's parseArgs. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DistSamplerError } from '../shared/errors.ts';
import { MAX_TIMER_MS } from '../shared/scheduler.ts';

/** A bad flag or value: the CLI prints the one-line message and exits 2. */
export class UsageError extends DistSamplerError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_USAGE', message, options);
  }
}

export type FlagOptions = NonNullable<ParseArgsConfig['options']>;

/** parseArgs with strict checking, turning its errors into one-line UsageErrors. */
export function parseFlags<T extends FlagOptions>(argv: readonly string[], options: T) {
  try {
    // `--seed -5` reads as a flag to parseArgs; pass negative numbers to string flags as `--seed=-5`.
    const valueFlags = Object.entries(options).filter(([, o]) => o.type === 'string').map(([name]) => name);
    return parseArgs({ args: joinNegativeValues(argv, valueFlags), options, strict: true, allowPositionals: false, allowNegative: false });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message.split('\n')[0] : String(err), { cause: err });
  }
}

/** A flag's value as an integer within [min, max], or a UsageError naming the flag. */
/** A duration flag in ms: an integer in [min, MAX_TIMER_MS], the longest delay a timer holds. */
export function msFlag(name: string, raw: string | undefined, fallback: number, min: number): number {
  return intFlag(name, raw, fallback, min, MAX_TIMER_MS);
}

export function intFlag(name: string, raw: string | undefined, fallback: number, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): number {
  if (raw === undefined) return fallback;
  if (!/^-?\d+$/.test(raw.trim())) throw new UsageError(`--${name} must be an integer, got '${raw}'`);
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`--${name} must be an integer in [${min}, ${max}], got '${raw}'`);
  }
  return value;
}

/** A command line to paste into a POSIX shell: words quoted only where they need it. */
export function shellCommand(words: readonly string[]): string {
  return words.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** `1 worker`, `2 workers`: the plural only when the count is not 1. */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

/** A seed: any integer, kept exact as a bigint when it is beyond 2^53. */
export function seedFlag(raw: string | undefined): number | bigint {
  if (raw === undefined) return 0;
  if (!/^-?\d+$/.test(raw.trim())) throw new UsageError(`--seed must be an integer, got '${raw}'`);
  const big = BigInt(raw.trim());
  return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

/**
 * parseArgs refuses `--seed -5` as ambiguous; rewrite a value flag followed by a negative
 * number (an argument starting with '-' and a digit) to `--seed=-5`. Other arguments pass through.
 */
export function joinNegativeValues(argv: readonly string[], valueFlags: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = argv[i + 1];
    if (next !== undefined && arg.startsWith('--') && valueFlags.includes(arg.slice(2)) && /^-\d/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/** A flag's value from a fixed set of choices, or a UsageError naming the flag and the choices. */
export function choiceFlag<T extends string>(name: string, raw: string | undefined, choices: readonly T[], fallback: T): T {
  if (raw === undefined) return fallback;
  if (!(choices as readonly string[]).includes(raw)) {
    throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got '${raw}'`);
  }
  return raw as T;
}

/**
 * A process forked by a launcher must not outlive it: exit when the IPC channel drops.
 * Returns the release to call before the process disconnects on its own.
 */
export function exitWithParent(options: { leaveCtrlCToParent?: boolean } = {}): () => void {
  if (!process.send) return () => {};
  const orphaned = () => process.exit(1);
  // Under `run`, a terminal's Ctrl-C reaches the whole process group: the launcher decides how its
  // children stop (the coordinator first, so workers stopping are not mistaken for deaths).
  const leaveToParent = () => {};
  process.on('disconnect', orphaned);
  if (options.leaveCtrlCToParent) process.on('SIGINT', leaveToParent);
  return () => {
    process.off('disconnect', orphaned);
    process.off('SIGINT', leaveToParent);
  };
}
