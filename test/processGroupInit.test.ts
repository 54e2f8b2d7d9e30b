/** initProcessGroup's own checks: bad settings fail at once with InitError naming the setting. */
import { afterEach, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.ts';
import { initProcessGroup, InitError, type InitOptions } from '../worker/processGroup.ts';
import { runConfig } from './support/runConfig.ts';

const open: Coordinator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

async function refusal(options: InitOptions): Promise<InitError> {
  const err: unknown = await initProcessGroup(options).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(InitError);
  return err as InitError;
}

describe('initProcessGroup refuses bad settings before connecting', () => {
  it.each([
    [{ env: {} }, 'ERR_INIT_ENV', /needs MASTER_PORT/],
    [{ env: { MASTER_PORT: 'abc' } }, 'ERR_INIT_ENV', /MASTER_PORT must be a non-negative integer, got 'abc'/],
    [{ env: { MASTER_PORT: '99999' } }, 'ERR_INIT_ENV', /MASTER_PORT must be a port in 1\.\.65535, got '99999'/],
    [{ env: { MASTER_PORT: '0' } }, 'ERR_INIT_ENV', /MASTER_PORT must be a port/],
    [{ env: { MASTER_PORT: '29500', MASTER_ADDR: 'bad host' } }, 'ERR_INIT_ENV', /MASTER_ADDR 'bad host' is not a host name/],
    [{ env: { MASTER_PORT: '29500', MASTER_ADDR: 'host/path' } }, 'ERR_INIT_ENV', /MASTER_ADDR 'host\/path' is not a host name/],
    [{ env: { MASTER_PORT: '29500', MASTER_ADDR: 'user@host' } }, 'ERR_INIT_ENV', /MASTER_ADDR 'user@host'/],
    [{ env: { MASTER_PORT: '29500', RANK: 'x' } }, 'ERR_INIT_ENV', /RANK must be a non-negative integer, got 'x'/],
    [{ env: { MASTER_PORT: '29500', WORLD_SIZE: '0' } }, 'ERR_INIT_ENV', /WORLD_SIZE\) must be an integer >= 1, got 0/],
    [{ env: { MASTER_PORT: '29500', RANK: '4', WORLD_SIZE: '4' } }, 'ERR_INIT_ENV', /RANK\) 4 is beyond the world size \(WORLD_SIZE\) 4: ranks are 0\.\.3/],
    [{ initMethod: 'ws://127.0.0.1:1', rank: -1 }, 'ERR_INIT_ENV', /rank \(RANK\) must be an integer >= 0, got -1/],
    [{ initMethod: 'ws://127.0.0.1:1', rank: 1.5 }, 'ERR_INIT_ENV', /got 1\.5/],
    [{ initMethod: 'ws://127.0.0.1:1', timeoutMs: Number.NaN }, 'ERR_INIT_OPTIONS', /timeoutMs must be a number of ms in \[1, 2147483647\], got NaN/],
    [{ initMethod: 'ws://127.0.0.1:1', timeoutMs: 3e9 }, 'ERR_INIT_OPTIONS', /timeoutMs must be a number of ms in \[1, 2147483647\], got 3000000000/],
    [{ initMethod: 'ws://127.0.0.1:1', reconnectTimeoutMs: -1 }, 'ERR_INIT_OPTIONS', /reconnectTimeoutMs must be a number of ms in \[0, /],
    [{ initMethod: 'udp://127.0.0.1:1' }, 'ERR_INIT_METHOD', /use env:\/\/, ws:\/\/host:port or tcp:\/\/host:port/],
    [{ initMethod: 'tcp://127.0.0.1:0' }, 'ERR_INIT_METHOD', /port 0 is not a port/],
    [{ initMethod: 'ws://127.0.0.1:0' }, 'ERR_INIT_METHOD', /port 0 is not a port/],
    [{ initMethod: 'ws://127.0.0.1:1', waitNoticeMs: 0 }, 'ERR_INIT_OPTIONS', /waitNoticeMs must be a number of ms in \[1, /],
  ] as const)('refuses %j with %s', async (options, code, message) => {
    const err = await refusal(options);
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
  });
});

describe('initProcessGroup waiting for a group that does not fill', () => {
  it('gives up at its own timeout and says where the missing ranks are listed', async () => {
    const coordinator = new Coordinator({ worldSize: 2, config: runConfig({ length: 10, batchSize: 2 }) });
    open.push(coordinator);
    const { port } = await coordinator.listen();
    const err = await refusal({ initMethod: `ws://127.0.0.1:${port}`, timeoutMs: 300 });
    expect(err.code).toBe('ERR_INIT_TIMEOUT');
    expect(err.message).toContain(`http://127.0.0.1:${port}/status lists the missing ranks`);
    // The worker that gave up is gone again: the status lists both ranks as missing.
    const missing = async (): Promise<number[]> => ((await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as { missing: number[] }).missing;
    await expect.poll(missing).toEqual([0, 1]);
  });
});

describe('initProcessGroup waiting for a coordinator that is not there yet', () => {
  it('says so every waitNoticeMs, with where and for how long', async () => {
    const coordinator = new Coordinator({ worldSize: 2, config: runConfig({ length: 10, batchSize: 2 }) });
    open.push(coordinator);
    const { port } = await coordinator.listen();
    const notices: Array<{ url: string; waitedMs: number; timeoutMs: number }> = [];
    // The group of 2 never fills: this worker waits at the rendezvous until its own timeout.
    const err = await refusal({ initMethod: `ws://127.0.0.1:${port}`, timeoutMs: 1500, waitNoticeMs: 100, onWaiting: (n) => notices.push(n) });
    expect(err.code).toBe('ERR_INIT_TIMEOUT');
    expect(notices.length).toBeGreaterThan(0);
    expect(notices[0]).toMatchObject({ url: `ws://127.0.0.1:${port}`, timeoutMs: 1500 });
    expect(notices.map((n) => n.waitedMs)).toEqual([...notices.map((n) => n.waitedMs)].sort((a, b) => a - b));
  });
});
