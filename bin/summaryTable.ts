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

/** Each fault event as the cause of digests that differ from the plan: "expected after a death". */
const FAULT_CAUSES: Partial<Record<EpochEvent['type'], string>> = {
  death: 'a death',
  leave: 'a rank left',
  reassign: 'a reassignment',
  replace: 'a replacement',
  refused: 'a refused worker',
  restart: 'a coordinator restart',
  resume: 'a resume',
  stepFailed: 'a failed step',
  quarantine: 'a quarantine',
  generation: 'a new generation',
};

/**
 * The digests cell: `4/4 match plan` when every rank consumed exactly its shard in PyTorch's plan.
 * Otherwise how many differ, and, when the epoch had a fault (any event but a join, as the audit
 * counts them), that this is expected and after what: with faults a rank's indices differ from its
 * shard by design. Without one, a difference is a problem and the cell says only that; ranks that
 * merely sent no digest (nothing to compare) still count as not matching: `1/2 match plan`.
 */
export function digestsCell(epoch: Pick<EpochAudit, 'ranks' | 'events'>): string {
  const total = epoch.ranks.length;
  const matched = epoch.ranks.filter((r) => r.digest !== null && r.digest === r.planDigest).length;
  const fault = epoch.events.find((ev) => ev.type !== 'join');
  const differing = epoch.ranks.some((r) => r.digest !== null && r.digest !== r.planDigest);
  if (matched === total || (!fault && !differing)) return `${matched}/${total} match plan`;
  const differ = `${total - matched} of ${total} differ from the plan`;
  return fault ? `${differ}: expected after ${FAULT_CAUSES[fault.type] ?? `a ${fault.type}`}` : differ;
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
  const rows = passes.map((e) => [
    e.epoch < 0 ? `eval@${epochOfPass(e.epoch)}` : String(e.epoch),
    String(e.worldSize),
    String(e.planned),
    String(e.consumed),
    String(e.missing),
    ...(quarantined ? [String(e.quarantined)] : []),
    String(e.redelivered),
    String(Math.round(e.durationMs)),
    digestsCell(e),
    eventsCell(e.events),
  ]);
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
