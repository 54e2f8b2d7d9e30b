/** Command-line flag parsing shared by every command, on node:util's parseArgs. */
import { readFileSync } from 'node:fs';
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

/** What parseFlags returns (named: the build's .d.ts cannot name parseArgs's inferred type). */
export type ParsedFlags<T extends FlagOptions> = ReturnType<typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: false; allowNegative: false }>>;

/** parseArgs with strict checking, turning its errors into one-line UsageErrors. */
export function parseFlags<T extends FlagOptions>(argv: readonly string[], options: T): ParsedFlags<T> {
  try {
    // `--seed -5` reads as a flag to parseArgs; pass negative numbers to string flags as `--seed=-5`.
    const valueFlags = Object.entries(options).filter(([, o]) => o.type === 'string').map(([name]) => name);
    return parseArgs({ args: joinNegativeValues(argv, valueFlags), options, strict: true, allowPositionals: false, allowNegative: false });
  } catch (err) {
    const message = err instanceof Error ? err.message.split('\n')[0] : String(err);
    // parseArgs names an unknown flag; a typo deserves the flag that was meant.
    const unknown = /^Unknown option '--([^'=]+)'/.exec(message);
    const meant = unknown ? closestName(unknown[1], Object.keys(options)) : undefined;
    throw new UsageError(meant ? `${message.replace(/\. To specify a positional.*$/, '')}: did you mean --${meant}?` : message, { cause: err });
  }
}

/**
 * The name among `names` a mistyped `typed` most likely meant: within two edits (one for short
 * names), or the only name it is a prefix of. Undefined when none is close.
 */
export function closestName(typed: string, names: readonly string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const name of names) {
    const distance = editDistance(typed, name);
    if (!best || distance < best.distance) best = { name, distance };
  }
  if (best && best.distance <= (typed.length <= 4 ? 1 : 2)) return best.name;
  const prefixed = names.filter((name) => name.startsWith(typed));
  return prefixed.length === 1 ? prefixed[0] : undefined;
}

/** Levenshtein distance, with a swap of two neighbours counted as one edit (`lenght`). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * torchrun's command line: `[flags] SCRIPT [SCRIPT_ARGS...]`. Everything from the first word that
 * is neither a flag nor a flag's value belongs to the script (a `--` before it, or right after
 * it, is dropped), so the script's own flags are never read as ours.
 */
export function splitScript(argv: readonly string[], options: FlagOptions): { flags: string[]; script: string | undefined; scriptArgs: string[] } {
  const takesValue = (word: string): boolean => {
    const name = word.replace(/^--?/, '');
    const short = Object.entries(options).find(([, o]) => o.short === name)?.[0];
    return options[short ?? name]?.type === 'string';
  };
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i];
    if (word === '--') return withScript(argv.slice(0, i), argv.slice(i + 1));
    if (!word.startsWith('-') || word === '-') return withScript(argv.slice(0, i), argv.slice(i));
    if (!word.includes('=') && takesValue(word)) i++;
  }
  return { flags: [...argv], script: undefined, scriptArgs: [] };
}

function withScript(flags: readonly string[], rest: readonly string[]): { flags: string[]; script: string | undefined; scriptArgs: string[] } {
  const [script, ...args] = rest;
  return { flags: [...flags], script, scriptArgs: args[0] === '--' ? args.slice(1) : args };
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

/**
 * The contents of a file a flag (or variable) names, read now: one that cannot be read is a
 * UsageError naming `label` (`--tls-cert`, `DISTSAMPLER_CA`), not a failure after the launch.
 */
export function readableFile(label: string, path: string): Buffer {
  if (path === '') throw new UsageError(`${label} needs a file name`);
  try {
    return readFileSync(path);
  } catch (err) {
    // Node's text ends with `, open '<path>'`: the path is named once, up front.
    const why = err instanceof Error ? err.message.replace(/, open '.*'$/, '') : String(err);
    throw new UsageError(`${label}: cannot read ${path} (${why})`, { cause: err });
  }
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
 * --on-step-error (`distsampler worker`, and `run` for its workers): a step that throws is
 * reported to the coordinator and the worker goes on, or the worker dies of it.
 */
export const ON_STEP_ERROR = ['report', 'die'] as const;

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
