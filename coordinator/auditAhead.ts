/**
 * The audit's reference digests of the next training epoch, derived in the coordinator's idle
 * turns before that epoch begins: while the workers connect (for the first), or once the running
 * epoch's own digests are done (for the next). The epoch then begins with its audit ready, so
 * neither its acks nor its rollover wait for O(N) hashing, and the first epoch's workers do not
 * share the machine with it. A guess: the digests depend on the world size, so an epoch that
 * begins with another size (an elastic group changed) derives its own, as it did before. Pure.
 */
import { isEvalPass, nextPass, passPlan } from '../shared/evalPass.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { AHEAD_LIMIT } from '../shared/runPlan.ts';
import { PlanAuditor, type AuditPlans } from './planAuditor.ts';

/** What the audit ahead needs to know of the group. */
export interface AuditAheadHost {
  readonly config: RunConfig;
  readonly plans: AuditPlans | undefined;
  /** The running pass, or undefined before the first or between passes. */
  runningPass(): number | undefined;
  /** The pass to begin next when none runs (the first, or the one after the last audited). */
  nextPass(): number;
  /** The size of the group for the epoch to come. */
  groupSize(): number;
}

export class AuditAhead {
  private ahead: { readonly pass: number; readonly worldSize: number; readonly auditor: PlanAuditor } | undefined;

  constructor(private readonly host: AuditAheadHost) {}

  /**
   * The auditor for `pass` at `worldSize`: the one derived ahead if it matches (done, or part
   * done), else a new one. A training epoch only; what was derived for another is dropped.
   */
  auditorFor(pass: number, worldSize: number): PlanAuditor {
    const ahead = this.ahead;
    this.ahead = undefined;
    if (ahead && ahead.pass === pass && ahead.worldSize === worldSize) return ahead.auditor;
    return newAuditor(this.host, pass, worldSize);
  }

  /** True while there is ahead work an idle turn could do. */
  get wantsIdle(): boolean {
    const auditor = this.current();
    return auditor !== undefined && !auditor.done && !auditor.waiting;
  }

  /** One slice of ahead work. */
  work(): void {
    this.current()?.work();
  }

  /** The auditor of the training epoch that comes next, made when first needed; none when it is not worth deriving. */
  private current(): PlanAuditor | undefined {
    const { config } = this.host;
    const runningPass = this.host.runningPass();
    const groupSize = this.host.groupSize();
    let pass = runningPass === undefined ? this.host.nextPass() : nextPass(config, runningPass);
    if (isEvalPass(pass)) pass = nextPass(config, pass);
    // Its permutation is held beside the running epoch's: two tables, within the same bound as the workers'.
    if (pass >= config.epochs || config.length > AHEAD_LIMIT) return undefined;
    if (this.ahead?.pass !== pass || this.ahead.worldSize !== groupSize) this.ahead = { pass, worldSize: groupSize, auditor: newAuditor(this.host, pass, groupSize) };
    return this.ahead.auditor;
  }
}

function newAuditor(host: AuditAheadHost, pass: number, worldSize: number): PlanAuditor {
  const plans = host.plans;
  if (!plans) return new PlanAuditor(() => passPlan(host.config, worldSize, pass));
  return new PlanAuditor(
    () => plans.plan(pass, worldSize),
    () => plans.ready(pass),
  );
}
