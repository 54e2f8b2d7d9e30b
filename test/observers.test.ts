/**
 * The live page's access and its observer channel without a browser (test/livePage.browser.test.ts
 * has the page itself): the token exchanged for a cookie, 401 with no data otherwise, observers
 * that only listen, never count in the group, and get the run's merged state.
 */
import { livePageNotice } from '../bin/coordinatorCommand.ts';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { Coordinator } from '../coordinator/coordinator.ts';
import { LiveObservers, OBSERVER_SENT_CLOSE_CODE, type ObserverSnapshot } from '../coordinator/observers.ts';
import { initProcessGroup } from '../worker/processGroup.ts';
import { consume } from './support/consume.ts';
import { runConfig } from './support/runConfig.ts';
import { EventEmitter } from 'node:events';
import type { CoordinatorEvents } from '../coordinator/coreTypes.ts';

const TOKEN = 's3cret';
/** What a browser asks for: the page (a plain client asking for / gets the JSON hint). */
const HTML = { accept: 'text/html' };
const open: Coordinator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

/** `token` null: none, the page is open. */
async function startCoordinator(worldSize: number, token: string | null = TOKEN) {
  const coordinator = new Coordinator({ worldSize, config: runConfig({ length: 200, batchSize: 8, epochs: 1 }), heartbeatMs: 200, deadAfterMs: 2000, token: token ?? undefined });
  open.push(coordinator);
  const { port } = await coordinator.listen();
  return { coordinator, url: `ws://127.0.0.1:${port}`, http: `http://127.0.0.1:${port}` };
}

/** An observer socket; resolves once open, or rejects with the refusal's status. */
function observe(url: string, headers: Record<string, string>): Promise<{ ws: WebSocket; snapshots: ObserverSnapshot[] }> {
  const ws = new WebSocket(`${url}/observe`, { headers });
  const snapshots: ObserverSnapshot[] = [];
  ws.on('message', (data) => snapshots.push(JSON.parse(data.toString()) as ObserverSnapshot));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, snapshots }));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`status ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

const until = async (check: () => boolean, timeoutMs = 10_000): Promise<void> => {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('GET / (the live page)', () => {
  it('exchanges ?token= for an HttpOnly SameSite=Strict cookie and a 303 to /; the cookie admits the page', async () => {
    const { http } = await startCoordinator(1);
    const exchange = await fetch(`${http}/?token=${TOKEN}`, { redirect: 'manual' });
    expect(exchange.status).toBe(303);
    expect(exchange.headers.get('location')).toBe('/');
    const cookie = exchange.headers.get('set-cookie')!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).toMatch(/Path=\//);
    // The cookie is derived from the token, not the token itself.
    expect(cookie).not.toContain(TOKEN);
    const page = await fetch(`${http}/`, { headers: { ...HTML, cookie: cookie.split(';')[0] } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    const html = await page.text();
    expect(html).toContain('/observe');
    // Self-contained: nothing fetched from elsewhere.
    expect(html).not.toMatch(/(src|href)=["']?https?:/);
    expect((await fetch(`${http}/`, { headers: { ...HTML, authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
  });

  it('answers 401 with no run information without a valid token, cookie or bearer', async () => {
    const { http } = await startCoordinator(1);
    for (const headers of [{}, { authorization: 'Bearer wrong' }, { cookie: 'distsampler_live=forged' }] as Array<Record<string, string>>) {
      const res = await fetch(`${http}/`, { headers: { ...HTML, ...headers } });
      expect(res.status).toBe(401);
      const text = await res.text();
      expect(text).not.toMatch(/observe|rank|epoch/i);
    }
    const wrong = await fetch(`${http}/?token=wrong`, { redirect: 'manual' });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('set-cookie')).toBeNull();
  });

  it('serves the page to a browser only: a plain client asking for / keeps the JSON hint', async () => {
    const { http } = await startCoordinator(1);
    const res = await fetch(`${http}/`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(426);
    expect(((await res.json()) as { error: string }).error).toMatch(/open \/ in a browser/);
  });

  it('is open without a token (a loopback-only coordinator)', async () => {
    const { http, url } = await startCoordinator(1, null);
    expect((await fetch(`${http}/`, { headers: HTML })).status).toBe(200);
    const { ws } = await observe(url, {});
    ws.close();
  });
});

describe('/observe', () => {
  it('refuses an upgrade without the token (401) and admits the cookie or the bearer', async () => {
    const { http, url } = await startCoordinator(1);
    await expect(observe(url, {})).rejects.toThrow('status 401');
    await expect(observe(url, { cookie: 'distsampler_live=forged' })).rejects.toThrow('status 401');
    const cookie = (await fetch(`${http}/?token=${TOKEN}`, { redirect: 'manual' })).headers.get('set-cookie')!.split(';')[0];
    for (const headers of [{ cookie }, { authorization: `Bearer ${TOKEN}` }] as Array<Record<string, string>>) {
      const { ws, snapshots } = await observe(url, headers);
      await until(() => snapshots.length > 0);
      expect(snapshots[0]).toMatchObject({ t: 'snapshot', phase: 'rendezvous', worldSize: 1, ranks: [], finished: null });
      ws.close();
    }
  });

  it('closes an observer that sends anything (1008), and the group never counts it', async () => {
    const { coordinator, url, http } = await startCoordinator(2);
    const { ws } = await observe(url, { authorization: `Bearer ${TOKEN}` });
    const metrics = await (await fetch(`${http}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    expect(metrics).toMatch(/^distsampler_observers 1$/m);
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    ws.send(JSON.stringify({ t: 'hello', rank: 0 }));
    expect(await closed).toBe(OBSERVER_SENT_CLOSE_CODE);
    expect(coordinator.status()).toMatchObject({ phase: 'rendezvous', live: [], missing: [0, 1] });
  });

  it('pushes the merged state through a run: ranks, progress, events, and the end', async () => {
    const { url } = await startCoordinator(2);
    const { ws, snapshots } = await observe(url, { authorization: `Bearer ${TOKEN}` });
    const pgs = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank, token: TOKEN })));
    await Promise.all(pgs.map((pg) => consume(pg, { stepMs: 2 })));
    await until(() => (snapshots.at(-1)?.finished ?? null) !== null);
    const last = snapshots.at(-1)!;
    expect(last.finished).toEqual({ ok: true });
    expect(last).toMatchObject({ epoch: 0, audited: 1, missing: 0, redelivered: 0, worldSize: 2 });
    expect(last.ranks).toEqual([
      { rank: 0, state: 'alive', acknowledged: 100, numSamples: 100 },
      { rank: 1, state: 'alive', acknowledged: 100, numSamples: 100 },
    ]);
    // Throttled: far fewer snapshots than acknowledgements (25 batches a rank), versions only grow.
    const versions = snapshots.map((s) => s.version);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    ws.close();
  });
});

