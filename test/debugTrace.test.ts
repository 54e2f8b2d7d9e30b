/** DISTSAMPLER_DEBUG=1: every frame each side sends and receives, and the coordinator's decisions, on stderr. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { readTraceSwitch, tracing } from '../shared/debugTrace.ts';
import { useLiveGroups } from './support/liveGroup.ts';

const live = useLiveGroups();

afterEach(() => {
  vi.unstubAllEnvs();
  readTraceSwitch();
});

/** What the code under `run` writes to stderr, and its result. */
async function stderrOf(run: () => Promise<void>): Promise<string> {
  let written = '';
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => ((written += String(chunk)), true));
  try {
    await run();
  } finally {
    spy.mockRestore();
  }
  return written;
}

describe('DISTSAMPLER_DEBUG', () => {
  it('traces the hello and welcome, each frame both ways, and what the coordinator decides', async () => {
    vi.stubEnv('DISTSAMPLER_DEBUG', '1');
    readTraceSwitch();
    expect(tracing()).toBe(true);
    const text = await stderrOf(async () => {
      const { pgs } = await live.startGroup(1);
      await pgs[0].barrier();
    });
    const pid = process.pid;
    expect(text).toMatch(new RegExp(`^DISTSAMPLER ${pid} worker: -> \\{"t":"hello"`, 'm'));
    expect(text).toMatch(new RegExp(`^DISTSAMPLER ${pid} coordinator: <- peer \\d+ \\{"t":"hello"`, 'm'));
    expect(text).toMatch(/^DISTSAMPLER \d+ coordinator: decides send to \d+ \{"t":"welcome"/m);
    expect(text).toMatch(/^DISTSAMPLER \d+ worker: <- \{"t":"welcome"/m);
    expect(text).toMatch(/^DISTSAMPLER \d+ worker rank 0: -> \{"t":"collective","seq":0,.*"op":"barrier"/m);
    expect(text).toMatch(/^DISTSAMPLER \d+ coordinator: decides journal|^DISTSAMPLER \d+ coordinator: decides event joined/m);
  });

  it('writes nothing when off', async () => {
    vi.stubEnv('DISTSAMPLER_DEBUG', '');
    readTraceSwitch();
    const text = await stderrOf(async () => {
      const { pgs } = await live.startGroup(1);
      await pgs[0].barrier();
    });
    expect(text).not.toMatch(/DISTSAMPLER/);
  });
});
