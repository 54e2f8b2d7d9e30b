/**
 * The timeline page (`--report-html FILE`, bin/reportHtml.ts) from synthetic reports: a lane per
 * rank, the marks on the lanes they belong to, every text escaped, nothing fetched, and a large
 * run's page still small.
 */
import { describe, expect, it } from 'vitest';
import type { EpochAudit, EpochEvent, RankTimeline, RunReport } from '../coordinator/report.ts';
import { renderReportHtml } from '../bin/reportHtml.ts';

const CONFIG: RunReport['config'] = { length: 3000, worldSize: 3, epochs: 1, seed: '0', shuffle: true, dropLast: false, engine: 'torch', batchSize: 32, sampler: 'torch', pad: true };

/** A rank's timeline: `count` points from 0 to `total` positions over `ms`. */
function steadyTrack(rank: number, total: number, ms: number, count = 100): RankTimeline {
  return { rank, points: Array.from({ length: count }, (_, i): [number, number] => [Math.round(((i + 1) * ms) / count), Math.round(((i + 1) * total) / count)]) };
}

function epochAudit(epoch: number, worldSize: number, overrides: Partial<EpochAudit> = {}): EpochAudit {
  const share = 1000;
  return {
    epoch,
    worldSize,
    ranks: Array.from({ length: worldSize }, (_, rank) => ({ rank, pid: 4000 + rank, samples: share, digest: 'a'.repeat(16), planDigest: 'a'.repeat(16), waitMs: 4 + rank })),
    planned: share * worldSize,
    consumed: share * worldSize,
    missing: 0,
    redelivered: 0,
    durationMs: 300,
    startedAt: '2026-12-02T16:00:00.000Z',
    downtimeMs: 0,
    runningMs: 300,
    events: [],
    ok: true,
    quarantined: 0,
    failed: [],
    timeline: Array.from({ length: worldSize }, (_, rank) => steadyTrack(rank, share, 296)),
    ...overrides,
  };
}

const event = (type: EpochEvent['type'], rank: number | null, atMs: number, detail: string, data?: EpochEvent['data']): EpochEvent => ({ type, rank, atMs, at: '2026-12-02T16:00:00.150Z', detail, ...(data ? { data } : {}) });

/** Rank 1 of 3 dies at 150 ms; its tail goes to ranks 0 and 2. */
function reportWithDeath(): RunReport {
  const events = [
    event('death', 1, 150, 'origin 1 offset 512/1000 <script>alert("x")</script>', { units: [{ origin: 1, offset: 512, end: 1000 }], workerId: 'w1', pid: 4001 }),
    event('reassign', 0, 150, 'origin 1 offsets [512, 756) from rank 1', { origin: 1, start: 512, end: 756, from: 1, to: 0, reason: 'rank 1 died' }),
    event('reassign', 2, 150, 'origin 1 offsets [756, 1000) from rank 1', { origin: 1, start: 756, end: 1000, from: 1, to: 2, reason: 'rank 1 died' }),
    event('generation', null, 151, 'generation 1: 2 ranks', { generation: 1, worldSize: 2, reason: 'rank 1 died', renumbered: [] }),
  ];
  const timeline = [steadyTrack(0, 1244, 296), { rank: 1, points: [...steadyTrack(1, 512, 148, 50).points, [300, 512]] as Array<[number, number]> }, steadyTrack(2, 1244, 296)];
  return { ok: true, config: CONFIG, epochs: [epochAudit(0, 3, { events, timeline, redelivered: 32 })], eval: [] };
}

/** The SVG group of one rank's lane in the page. */
function laneOf(html: string, rank: number): string {
  const match = new RegExp(`<g data-lane="${rank}"[^>]*>(.*?)</g>`, 's').exec(html);
  if (!match) throw new Error(`no lane for rank ${rank}`);
  return match[1];
}

