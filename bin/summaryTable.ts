/** The per-epoch audit table `run` and `coordinator` print at the end of a run. */
import type { EpochAudit, EpochEvent, RunReport } from '../coordinator/report.ts';
import { epochOfPass, passOrder } from '../shared/evalPass.ts';

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

/**
 * The per-epoch summary table printed at the end of a run: a row per pass in run order (an
 * evaluation pass is `eval@E`, after epoch E), then the evaluation passes' merged results.
 */
export function formatSummary(report: RunReport): string {
  const passes: EpochAudit[] = [...report.epochs, ...report.eval.map((e) => e.pass)].sort((a, b) => passOrder(a.epoch) - passOrder(b.epoch));
  // The quarantine column only when a step failed for good: runs without one print as before.
  const quarantined = passes.reduce((sum, e) => sum + e.quarantined, 0);
  const header = ['epoch', 'world', 'planned', 'consumed', 'missing', ...(quarantined ? ['quarantined'] : []), 'redelivered', 'ms', 'digests', 'events'];
  const rows = passes.map((e) => {
    const matched = e.ranks.filter((r) => r.sha256 !== null && r.sha256 === r.planSha256).length;
    return [
      e.epoch < 0 ? `eval@${epochOfPass(e.epoch)}` : String(e.epoch),
      String(e.worldSize),
      String(e.planned),
      String(e.consumed),
      String(e.missing),
      ...(quarantined ? [String(e.quarantined)] : []),
      String(e.redelivered),
      String(Math.round(e.durationMs)),
      `${matched}/${e.ranks.length} match plan`,
      eventsCell(e.events),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const last = header.length - 1;
  const line = (cells: string[]) => cells.map((c, i) => (i >= last ? c : c.padStart(widths[i]))).join('  ');
  const evaluated = report.eval.length ? ', every evaluation result merged' : '';
  const given = quarantined ? ` or quarantined (${quarantined}, within --max-failed)` : '';
  const failed = report.error ?? (quarantined && passes.every((e) => e.missing === 0) ? `${quarantined === 1 ? '1 sample' : `${quarantined} samples`} quarantined, more than --max-failed allows` : undefined);
  const verdict = report.ok ? `audit OK: every planned position consumed${given}${evaluated}` : `audit FAILED${failed ? `: ${failed}` : ''}`;
  return [line(header), ...rows.map(line), ...evalTable(report), ...quarantineLines(passes), verdict].join('\n');
}

/** One line per quarantined sample: which, where, how often it was tried, and why it failed. */
function quarantineLines(passes: readonly EpochAudit[]): string[] {
  return passes.flatMap((e) =>
    e.failed.map((f) => {
      const pass = e.epoch < 0 ? `eval@${epochOfPass(e.epoch)}` : `epoch ${e.epoch}`;
      return `quarantined: ${pass} dataset index ${f.index} (rank ${f.position.rank} offset ${f.position.offset}), failed ${f.attempts} times alone: ${f.error}`;
    }),
  );
}

/** The evaluation passes' merged results (no lines when the run did not evaluate). */
function evalTable(report: RunReport): string[] {
  if (report.eval.length === 0) return [];
  const header = ['eval after', 'length', 'evaluated', 'duplicates dropped', 'missing', 'sha256'];
  const rows = report.eval.map((e) => [String(e.afterEpoch), String(e.length), String(e.evaluated), String(e.duplicatesDropped), String(e.missing), `${e.sha256.slice(0, 16)}…`]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padStart(widths[i]))).join('  ');
  return [line(header), ...rows.map(line)];
}
