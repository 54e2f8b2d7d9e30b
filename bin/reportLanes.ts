/**
 * The timeline page's drawings (bin/reportHtml.ts): one SVG per pass, a lane per rank on a shared
 * time axis, with the rank's progress and what happened to it, and the legend that names every
 * mark. Hand-made SVG strings: every text that came from the report goes through escapeXml.
 */
import type { EpochAudit, EpochEvent, EventValue } from '../coordinator/report.ts';

/** Text for HTML or SVG: the five characters that could end a text or an attribute, escaped. */
export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A duration for people: `850 ms`, `12.40 s`, `3 min 05 s`. */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)} min ${String(seconds % 60).padStart(2, '0')} s`;
}

/** The drawing's geometry, in SVG user units (the page scales it to its width). */
const WIDTH = 960;
const PLOT_X0 = 70;
const PLOT_X1 = 900;
/** Above the lanes: restarts', resumes' and generations' labels. */
const TOP = 18;
/** Below the lanes: the time axis and its labels. */
const BOTTOM = 20;

/** The hatch of a rank's wait at the epoch boundary, defined once for the page (ids are the document's). */
export const SVG_DEFS =
  '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>' +
  '<pattern id="hatch" width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="5" height="5" fill="#fff3c4"/><path d="M0 0V5" stroke="#bf8700" stroke-width="2"/></pattern>' +
  '</defs></svg>';

/** The marks a lane can hold; the legend draws the same ones. */
type MarkKind = 'cross' | 'join' | 'replace' | 'quarantine' | 'stepFailed';

/** Which mark an event on a rank's lane gets (the others are drawn across the lanes, or listed only). */
const MARK_OF: Partial<Record<EpochEvent['type'], MarkKind>> = { death: 'cross', leave: 'cross', join: 'join', replace: 'replace', quarantine: 'quarantine', stepFailed: 'stepFailed' };

/** A mark centred at (x, y), with its tooltip. */
function drawMark(kind: MarkKind, x: number, y: number, title: string, attrs = ''): string {
  const tip = `<title>${escapeXml(title)}</title>`;
  switch (kind) {
    case 'cross':
      return `<path class="x"${attrs} d="M${round1(x - 3.5)} ${round1(y - 3.5)}l7 7m0-7l-7 7">${tip}</path>`;
    case 'join':
      return `<circle class="j"${attrs} cx="${x}" cy="${y}" r="3.5">${tip}</circle>`;
    case 'replace':
      return `<circle class="rp"${attrs} cx="${x}" cy="${y}" r="3.5">${tip}</circle>`;
    case 'quarantine':
      return `<path class="q"${attrs} d="M${x} ${round1(y - 4.5)}l4 4.5-4 4.5-4-4.5z">${tip}</path>`;
    case 'stepFailed':
      return `<path class="sf"${attrs} d="M${x} ${y - 4}v8">${tip}</path>`;
  }
}

/** How a pass is drawn. */
export interface PassDrawing {
  /** At most this many progress points per lane (the page shares a budget over all its lanes). */
  readonly maxPointsPerLane: number;
}

/** One pass as an SVG: a lane per rank, progress and marks, on a time axis from its start to its audit. */
export function renderPassSvg(audit: EpochAudit, drawing: PassDrawing): string {
  const lanes = laneRanks(audit);
  const laneH = Math.max(12, Math.min(26, Math.round(480 / Math.max(1, lanes.length))));
  const height = TOP + lanes.length * laneH + BOTTOM;
  const end = timeEnd(audit);
  const x = (ms: number) => round1(PLOT_X0 + (Math.min(Math.max(ms, 0), end) / end) * (PLOT_X1 - PLOT_X0));
  const laneIndex = new Map(lanes.map((rank, i) => [rank, i]));
  const laneMid = (rank: number) => TOP + laneIndex.get(rank)! * laneH + laneH / 2;
  const scale = progressScale(audit);
  const parts: string[] = [`<svg viewBox="0 0 ${WIDTH} ${height}" width="${WIDTH}" height="${height}" role="img" aria-label="${escapeXml(`timeline of ${passLabel(audit)}`)}">`];
  // Lane separators, one path for all of them.
  parts.push(`<path class="sep" d="${lanes.map((_, i) => `M${PLOT_X0} ${TOP + (i + 1) * laneH}H${PLOT_X1}`).join('')}"/>`);
  parts.push(...downtimeBands(audit.events, x, TOP, lanes.length * laneH));
  for (const [i, rank] of lanes.entries()) parts.push(lane(audit, rank, TOP + i * laneH, laneH, x, scale, drawing.maxPointsPerLane));
  parts.push(...boundaryMarks(audit.events, x, TOP, lanes.length * laneH));
  parts.push(...reassignArrows(audit.events, x, laneIndex, laneMid, laneH));
  parts.push(axis(end, x, TOP + lanes.length * laneH));
  parts.push('</svg>');
  return parts.join('');
}

/** `epoch 3`, or `evaluation pass after epoch 2`. */
export function passLabel(audit: EpochAudit): string {
  return audit.epoch >= 0 ? `epoch ${audit.epoch}` : `evaluation pass after epoch ${audit.eval?.afterEpoch ?? -(audit.epoch + 1)}`;
}

/** Every rank the pass knows of: its plan's, those that reported or acknowledged, and those events name. */
export function laneRanks(audit: EpochAudit): number[] {
  const ranks = new Set<number>();
  for (let r = 0; r < audit.worldSize; r++) ranks.add(r);
  for (const r of audit.ranks) ranks.add(r.rank);
  for (const t of audit.timeline ?? []) ranks.add(t.rank);
  // A refused connection's rank is only what it claimed: not a lane.
  for (const e of audit.events) if (e.rank !== null && e.type !== 'refused') ranks.add(e.rank);
  return [...ranks].sort((a, b) => a - b);
}

/** The axis runs to the audit, or to the latest thing drawn if that is later. */
function timeEnd(audit: EpochAudit): number {
  let end = audit.durationMs;
  for (const e of audit.events) end = Math.max(end, e.atMs);
  for (const t of audit.timeline ?? []) end = Math.max(end, t.points.at(-1)?.[0] ?? 0);
  return Math.max(end, 1);
}

/** Every lane's progress shares one scale: the most any rank acknowledged, at least a rank's share. */
function progressScale(audit: EpochAudit): number {
  let top = Math.ceil(audit.planned / Math.max(1, audit.worldSize));
  for (const t of audit.timeline ?? []) top = Math.max(top, t.points.at(-1)?.[1] ?? 0);
  return Math.max(top, 1);
}

/** One rank's lane: its label, its progress, its wait at the boundary, and the marks on it. */
function lane(audit: EpochAudit, rank: number, top: number, laneH: number, x: (ms: number) => number, scale: number, maxPoints: number): string {
  const mid = round1(laneH / 2);
  const row = audit.ranks.find((r) => r.rank === rank);
  const parts = [`<g data-lane="${rank}" transform="translate(0 ${top})">`];
  // Its samples are at the lane's end; the rest of its row in the tooltip.
  const about = row ? `pid ${row.pid ?? 'none'}${row.waitMs === null ? '' : `, waited ${formatMs(row.waitMs)}`}${row.digest === null ? ', no report' : ''}` : '';
  parts.push(`<text x="${PLOT_X0 - 6}" y="${mid + 3.5}">${about ? `<title>${escapeXml(about)}</title>` : ''}rank ${rank}</text>`);
  const track = audit.timeline?.find((t) => t.rank === rank);
  if (track && track.points.length > 0) parts.push(`<path class="p" d="${progressPath(untilGone(track.points, audit.events, rank), x, laneH, scale, maxPoints)}"/>`);
  if (row?.waitMs && row.waitMs > 0) {
    const from = Math.round(x(audit.durationMs - row.waitMs));
    const to = Math.round(x(audit.durationMs));
    // Its time is in the label's tooltip.
    if (to > from) parts.push(`<rect class="w" x="${from}" y="2" width="${to - from}" height="${laneH - 4}"/>`);
  }
  if (row) parts.push(`<text class="n" x="${PLOT_X1 + 6}" y="${mid + 3.5}">${row.samples}</text>`);
  for (const e of audit.events) {
    const kind = e.rank === rank ? MARK_OF[e.type] : undefined;
    if (kind) parts.push(drawMark(kind, x(e.atMs), mid, eventTitle(e), ` data-event="${e.type}"`));
  }
  parts.push('</g>');
  return parts.join('');
}

/**
 * A rank that died or left (and was not replaced) holds its count to the audit: its area ends
 * where it went, unless it acknowledged anything later.
 */
function untilGone(points: ReadonlyArray<readonly [number, number]>, events: readonly EpochEvent[], rank: number): ReadonlyArray<readonly [number, number]> {
  let goneAt: number | undefined;
  for (const e of events) {
    if (e.rank !== rank) continue;
    if (e.type === 'death' || e.type === 'leave') goneAt = e.atMs;
    else if (e.type === 'join' || e.type === 'replace') goneAt = undefined;
  }
  const last = points.at(-1);
  if (goneAt === undefined || !last || last[0] <= goneAt) return points;
  // The first point with the final count: where it last grew.
  const grewAt = points.find((p) => p[1] === last[1])![0];
  const endAt = Math.max(goneAt, grewAt);
  return [...points.filter((p) => p[0] < endAt), [endAt, last[1]]];
}

/**
 * A filled step area from the lane's floor: each point's count holds until the next point.
 * Points closer than the lane's share of the width allows are merged into the later one (the
 * counts only grow), so a long run's page stays small.
 */
function progressPath(points: ReadonlyArray<readonly [number, number]>, x: (ms: number) => number, laneH: number, scale: number, maxPoints: number): string {
  // Whole units, relative moves: the largest part of a big run's page, kept short.
  const floor = laneH - 1;
  const y = (count: number) => Math.round(floor - (count / scale) * (laneH - 3));
  const gap = (PLOT_X1 - PLOT_X0) / Math.max(1, maxPoints);
  const kept: Array<[number, number]> = [];
  for (const [i, [at, count]] of points.entries()) {
    const px = Math.round(x(at));
    const last = kept.at(-1);
    if (last && px - last[0] < gap && i < points.length - 1) continue;
    if (last && px === last[0]) last[1] = y(count);
    else kept.push([px, y(count)]);
  }
  let d = `M${PLOT_X0} ${floor}`;
  let [atX, level] = [PLOT_X0, floor];
  for (const [px, py] of kept) {
    if (py === level) continue;
    d += `h${px - atX}v${py - level}`;
    [atX, level] = [px, py];
  }
  const endX = kept.at(-1)![0];
  return `${d}h${endX - atX}V${floor}Z`;
}

/** Grey bands where no coordinator ran the pass: before each restart, as long as it was down (its `downMs`). */
function downtimeBands(events: readonly EpochEvent[], x: (ms: number) => number, top: number, height: number): string[] {
  const bands: string[] = [];
  for (const e of events) {
    const down = numberOf(e.data?.downMs);
    if (e.type !== 'restart' || down === undefined || down <= 0) continue;
    const from = x(e.atMs - down);
    bands.push(`<rect class="down" x="${from}" y="${top}" width="${round1(Math.max(0.5, x(e.atMs) - from))}" height="${height}"/>`);
  }
  return bands;
}

/** Across every lane: a coordinator restart or a resume (a dashed line), a new group generation (a labelled tick). */
function boundaryMarks(events: readonly EpochEvent[], x: (ms: number) => number, top: number, height: number): string[] {
  const marks: string[] = [];
  for (const e of events) {
    const at = x(e.atMs);
    const title = `<title>${escapeXml(eventTitle(e))}</title>`;
    if (e.type === 'restart' || e.type === 'resume') {
      const down = numberOf(e.data?.downMs);
      const label = e.type === 'restart' ? `restart${down === undefined ? '' : `, ${formatMs(down)} down`}` : 'resume';
      const left = at > PLOT_X1 - 120;
      marks.push(`<g data-event="${e.type}"><path class="rs" d="M${at} ${top - 4}V${top + height}"/><text class="bl${left ? ' e' : ''}" x="${round1(at + (left ? -3 : 3))}" y="${top - 7}">${escapeXml(label)}</text>${title}</g>`);
    } else if (e.type === 'generation') {
      const generation = numberOf(e.data?.generation);
      marks.push(`<g data-event="generation"><path class="g" d="M${at} ${top - 6}V${top}"/><text class="gl" x="${at}" y="${top - 8}">${generation === undefined ? 'g' : `g${generation}`}</text>${title}</g>`);
    }
  }
  return marks;
}

/**
 * Reassignments: an arrow from the lane of the rank whose positions moved to each recipient's,
 * labelled on the recipient's lane with the ranges (`origin:[start,end)`). Those of one moment
 * from one rank share a shaft (a dead rank's tail goes to every survivor at once). Without a
 * source lane (a resumed run, a rank gone before the pass, a rank's own rest) each arrow comes
 * down from the recipient's lane top.
 */
function reassignArrows(events: readonly EpochEvent[], x: (ms: number) => number, laneIndex: ReadonlyMap<number, number>, laneMid: (rank: number) => number, laneH: number): string[] {
  const moves = new Map<string, { at: number; atMs: number; from: number | null; reason: string; to: Map<number, string[]> }>();
  for (const e of events) {
    if (e.type !== 'reassign') continue;
    const to = numberOf(e.data?.to) ?? e.rank;
    if (to === null || !laneIndex.has(to)) continue;
    const source = numberOf(e.data?.from);
    const from = source !== undefined && laneIndex.has(source) ? source : null;
    const at = x(e.atMs);
    const key = `${at}:${from}`;
    const move = moves.get(key) ?? { at, atMs: e.atMs, from, reason: typeof e.data?.reason === 'string' ? e.data.reason : e.detail, to: new Map<number, string[]>() };
    const [origin, start, end] = [numberOf(e.data?.origin), numberOf(e.data?.start), numberOf(e.data?.end)];
    const ranges = move.to.get(to) ?? [];
    if (origin !== undefined && start !== undefined && end !== undefined) ranges.push(`${origin}:[${start},${end})`);
    move.to.set(to, ranges);
    moves.set(key, move);
  }
  return [...moves.values()].map(({ at, atMs, from, reason, to }) => {
    const recipients = [...to.keys()].sort((a, b) => a - b);
    let d = '';
    const fromY = from === null ? undefined : laneMid(from);
    if (fromY !== undefined) {
      // One shaft from the source to its farthest recipients on either side.
      const ys = [fromY, ...recipients.map(laneMid)];
      d += `M${at} ${round1(Math.min(...ys))}V${round1(Math.max(...ys))}`;
    }
    const labels: string[] = [];
    for (const rank of recipients) {
      const y = laneMid(rank);
      if (fromY === undefined || rank === from) d += `M${at} ${round1(y - laneH / 2 - 3)}V${round1(y)}` + arrowHead(at, y, 'down');
      else d += arrowHead(at, y, rank > from! ? 'down' : 'up');
      const ranges = to.get(rank)!;
      const label = ranges.length > 3 ? `${ranges.slice(0, 3).join(' ')} +${ranges.length - 3}` : ranges.join(' ');
      // Near the right edge the label goes to the arrow's left.
      const left = at > PLOT_X1 - 120;
      labels.push(`<text${left ? ' class="e"' : ''} x="${round1(at + (left ? -5 : 5))}" y="${round1(y + 3)}">${escapeXml(label)}</text>`);
    }
    const title = `${formatMs(atMs)}: ${from === null ? 'positions' : `rank ${from}'s positions`} reassigned to ${recipients.length === 1 ? 'rank' : 'ranks'} ${recipients.join(', ')} (${reason})`;
    return `<g data-reassign-from="${from ?? ''}" data-reassign-to="${recipients.join(' ')}"><path class="ra" d="${d}"/>${labels.join('')}<title>${escapeXml(title)}</title></g>`;
  });
}

/** An arrow's head ending at (x, y), pointing down or up: a closed triangle in the shaft's path. */
function arrowHead(x: number, y: number, direction: 'down' | 'up'): string {
  const back = direction === 'down' ? -5 : 5;
  return `M${round1(x - 3)} ${round1(y + back)}L${x} ${round1(y)}L${round1(x + 3)} ${round1(y + back)}Z`;
}

/** The time axis under the lanes: round ticks from the pass's start to its end. */
function axis(end: number, x: (ms: number) => number, y: number): string {
  const step = tickStep(end);
  let ticks = '';
  let labels = '';
  // By index, not by adding: a sum of steps drifts past the last tick.
  for (let i = 0; i * step <= end * (1 + 1e-9); i++) {
    const at = x(i * step);
    ticks += `M${at} ${y}v4`;
    labels += `<text class="tk" x="${at}" y="${y + 15}">${escapeXml(tickLabel(i * step, step))}</text>`;
  }
  return `<path class="ax" d="M${PLOT_X0} ${y}H${PLOT_X1}${ticks}"/>${labels}`;
}

/** 1, 2 or 5 times a power of ten: about six ticks over the pass. */
function tickStep(end: number): number {
  const rough = end / 6;
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) ?? 10 * power;
}

function tickLabel(ms: number, step: number): string {
  if (step < 1000) return `${round1(ms)} ms`;
  if (step < 60_000) return `${round1(ms / 1000)} s`;
  return `${round1(ms / 60_000)} min`;
}

/** `120 ms: death of rank 1: origin 1 offset 512/1000` (its words as the report gives them). */
function eventTitle(e: EpochEvent): string {
  const who = e.rank === null ? '' : ` of rank ${e.rank}`;
  return `${formatMs(e.atMs)}: ${e.type}${who}: ${e.detail}`;
}

/** The legend: each mark the lanes use, drawn by the same functions, with its meaning. */
export function renderLegendSvg(): string {
  const items: Array<[string, string]> = [
    ['<path class="p" d="M0 14H6V9H12V5H18V2H22V14Z"/>', 'acknowledged positions (at the right: samples consumed)'],
    [drawMark('cross', 11, 8, 'death or leave'), 'death or leave'],
    [`<path class="ra" d="M11 1V14${arrowHead(11, 14, 'down')}"/>`, 'reassignment (origin:[start,end))'],
    ['<rect class="down" x="4" y="0" width="7" height="16"/><path class="rs" d="M11 0V16"/>', 'coordinator restart, its downtime shaded'],
    [drawMark('join', 11, 8, 'join'), 'join'],
    [drawMark('replace', 11, 8, 'replacement'), 'replacement'],
    ['<path class="g" d="M11 4V14"/>', 'group generation (g1, g2, ...)'],
    [drawMark('stepFailed', 11, 8, 'step failed'), 'step failed'],
    [drawMark('quarantine', 11, 8, 'quarantined sample'), 'quarantined sample'],
    ['<rect class="w" x="0" y="2" width="22" height="12"/>', 'wait at the epoch boundary'],
  ];
  const perRow = 3;
  const columnW = 320;
  const rowH = 22;
  const rows = Math.ceil(items.length / perRow);
  const cells = items.map(([drawing, words], i) => {
    const [cx, cy] = [(i % perRow) * columnW, Math.floor(i / perRow) * rowH + 2];
    return `<g transform="translate(${cx} ${cy})">${drawing}<text x="30" y="12">${escapeXml(words)}</text></g>`;
  });
  return `<svg class="legend" viewBox="0 0 ${WIDTH} ${rows * rowH}" width="${WIDTH}" height="${rows * rowH}" role="img" aria-label="legend">${cells.join('')}</svg>`;
}

function numberOf(value: EventValue | undefined): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** One decimal is finer than a pixel: shorter numbers, a smaller page. */
function round1(value: number): number {
  return Math.round(value * 10) / 10;
}
