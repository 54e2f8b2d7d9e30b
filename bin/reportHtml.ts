/**
 * The run's timeline as one self-contained HTML page (`--report-html FILE`): per pass a header
 * line and an SVG with a lane per rank (bin/reportLanes.ts). Inline CSS and SVG only: no script,
 * nothing fetched, so it opens from a CI artifact or a mail as it is.
 */
import type { EpochAudit, EvalAudit, RunReport } from '../coordinator/report.ts';
import { escapeXml, formatMs, laneRanks, passLabel, renderLegendSvg, renderPassSvg, SVG_DEFS } from './reportLanes.ts';

/**
 * Progress points drawn over the whole page, shared by its lanes (each between 12 and 200): what
 * keeps 64 ranks x 10 epochs under 300 KB while a small run gets every point it recorded.
 */
const POINT_BUDGET = 12_000;
const MIN_POINTS_PER_LANE = 12;
const MAX_POINTS_PER_LANE = 200;
/** Events listed under a pass's drawing; the rest are counted (a poison sample can make thousands). */
const MAX_LISTED_EVENTS = 50;
const MAX_LISTED_FAILED = 50;

const CSS = `body{font:13px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px 24px;color:#1f2328;background:#fff}
h1{font-size:18px;margin:0 0 4px}h2{font-size:14px;font-weight:600;margin:22px 0 4px}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.cfg,.note{color:#57606a;margin:2px 0}
svg{display:block;max-width:100%;height:auto}svg text{font-size:10px;fill:#424a53}
.legend{margin:8px 0 4px}[data-lane]>text:first-of-type{text-anchor:end}.n{fill:#6e7781}.tk{text-anchor:middle;fill:#6e7781}
.sep{stroke:#eaeef2}.ax{stroke:#8c959f;fill:none}.p{fill:#9ec5f4}.w{fill:url(#hatch)}
.x{stroke:#cf222e;stroke-width:2}.j{fill:#2da44e}.rp{fill:#fff;stroke:#2da44e;stroke-width:1.5}
.q{fill:#8250df}.sf{stroke:#e16f24;stroke-width:2.5}.down{fill:#d0d7de;opacity:.55}
.rs{stroke:#24292f;stroke-dasharray:4 3}.bl{font-size:9px}.bl.e{text-anchor:end}.g{stroke:#0969da;stroke-width:1.5}.gl{fill:#0969da;font-size:9px;text-anchor:middle}
.ra{stroke:#57606a;stroke-width:1.2;fill:#57606a}[data-reassign-to]>text{font-size:8.5px;fill:#24292f}[data-reassign-to]>.e{text-anchor:end}
details{margin:4px 0 0}summary{cursor:pointer;color:#57606a}table{border-collapse:collapse;font-size:12px;margin:4px 0}
td,th{padding:1px 8px;text-align:left;vertical-align:top;border-bottom:1px solid #eaeef2}td:last-child{white-space:pre-wrap;word-break:break-word}`;

/**
 * The report as one HTML page: the run's verdict and config, a legend, then every pass in the
 * order it ran (training epochs, each followed by its evaluation pass) with its header line, its
 * lanes and its events. Every text taken from the report is escaped.
 */
export function renderReportHtml(report: RunReport): string {
  const passes = passesInOrder(report);
  const lanes = passes.reduce((sum, p) => sum + laneRanks(p.audit).length, 0);
  const maxPointsPerLane = Math.max(MIN_POINTS_PER_LANE, Math.min(MAX_POINTS_PER_LANE, Math.floor(POINT_BUDGET / Math.max(1, lanes))));
  const verdict = report.ok ? '<span class="ok">ok</span>' : '<span class="bad">FAILED</span>';
  const parts = [
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">',
    `<title>distsampler run: ${report.ok ? 'ok' : 'FAILED'}</title><style>${CSS}</style></head><body>`,
    SVG_DEFS,
    `<h1>distsampler run ${verdict}</h1>`,
    `<p class="cfg">${escapeXml(configLine(report))}</p>`,
    report.error === undefined ? '' : `<p class="bad">stopped early: ${escapeXml(report.error)}</p>`,
    renderLegendSvg(),
  ];
  if (passes.length === 0) parts.push('<p class="note">No pass began.</p>');
  for (const pass of passes) parts.push(passSection(pass.audit, pass.evaluation, maxPointsPerLane));
  parts.push('</body></html>\n');
  return parts.join('\n');
}

interface Pass {
  readonly audit: EpochAudit;
  readonly evaluation?: EvalAudit;
}

/** Training epochs in order, each evaluation pass after the epoch it followed. */
function passesInOrder(report: RunReport): Pass[] {
  const passes: Pass[] = [];
  const evals = [...report.eval];
  for (const audit of report.epochs) {
    passes.push({ audit });
    for (let i = 0; i < evals.length; ) {
      if (evals[i].afterEpoch === audit.epoch) passes.push({ audit: evals[i].pass, evaluation: evals.splice(i, 1)[0] });
      else i++;
    }
  }
  for (const evaluation of evals) passes.push({ audit: evaluation.pass, evaluation });
  return passes;
}

