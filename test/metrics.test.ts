/**
 * GET /metrics: the coordinator's Prometheus metrics over real loopback sockets, in one process,
 * behind the same token as GET /status, and what they say after a run and after a death.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.ts';
import type { RunReport } from '../coordinator/report.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { initProcessGroup } from '../worker/processGroup.ts';
import { consume } from './support/consume.ts';
import { runConfig } from './support/runConfig.ts';

const TOKEN = 's3cret';
const open: Coordinator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

async function startCoordinator(worldSize: number, over: Partial<RunConfig> = {}) {
  const coordinator = new Coordinator({ worldSize, config: runConfig({ length: 200, batchSize: 8, epochs: 2, ...over }), heartbeatMs: 200, deadAfterMs: 2000, token: TOKEN });
  open.push(coordinator);
  const { port } = await coordinator.listen();
  return { coordinator, url: `ws://127.0.0.1:${port}`, http: `http://127.0.0.1:${port}` };
}

/** `token` null: no Authorization header at all. */
async function scrape(http: string, token: string | null = TOKEN): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(`${http}/metrics`, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

/** The value of the sample with exactly these labels, or undefined when there is none. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = (m[2] ? m[2].split(',') : []).sort();
    if (got.join(',') === want.join(',')) return Number(m[3]);
  }
  return undefined;
}

const total = (report: RunReport, field: 'planned' | 'consumed' | 'redelivered'): number => report.epochs.reduce((sum, e) => sum + e[field], 0);

describe('GET /metrics', () => {
  it('answers 401 without the token or with a wrong one, and gives away no metric', async () => {
    const { http } = await startCoordinator(1);
    for (const token of [null, 'wrong']) {
      const { status, text } = await scrape(http, token);
      expect(status).toBe(401);
      expect(text).not.toMatch(/distsampler_/);
      expect(JSON.parse(text)).toEqual({ error: 'missing or wrong DISTSAMPLER_TOKEN' });
    }
  });

  it('names /metrics beside /status when a plain HTTP request asks for anything else', async () => {
    const { http } = await startCoordinator(1);
    const res = await fetch(`${http}/`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(426);
    expect(((await res.json()) as { error: string }).error).toMatch(/GET \/status or GET \/metrics/);
  });

  it("serves Prometheus text with the token, and after a run its totals equal the report's planned and consumed", async () => {
    const { coordinator, url, http } = await startCoordinator(2);
    const before = await scrape(http);
    expect(before.status).toBe(200);
    expect(before.type).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(sample(before.text, 'distsampler_rendezvous_seconds')).toBe(0);
    expect(sample(before.text, 'distsampler_epoch')).toBeNaN();

    const groups = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank, token: TOKEN })));
    // A barrier per epoch puts collectives in the latency histogram.
    await Promise.all(groups.map((pg) => consume(pg, { onEpoch: () => pg.barrier() })));
    const report = await coordinator.done;
    expect(report.ok).toBe(true);

    const { status, type, text } = await scrape(http);
    expect(status).toBe(200);
    expect(type).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(text).toMatch(/^# HELP distsampler_positions_planned_total /m);
    expect(text).toMatch(/^# TYPE distsampler_positions_planned_total counter$/m);
    expect(sample(text, 'distsampler_positions_planned_total', { pass: 'train' })).toBe(total(report, 'planned'));
    expect(sample(text, 'distsampler_positions_consumed_total', { pass: 'train' })).toBe(total(report, 'consumed'));
    expect(sample(text, 'distsampler_positions_redelivered_total', { pass: 'train' })).toBe(0);
    expect(sample(text, 'distsampler_epoch')).toBe(1);
    expect(sample(text, 'distsampler_epoch_positions_consumed')).toBe(report.epochs[1].consumed);
    expect(sample(text, 'distsampler_deaths_total')).toBe(0);
    expect(sample(text, 'distsampler_reassignments_total')).toBe(0);
    expect(sample(text, 'distsampler_rendezvous_seconds')).toBeGreaterThan(0);
    expect(sample(text, 'distsampler_collective_duration_seconds_count', { op: 'barrier', outcome: 'ok' })).toBe(2);
    expect(sample(text, 'distsampler_world_size')).toBe(2);
    for (const rank of ['0', '1']) {
      expect(sample(text, 'distsampler_rank_positions_acknowledged', { rank })).toBe(100);
      expect(sample(text, 'distsampler_rank_positions_per_second', { rank })).toBeGreaterThan(0);
    }
  });

  it('counts a worker killed mid-epoch as one death whose positions were reassigned', async () => {
    const { coordinator, url, http } = await startCoordinator(2, { epochs: 1 });
    const groups = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank, token: TOKEN })));
    // Rank 1 drops its connection abruptly (as SIGKILL would) after two of its 13 batches.
    await Promise.all([consume(groups[0]), consume(groups[1], { dieAt: (epoch, batches) => epoch === 0 && batches === 2 })]);
    const report = await coordinator.done;
    expect(report.epochs[0].missing).toBe(0);

    const { text } = await scrape(http);
    expect(sample(text, 'distsampler_deaths_total')).toBe(1);
    expect(sample(text, 'distsampler_reassignments_total')).toBeGreaterThan(0);
    expect(sample(text, 'distsampler_positions_consumed_total', { pass: 'train' })).toBe(total(report, 'consumed'));
    expect(sample(text, 'distsampler_positions_redelivered_total', { pass: 'train' })).toBe(total(report, 'redelivered'));
  });

  it('times a collective that fails (a rank never arrives) as failed, by its op', async () => {
    const { url, http } = await startCoordinator(2);
    const groups = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank, token: TOKEN })));
    // Only rank 0 calls: the barrier times out after 50 ms.
    await expect(groups[0].barrier({ timeoutMs: 50 })).rejects.toMatchObject({ code: 'ERR_COLLECTIVE_TIMEOUT' });
    const { text } = await scrape(http);
    expect(sample(text, 'distsampler_collective_duration_seconds_count', { op: 'barrier', outcome: 'failed' })).toBe(1);
    // Timed, by the core's clock (how long exactly is the machine's business: no wall-clock bound here).
    expect(sample(text, 'distsampler_collective_duration_seconds_sum', { op: 'barrier', outcome: 'failed' })).toBeGreaterThan(0);
    expect(sample(text, 'distsampler_collective_duration_seconds_count', { op: 'barrier', outcome: 'ok' })).toBeUndefined();
    await Promise.all(groups.map((pg) => pg.destroy()));
  });

  it('keeps each coordinator’s metrics apart when two run in one process', async () => {
    const a = await startCoordinator(1, { epochs: 1 });
    const b = await startCoordinator(1, { epochs: 1, length: 40 });
    const pg = await initProcessGroup({ initMethod: a.url, token: TOKEN });
    await consume(pg);
    await a.coordinator.done;
    expect(sample((await scrape(a.http)).text, 'distsampler_positions_planned_total', { pass: 'train' })).toBe(200);
    // b has run nothing: a labelled counter has no sample until it counts something.
    expect(sample((await scrape(b.http)).text, 'distsampler_positions_planned_total', { pass: 'train' })).toBeUndefined();
    expect(a.coordinator.metrics.registry).not.toBe(b.coordinator.metrics.registry);
  });
});
