/**
 * The evaluation invariants on one audit (checkEvalAudit): what an evaluation pass's summary must
 * be, given what the simulated workers returned. Throws a Violation.
 */
import type { EpochAudit } from '../../coordinator/report.ts';
import { epochOfPass, isEvalPass, passName, passShardSizes } from '../../shared/evalPass.ts';
import type { RunConfig } from '../../shared/protocol.ts';
import { Violation } from './context.ts';
import { expectedEvalSha256 } from './truth.ts';

/**
 * An audit's evaluation summary against what the simulated workers returned (evalResultOf):
 * present on evaluation passes only, for the config's length; never ok with a result missing; an
 * ok one (or any whose positions were all acknowledged) holds every index's result, any with
 * every result has the expected sha256, and one with every position acknowledged dropped at
 * least the padding's duplicates. `doubles`: positions the workers
 * delivered twice in the pass, when known: at most that many more duplicates, and exactly the
 * padding's when none. Throws a Violation.
 */
export function checkEvalAudit(audit: EpochAudit, config: RunConfig, doubles: number | undefined): void {
  const where = passName(audit.epoch);
  const fail = (invariant: string, detail: string): never => {
    throw new Violation(invariant, `${where}: ${detail}`);
  };
  const summary = audit.eval;
  if (!isEvalPass(audit.epoch)) {
    if (summary) fail('evaluation summary on evaluation passes only', `a training epoch's audit has one (${JSON.stringify(summary)})`);
    return;
  }
  if (!summary || !config.eval) return fail('evaluation summary on evaluation passes only', `no summary (${config.eval ? 'the run evaluates' : 'the run does not evaluate'})`);
  if (summary.afterEpoch !== epochOfPass(audit.epoch) || summary.length !== config.eval.length || summary.evaluated + summary.missing !== summary.length) {
    fail('evaluation summary consistent', `afterEpoch ${summary.afterEpoch}, length ${summary.length} (config ${config.eval.length}), evaluated ${summary.evaluated} + missing ${summary.missing}`);
  }
  if (audit.ok && (summary.missing > 0 || audit.missing > 0)) fail('no evaluation ok with a result missing', `ok with ${summary.missing} results and ${audit.missing} positions missing`);
  // An ack covering evaluation positions is refused without their results: all acknowledged, all evaluated.
  if (audit.missing === 0 && summary.missing > 0) fail('every acknowledged evaluation position has its result', `every position acknowledged, ${summary.missing} of ${summary.length} results missing`);
  if (summary.missing > 0) return;
  const expected = expectedEvalSha256(summary.length);
  if (summary.sha256 !== expected) fail('evaluation results merged in dataset order', `sha256 ${summary.sha256}, the workers' results give ${expected}`);
  // Positions never acknowledged (an aborted pass) may be padding whose duplicates never came.
  if (audit.missing > 0) return;
  const planned = passShardSizes(config, audit.epoch, audit.worldSize).reduce((a, b) => a + b, 0);
  const padding = planned - summary.length;
  if (summary.duplicatesDropped < padding) fail('padding duplicates dropped', `${summary.duplicatesDropped} duplicates dropped, the plan pads ${padding}`);
  if (doubles !== undefined && summary.duplicatesDropped > padding + doubles) {
    fail('padding duplicates dropped', `${summary.duplicatesDropped} duplicates dropped, but the plan pads ${padding} and only ${doubles} positions were delivered twice`);
  }
}