function configLine(report: RunReport): string {
  const c = report.config;
  const words = [
    `length ${c.length}`,
    `world size ${c.worldSize}`,
    `${c.epochs} ${c.epochs === 1 ? 'epoch' : 'epochs'}`,
    `seed ${c.seed}`,
    c.shuffle ? 'shuffled' : 'not shuffled',
    c.dropLast ? 'drop last' : c.pad ? 'padded' : 'unpadded',
    `batch size ${c.batchSize}`,
    `${c.sampler} sampler`,
    `${c.engine} engine`,
  ];
  if (c.eval) words.push(`an evaluation pass every ${c.eval.every} ${c.eval.every === 1 ? 'epoch' : 'epochs'} over ${c.eval.length}`);
  return words.join(' · ');
}

/** The header line of a pass: what it planned and got, how long it took, and whether it held. */
function passHeader(audit: EpochAudit, evaluation?: EvalAudit): string {
  const words = [
    passLabel(audit),
    `world size ${audit.worldSize}`,
    `planned ${audit.planned}`,
    `consumed ${audit.consumed}`,
    `missing ${audit.missing}`,
    `redelivered ${audit.redelivered}`,
  ];
  if (audit.quarantined > 0) words.push(`quarantined ${audit.quarantined}`);
  if (evaluation) words.push(`evaluated ${evaluation.evaluated} of ${evaluation.length}, ${evaluation.missing} without a result`);
  words.push(formatMs(audit.durationMs));
  if (audit.downtimeMs !== undefined && audit.downtimeMs > 0) words.push(`downtime ${formatMs(audit.downtimeMs)}`);
  const ok = evaluation ? evaluation.ok : audit.ok;
  return `${escapeXml(words.join(' · '))} · ${ok ? '<span class="ok">ok</span>' : '<span class="bad">FAILED</span>'}`;
}

function passSection(audit: EpochAudit, evaluation: EvalAudit | undefined, maxPointsPerLane: number): string {
  const id = audit.epoch >= 0 ? `epoch-${audit.epoch}` : `eval-${evaluation?.afterEpoch ?? -(audit.epoch + 1)}`;
  const parts = [`<section id="${id}"><h2>${passHeader(audit, evaluation)}</h2>`];
  if (audit.startedAt !== undefined) parts.push(`<p class="note">started ${escapeXml(audit.startedAt)}</p>`);
  if (audit.timeline === undefined) {
    parts.push('<p class="note">No progress timeline: the epoch was audited before a coordinator restart (the journal keeps no timelines), or the report predates them.</p>');
  }
  else if (audit.events.some((e) => e.type === 'restart' || e.type === 'resume')) {
    parts.push('<p class="note">Progress is drawn from the last coordinator start on: what the ranks acknowledged before it is in the journal, not in the timeline.</p>');
  }
  parts.push(renderPassSvg(audit, { maxPointsPerLane }));
  parts.push(eventList(audit), failedList(audit), '</section>');
  return parts.join('');
}

/** The pass's events as a collapsed table: each one's time, type, rank and words. */
function eventList(audit: EpochAudit): string {
  const events = audit.events;
  if (events.length === 0) return '';
  // Cells without their optional end tags (HTML allows it): a big run lists many.
  const rows = events.slice(0, MAX_LISTED_EVENTS).map((e) => `<tr><td>${escapeXml(formatMs(e.atMs))}<td>${escapeXml(e.type)}<td>${e.rank ?? ''}<td>${escapeXml(e.detail)}`);
  const more = events.length > MAX_LISTED_EVENTS ? `<p class="note">and ${events.length - MAX_LISTED_EVENTS} more (the JSON report, --report, has every one)</p>` : '';
  return `<details><summary>${events.length} ${events.length === 1 ? 'event' : 'events'}</summary><table><tr><th>at</th><th>event</th><th>rank</th><th>detail</th></tr>${rows.join('')}</table>${more}</details>`;
}

/** The pass's quarantined samples: which index, where in the plan, how often it failed and why. */
function failedList(audit: EpochAudit): string {
  if (audit.failed.length === 0) return '';
  const rows = audit.failed.slice(0, MAX_LISTED_FAILED).map(
    (f) => `<tr><td>${f.index}<td>rank ${f.position.rank} offset ${f.position.offset}<td>${f.attempts}<td>${escapeXml(f.ranks.join(', '))}<td>${escapeXml(f.error)}`,
  );
  const more = audit.failed.length > MAX_LISTED_FAILED ? `<p class="note">and ${audit.failed.length - MAX_LISTED_FAILED} more</p>` : '';
  return `<details open><summary>${audit.failed.length} quarantined</summary><table><tr><th>index</th><th>position</th><th>attempts</th><th>ranks</th><th>error</th></tr>${rows.join('')}</table>${more}</details>`;
}