describe('the timeline page', () => {
  it('draws one lane per rank, each with its progress', () => {
    const html = renderReportHtml(reportWithDeath());
    expect([...html.matchAll(/<g data-lane="(\d+)"/g)].map((m) => Number(m[1]))).toEqual([0, 1, 2]);
    for (const rank of [0, 1, 2]) expect(laneOf(html, rank)).toMatch(/<path class="p" d="M70 /);
  });

  it("puts a death marker on the dead rank's lane only, at its time", () => {
    const html = renderReportHtml(reportWithDeath());
    expect(laneOf(html, 1)).toMatch(/<path class="x" data-event="death" d="M\S+ /);
    expect(laneOf(html, 0)).not.toContain('data-event="death"');
    expect(laneOf(html, 2)).not.toContain('data-event="death"');
    // 150 of 300 ms: halfway along the plot (x from 70 to 900), the cross centred there.
    expect(laneOf(html, 1)).toContain('d="M481.5 ');
  });

  it('draws the reassignment from rank 1 to each recipient, labelled on its lane with the range', () => {
    const html = renderReportHtml(reportWithDeath());
    const arrows = [...html.matchAll(/<g data-reassign-from="(\d*)" data-reassign-to="([\d ]+)">(.*?)<\/g>/gs)].map((m) => ({ from: m[1], to: m[2], body: m[3] }));
    expect(arrows.map((a) => [a.from, a.to])).toEqual([['1', '0 2']]);
    // Lanes 26 high from y 18 (middles 31, 57, 83); at 150 ms, x 485: one shaft through rank 1's
    // lane from rank 0's to rank 2's, a head on each recipient, its range beside it.
    const [shaft] = /d="([^"]*)"/.exec(arrows[0].body)!.slice(1);
    expect(shaft).toBe('M485 31V83M482 36L485 31L488 36ZM482 78L485 83L488 78Z');
    expect(arrows[0].body).toMatch(/<text x="490" y="34">1:\[512,756\)<\/text><text x="490" y="86">1:\[756,1000\)<\/text>/);
  });

  it('gives each pass a header line: epoch, world size, counts, duration, and ok or FAILED', () => {
    const report = reportWithDeath();
    report.epochs.push(epochAudit(1, 3, { ok: false, missing: 3, consumed: 2997, durationMs: 1500, downtimeMs: 700, events: [event('restart', null, 900, 'coordinator restarted from its journal', { unacknowledged: 40, downMs: 700 })] }));
    const html = renderReportHtml({ ...report, ok: false });
    expect(html).toContain('<h2>epoch 0 · world size 3 · planned 3000 · consumed 3000 · missing 0 · redelivered 32 · 300 ms · <span class="ok">ok</span></h2>');
    expect(html).toContain('<h2>epoch 1 · world size 3 · planned 3000 · consumed 2997 · missing 3 · redelivered 0 · 1.50 s · downtime 700 ms · <span class="bad">FAILED</span></h2>');
    // The restart: a dashed line across every lane, with its downtime shaded before it.
    expect(html).toMatch(/<g data-event="restart"><path class="rs" d="M\S+ 14V\S+"\/><text[^>]*>restart, 700 ms down<\/text>/);
    expect(html).toContain('<rect class="down"');
  });

  it('escapes every text it takes from the report: a detail holding <script> comes out as text', () => {
    const report = reportWithDeath();
    const html = renderReportHtml({ ...report, ok: false, error: 'stopped <b>early</b> & "quoted"', config: { ...CONFIG, seed: '<img src=x>' } });
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toContain('<img');
    expect(html).not.toContain('<b>early');
    expect(html).toContain('&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;');
    expect(html).toContain('stopped &#60;b&#62;early&#60;/b&#62; &#38; &#34;quoted&#34;');
  });

  it('fetches nothing: no URL, no script, no external stylesheet or image', () => {
    const html = renderReportHtml(reportWithDeath());
    expect(html).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<script|<link|<img|\ssrc=|@import/i);
  });

  it('still draws lanes and marks for a report written before timelines existed', () => {
    const report = reportWithDeath();
    const { timeline: _timeline, ...old } = report.epochs[0];
    const html = renderReportHtml({ ...report, epochs: [old] });
    expect(html).toContain('No progress timeline');
    expect(laneOf(html, 1)).toContain('data-event="death"');
  });

  it('stays under 300 KB for 64 ranks x 10 epochs with full timelines, three deaths and a restart', () => {
    const death = (rank: number): EpochEvent[] => [
      event('death', rank, 30_000, `origin ${rank} offset 500/1000`, { units: [{ origin: rank, offset: 500, end: 1000 }], workerId: `w${rank}`, pid: 4000 + rank }),
      // Its tail to each of the 63 others.
      ...Array.from({ length: 64 }, (_, to) => to)
        .filter((to) => to !== rank)
        .map((to, i) => event('reassign', to, 30_000, `origin ${rank} offsets [${500 + i * 8}, ${508 + i * 8}) from rank ${rank}`, { origin: rank, start: 500 + i * 8, end: 508 + i * 8, from: rank, to, reason: `rank ${rank} died` })),
    ];
    const restart = [event('restart', null, 20_000, 'coordinator restarted from its journal', { unacknowledged: 900, downMs: 2000 })];
    const epochs = Array.from({ length: 10 }, (_, epoch) =>
      epochAudit(epoch, 64, {
        durationMs: 60_000,
        ranks: Array.from({ length: 64 }, (_, rank) => ({ rank, pid: 40_000 + rank, samples: 1000, digest: 'a'.repeat(16), planDigest: 'a'.repeat(16), waitMs: 5 + rank * 9 })),
        timeline: Array.from({ length: 64 }, (_, rank) => steadyTrack(rank, 1000, 59_000 + rank, 200)),
        events: epoch % 3 === 1 ? death(epoch) : epoch === 5 ? restart : [],
      }),
    );
    const html = renderReportHtml({ ok: true, config: { ...CONFIG, worldSize: 64, epochs: 10, length: 64_000 }, epochs, eval: [] });
    expect([...html.matchAll(/<g data-lane=/g)]).toHaveLength(640);
    expect([...html.matchAll(/data-event="death"/g)]).toHaveLength(3);
    expect(Buffer.byteLength(html)).toBeLessThan(300 * 1024);
  });
});
