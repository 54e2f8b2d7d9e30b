/** Reading a run report (`--report FILE`) in tests: parsed against its schema, not cast. */
import { readFileSync } from 'node:fs';
import { RunReportSchema } from '../../bin/bridgedEvents.ts';
import type { EpochAudit, RunReport } from '../../coordinator/report.ts';

export function readReport(path: string): RunReport {
  return RunReportSchema.parse(JSON.parse(readFileSync(path, 'utf8')));
}

/** How many deaths an epoch's events record. */
export function deathsIn(epoch: EpochAudit): number {
  return epoch.events.filter((e) => e.type === 'death').length;
}