describe('LiveObservers bound', () => {
  it('skips an observer with more than the bound buffered, and sends it the latest state once it drained', () => {
    const events = new EventEmitter<CoordinatorEvents>();
    const hub = new LiveObservers(events, () => ({ phase: 'running', worldSize: 1, live: [0], missing: [], generation: 1 }), { intervalMs: 60_000, maxBufferedBytes: 10 });
    const sent: string[] = [];
    const fake = Object.assign(new EventEmitter(), { OPEN: 1, readyState: 1, bufferedAmount: 0, send: (text: string) => sent.push(text), close() {}, terminate() {} });
    // The hub takes any ws-like socket; a fake one lets the test set bufferedAmount.
    (hub as unknown as { add(ws: unknown): void }).add(fake);
    expect(sent).toHaveLength(1);
    fake.bufferedAmount = 11;
    events.emit('epochStart', { epoch: 0, worldSize: 1, numSamples: 10, ranks: [{ rank: 0, pid: 1 }] });
    (hub as unknown as { tick(): void }).tick();
    expect(sent).toHaveLength(1);
    fake.bufferedAmount = 0;
    events.emit('progress', { epoch: 0, rank: 0, acknowledged: 5, numSamples: 10, consumed: 5, planned: 10 });
    (hub as unknown as { tick(): void }).tick();
    (hub as unknown as { tick(): void }).tick();
    expect(sent).toHaveLength(2);
    expect((JSON.parse(sent[1]) as ObserverSnapshot).ranks).toEqual([{ rank: 0, state: 'alive', acknowledged: 5, numSamples: 10 }]);
    hub.close();
  });
});

describe('what observers see', () => {
  it('shows the collectives in flight and whom they wait for, from the status', () => {
    const events = new EventEmitter<CoordinatorEvents>();
    const collectives = [{ seq: 7, op: 'allReduce' as const, arrived: [0, 2], waitingFor: [1] }];
    const hub = new LiveObservers(events, () => ({ phase: 'running', worldSize: 3, live: [0, 1, 2], missing: [], generation: 0, collectives }), { intervalMs: 60_000 });
    expect(hub.snapshot().collectives).toEqual(collectives);
    hub.close();
  });
});

describe('the live page\'s address, as run and coordinator print it', () => {
  it('prints a token run made for itself in the address, never one that was given', () => {
    expect(livePageNotice('127.0.0.1', 4000, false, { own: 'abc/123' })).toBe('live page: http://127.0.0.1:4000/?token=abc%2F123');
    expect(livePageNotice('127.0.0.1', 4000, false, 'given')).toBe('live page: http://127.0.0.1:4000/?token=... (with the --token or DISTSAMPLER_TOKEN given)');
    expect(livePageNotice('127.0.0.1', 4000, true, 'none')).toBe('live page: https://127.0.0.1:4000/');
  });
});
