/** `distsampler/coordinator`: the Coordinator in your own process, its options, events and run report. */
export {
  Coordinator,
  CoordinatorConfigError,
  FailurePolicy,
  tlsProblem,
  type CoordinatorEvents,
  type CoordinatorOptions,
  type CoordinatorTls,
  type FailurePolicyName,
} from './coordinator.ts';
export type { CoordinatorMetrics, MetricsStatus } from './metrics.ts';
export type { AuditPlans, PlansAhead } from './planAuditor.ts';
export type { EpochAudit, EpochEvent, EvalAudit, EvalSummary, RankAudit, RunReport } from './report.ts';
export { JournalError, JournalLockedError, JournalPlanError, JournalWriteError, readJournal, type JournalState, type WorldSizeRange } from './journal.ts';
export type { RunConfig } from '../shared/protocol.ts';
