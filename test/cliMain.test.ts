/** The `distsampler` command line itself, in-process: --version, and typos answered with what was meant. */
import { describe, expect, it, vi } from 'vitest';
import { failureLine, main, version } from '../bin/cli.ts';
import { LaunchError } from '../bin/launcher.ts';
import { closestName, UsageError } from '../bin/usage.ts';
import { expectRefusal } from './support/usage.ts';

/** Runs main(argv) with stdout and stderr captured. */
async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => ((out += String(chunk)), true));
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => ((err += String(chunk)), true));
  try {
    return { code: await main(argv), out, err };
  } finally {
    stdout.mockRestore();
    stderr.mockRestore();
  }
}

describe('distsampler --version', () => {
  it("prints the package's version, for the CLI and for any command", async () => {
    expect(version()).toMatch(/^\d+\.\d+\.\d+/);
    expect(await cli(['--version'])).toEqual({ code: 0, out: `distsampler ${version()}\n`, err: '' });
    expect(await cli(['run', '--version'])).toEqual({ code: 0, out: `distsampler ${version()}\n`, err: '' });
  });
});

describe('one failure style for every command', () => {
  it('prints `distsampler <command>: <message>` for our errors, and marks anything else as a bug with its stack', () => {
    expect(failureLine('run', new LaunchError('worker rank 1 exited (2) before the group formed'))).toBe('distsampler run: worker rank 1 exited (2) before the group formed');
    expect(failureLine('shard', new UsageError('--rank 9 is beyond the world size'))).toBe('distsampler shard: --rank 9 is beyond the world size');
    const bug = failureLine('coordinator', new TypeError("Cannot read properties of undefined (reading 'rank')"));
    expect(bug).toMatch(/^distsampler coordinator: internal error \(a bug, please report it\): TypeError: Cannot read properties of undefined \(reading 'rank'\)\n\s+at /);
    expect(failureLine('worker', 'thrown text')).toBe('distsampler worker: internal error (a bug, please report it): thrown text');
  });
});

describe('typos', () => {
  it('answers a mistyped command with the one that was meant, exit 2', async () => {
    const { code, err } = await cli(['rnu']);
    expect(code).toBe(2);
    expect(err.split('\n')[0]).toBe("distsampler: unknown command 'rnu': did you mean run?");
  });

  it('answers a mistyped flag with the flag that was meant, naming it', async () => {
    await expectRefusal('run', ['--lenght', '100'], [/^Unknown option '--lenght': did you mean --length\?$/]);
    await expectRefusal('coordinator', ['--world-size', '2', '--eval-evry', '1'], [/did you mean --eval-every\?$/]);
    await expectRefusal('worker', ['--datset', 'x.jsonl'], [/did you mean --dataset\?$/]);
  });

  it('suggests nothing for a flag far from every one', async () => {
    await expectRefusal('run', ['--frobnicate'], [/^Unknown option '--frobnicate'/]);
    expect(closestName('frobnicate', ['length', 'epochs'])).toBeUndefined();
    expect(closestName('ep', ['epochs', 'length'])).toBe('epochs');
    expect(closestName('e', ['epochs', 'engine'])).toBeUndefined();
  });

  it("takes torchrun's --nproc-per-node for --workers, and refuses the two when they disagree", async () => {
    await expectRefusal('run', ['--nproc-per-node', '0'], [/^--nproc-per-node must be an integer in \[1, 1024\], got '0'/]);
    await expectRefusal('run', ['--workers', '3', '--nproc-per-node', '2'], [/^--workers 3 and --nproc-per-node 2 disagree/]);
    await expectRefusal('run', ['--nproc-per-node', '2', '--world-size', '3'], [/^--workers 2 does not fit --world-size 3/]);
  });
});
