/**
 * The next training epoch's audit, derived in the coordinator's idle turns before it begins
 * (coordinator/auditAhead.ts): during the rendezvous for the first, once the running epoch's own
 * digests are done for the next; dropped when the epoch begins at another world size.
 */
import { describe, expect, it } from 'vitest';
import type { AuditPlans } from '../coordinator/planAuditor.ts';
import { EffectKind, InputKind, type PeerId } from '../coordinator/coreTypes.ts';
import type { EpochAudit } from '../coordinator/report.ts';
import { hashIndices } from '../shared/indexHash.ts';
import { planFor } from '../shared/runPlan.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { CoreDriver } from './support/coreDriver.ts';
import { runConfig } from './support/runConfig.ts';

/** AuditPlans that derive as asked and remember each (pass, world size) asked for. */
function recordingPlans(config: RunConfig): AuditPlans & { asked: string[] } {
  const asked: string[] = [];
  return { asked, plan: (pass, worldSize) => (asked.push(`${pass}@${worldSize}`), planFor(config, worldSize, pass)), ready: () => true };
}

/** Idle turns as the shell gives them, until the core wants none. */
function idleUntilDone(driver: CoreDriver): number {
  let turns = 0;
  while (driver.core.wantsIdle) {
    driver.core.handle({ kind: InputKind.Idle, now: driver.now });
    turns++;
  }
  return turns;
}

function audits(driver: CoreDriver): EpochAudit[] {
  return driver.effects.flatMap((e) => (e.kind === EffectKind.Emit && e.event.name === 'epochAudit' ? [e.event.payload] : []));
}

function finishEpoch(driver: CoreDriver, peers: readonly PeerId[], epoch: number): void {
  for (const peer of peers) {
    const frame = driver.framesTo(peer).filter((m) => m.t === 'epoch' && m.epoch === epoch).at(-1);
    if (frame?.t !== 'epoch') throw new Error(`no epoch ${epoch} frame for peer ${peer}`);
    for (const unit of frame.units) driver.send(peer, { t: 'ack', epoch, unit: unit.id, cursor: unit.end, inflight: null });
  }
}

describe('the audit derived ahead', () => {
  it('derives the first epoch\'s digests while the workers connect, and the next one\'s once the running epoch\'s are done', () => {
    const config = runConfig({ length: 200_003, batchSize: 64, epochs: 3, seed: '9' });
    const plans = recordingPlans(config);
    const driver = new CoreDriver({ config, range: { min: 2, max: 2 }, plans });
    expect(idleUntilDone(driver)).toBeGreaterThan(1);
    expect(plans.asked).toEqual(['0@2']);
    const peers = [driver.join('a'), driver.join('b')];
    // The epoch begins with its audit done: no turn wanted for it, the next one's asked for.
    idleUntilDone(driver);
    expect(plans.asked).toEqual(['0@2', '1@2']);
    finishEpoch(driver, peers, 0);
    for (const peer of peers) driver.send(peer, { t: 'epochReport', epoch: 0, samples: 100_002, digest: hashIndices(planFor(config, 2, 0).shard(peers.indexOf(peer))), waitMs: 0 });
    expect(audits(driver)).toMatchObject([{ epoch: 0, ok: true }]);
    idleUntilDone(driver);
    // The last epoch has nothing after it to derive.
    expect(plans.asked).toEqual(['0@2', '1@2', '2@2']);
  });

  it('drops what it derived for another world size: an elastic group that begins smaller audits its own', () => {
    const config = runConfig({ length: 50_000, batchSize: 64, epochs: 1, seed: '3' });
    const plans = recordingPlans(config);
    const driver = new CoreDriver({ config, range: { min: 1, max: 3 }, plans, settings: { settleMs: 1 } });
    idleUntilDone(driver);
    expect(plans.asked).toEqual(['0@3']);
    const peer = driver.join('a');
    driver.advance(5);
    idleUntilDone(driver);
    expect(plans.asked).toEqual(['0@3', '0@1']);
    finishEpoch(driver, [peer], 0);
    driver.send(peer, { t: 'epochReport', epoch: 0, samples: 50_000, digest: hashIndices(planFor(config, 1, 0).shard(0)), waitMs: 0 });
    expect(audits(driver)).toMatchObject([{ epoch: 0, ok: true }]);
  });
});
