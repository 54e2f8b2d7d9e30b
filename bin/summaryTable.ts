/** The per-epoch audit table `run` and `coordinator` print at the end of a run. */
import type { EpochEvent, RunReport } from '../coordinator/report.ts';

/** Each kind of event once, in order of first appearance, counted when it repeats: `reassign r0 x8`. */
function eventsCell(events: readonly EpochEvent[]): string {
  const counts = new Map<string, number>();
  for (const ev of events) {
    if (ev.type === 'join') continue;
    const label = `${ev.type}${ev.rank === null ? '' : ` r${ev.rank}`}`;
    counts.set(label, (counts.get(label) ?? 0) + 1);
  }
  return [...counts].map(([label, n]) => (n === 1 ? label : `${label} x${n}`)).join(', ') || '-';
}

/** The per-epoch summary table printed at the end of a run. */
export function formatSummary(report: RunReport): string {
  const header = ['epoch', 'world', 'planned', 'consumed', 'missing', 'redelivered', 'ms', 'digests', 'events'];
  const rows = report.epochs.map((e) => {
    const matched = e.ranks.filter((r) => r.sha256 !== null && r.sha256 === r.planSha256).length;
    return [
      String(e.epoch),
      String(e.worldSize),
      String(e.planned),
      String(e.consumed),
      String(e.missing),
      String(e.redelivered),
      String(Math.round(e.durationMs)),
      `${matched}/${e.ranks.length} match plan`,
      eventsCell(e.events),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 8 ? c : c.padStart(widths[i]))).join('  ');
  const verdict = report.ok ? 'audit OK: every planned position consumed' : `audit FAILED${report.error ? `: ${report.error}` : ''}`;
  return [line(header), ...rows.map(line), verdict].join('\n');
}
