/**
 * Evaluation passes in the coordinator's core: planned after every K epochs with OpenPCDet's
 * sampler, results kept one per dataset index (duplicates dropped and counted), acks refused for
 * positions whose results never came, a dead rank's tail evaluated by the living, and a
 * restarted coordinator evaluating the interrupted pass again. Whole runs under faults: test/sim.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { EffectKind, type CoreEffect } from '../coordinator/coreTypes.ts';
import type { JournalState } from '../coordinator/journalRecords.ts';
import type { EpochAudit, RunReport } from '../coordinator/report.ts';
import { evalPassAfter, passPlan } from '../shared/evalPass.ts';
import { CloseCode, type RunConfig, type ServerMessage, type WorkUnit } from '../shared/protocol.ts';
import { IndexHash } from '../shared/indexHash.ts';
import { CoreDriver, runConfig } from './support/coreDriver.ts';

/** What a worker's evalStep returns for a dataset index, here. */
const resultOf = (index: number) => ({ index, score: (index * 7919) % 1000 });

/** The sha256 the report must carry: every index's result in dataset order, `,`-joined JSON. */
function expectedSha(length: number): string {
  return createHash('sha256')
    .update(Array.from({ length }, (_, i) => JSON.stringify(resultOf(i))).join(','))
    .digest('hex');
}

const sha = '0'.repeat(16);

/** A run of one epoch of 10 samples, then an evaluation pass over 7 samples, for 2 ranks. */
function evalRun(evalSettings: Partial<NonNullable<RunConfig['eval']>> = {}): { driver: CoreDriver; config: RunConfig; a: number; b: number } {
  const config = runConfig({ length: 10, batchSize: 5, epochs: 1, eval: { every: 1, length: 7, pad: true, ...evalSettings } });
  const driver = new CoreDriver({ config });
  return { driver, config, a: driver.join('worker-a'), b: driver.join('worker-b') };
}

function lastEpochFrame(driver: CoreDriver, peer: number): Extract<ServerMessage, { t: 'epoch' }> {
  const frames = driver.framesTo(peer).filter((m): m is Extract<ServerMessage, { t: 'epoch' }> => m.t === 'epoch');
  return frames[frames.length - 1];
}

/** Samples each peer acknowledged in each pass: what its epoch report must claim at least. */
const acknowledged = new Map<string, number>();

/** Every unit of this peer's in one batch: results first (for an evaluation pass), then the ack. */
function finishUnits(driver: CoreDriver, config: RunConfig, peer: number, pass: number, units: readonly WorkUnit[], worldSize = 2): void {
  const plan = passPlan(config, worldSize, pass);
  const key = `${peer}:${pass}`;
  for (const unit of units) {
    acknowledged.set(key, (acknowledged.get(key) ?? 0) + Math.max(0, unit.end - unit.cursor));
    if (unit.cursor >= unit.end) continue;
    driver.send(peer, { t: 'ack', epoch: pass, unit: unit.id, cursor: unit.cursor, inflight: { unit: unit.id, end: unit.end } });
    if (pass < 0) {
      const values = Array.from({ length: unit.end - unit.cursor }, (_, k) => resultOf(plan.at(unit.origin, unit.cursor + k)));
      driver.send(peer, { t: 'results', epoch: pass, unit: unit.id, start: unit.cursor, values });
    }
    driver.send(peer, { t: 'ack', epoch: pass, unit: unit.id, cursor: unit.end, inflight: null });
  }
}

/** Each peer's epoch report; a peer that consumed its own shard (the i-th peer holds rank i) reports its plan digest. */
function report(driver: CoreDriver, peers: number[], pass: number, config?: RunConfig): void {
  for (const [rank, peer] of peers.entries()) {
    const digest = new IndexHash();
    if (config) for (const index of passPlan(config, peers.length, pass).shard(rank)) digest.add(index);
    driver.send(peer, { t: 'epochReport', epoch: pass, samples: acknowledged.get(`${peer}:${pass}`) ?? 0, digest: config ? digest.hex() : sha, waitMs: 0 });
  }
}

function trainEpochZero(driver: CoreDriver, config: RunConfig, a: number, b: number): void {
  finishUnits(driver, config, a, 0, lastEpochFrame(driver, a).units);
  finishUnits(driver, config, b, 0, lastEpochFrame(driver, b).units);
  report(driver, [a, b], 0, config);
}

function audits(driver: CoreDriver): readonly EpochAudit[] {
  return driver.core.view().audits;
}

function doneReport(effects: readonly CoreEffect[]): RunReport | undefined {
  for (const e of effects) if (e.kind === EffectKind.Emit && e.event.name === 'done') return e.event.payload;
  return undefined;
}

describe('evaluation passes in the core', () => {
  it('runs an evaluation pass after the epoch, over its own plan, and reports every result merged by index', () => {
    const { driver, config, a, b } = evalRun();
    trainEpochZero(driver, config, a, b);
    const pass = evalPassAfter(0);
    const evalFrame = lastEpochFrame(driver, a);
    // OpenPCDet's padded plan over 7 samples on 2 ranks: 4 each, index 0 again at the end of rank 1's shard.
    expect(evalFrame).toMatchObject({ t: 'epoch', epoch: pass, worldSize: 2 });
    expect(evalFrame.units.map((u) => u.end - u.start)).toEqual([4]);
    finishUnits(driver, config, a, pass, evalFrame.units);
    finishUnits(driver, config, b, pass, lastEpochFrame(driver, b).units);
    report(driver, [a, b], pass, config);
    const evalAudit = audits(driver).find((x) => x.epoch === pass)!;
    expect(evalAudit.eval).toEqual({ afterEpoch: 0, length: 7, evaluated: 7, duplicatesDropped: 1, missing: 0, sha256: expectedSha(7) });
    expect(evalAudit.ok).toBe(true);
    const done = doneReport(driver.effects)!;
    expect(done.ok).toBe(true);
    expect(done.epochs.map((e) => e.epoch)).toEqual([0]);
    expect(done.eval).toHaveLength(1);
    expect(done.eval[0]).toMatchObject({ afterEpoch: 0, evaluated: 7, missing: 0, ok: true, pass: { epoch: pass } });
  });

  it('evaluates without padding when pad is false: every index once, no duplicates', () => {
    const { driver, config, a, b } = evalRun({ pad: false });
    trainEpochZero(driver, config, a, b);
    const pass = evalPassAfter(0);
    expect(lastEpochFrame(driver, b).units.map((u) => u.end - u.start)).toEqual([3]);
    finishUnits(driver, config, a, pass, lastEpochFrame(driver, a).units);
    finishUnits(driver, config, b, pass, lastEpochFrame(driver, b).units);
    report(driver, [a, b], pass);
    expect(audits(driver).find((x) => x.epoch === pass)!.eval).toMatchObject({ evaluated: 7, duplicatesDropped: 0, missing: 0, sha256: expectedSha(7) });
  });

  it('evaluates after every K-th epoch only', () => {
    const config = runConfig({ length: 4, batchSize: 2, epochs: 4, eval: { every: 2, length: 4, pad: true } });
    const driver = new CoreDriver({ config, range: { min: 1, max: 1 } });
    const a = driver.join('worker-a');
    const passes: number[] = [];
    for (let step = 0; step < 10 && !doneReport(driver.effects); step++) {
      const frame = lastEpochFrame(driver, a);
      passes.push(frame.epoch);
      finishUnits(driver, config, a, frame.epoch, frame.units, 1);
      report(driver, [a], frame.epoch);
    }
    expect(passes).toEqual([0, 1, evalPassAfter(1), 2, 3, evalPassAfter(3)]);
    expect(doneReport(driver.effects)!.eval.map((e) => e.afterEpoch)).toEqual([1, 3]);
  });

  it('refuses an ack for evaluation positions whose results never arrived (4006), so none counts as done without a result', () => {
    const { driver, config, a, b } = evalRun();
    trainEpochZero(driver, config, a, b);
    const pass = evalPassAfter(0);
    const [unit] = lastEpochFrame(driver, a).units;
    driver.send(a, { t: 'ack', epoch: pass, unit: unit.id, cursor: 0, inflight: { unit: unit.id, end: 4 } });
    driver.send(a, { t: 'results', epoch: pass, unit: unit.id, start: 0, values: [resultOf(0), resultOf(2)] });
    driver.send(a, { t: 'ack', epoch: pass, unit: unit.id, cursor: 4, inflight: null });
    expect(driver.closes()).toEqual([{ peer: a, code: CloseCode.OutOfOrder, reason: 'ack for eval after epoch 0 positions without their results: rank 0 offset 2 (dataset index 4)' }]);
    expect(driver.core.view().epoch?.consumed).toBe(0);
  });

  it('refuses results for a unit the sender does not own (4005)', () => {
    const { driver, config, a, b } = evalRun();
    trainEpochZero(driver, config, a, b);
    const pass = evalPassAfter(0);
    const [other] = lastEpochFrame(driver, b).units;
    driver.send(a, { t: 'results', epoch: pass, unit: other.id, start: 0, values: [1] });
    expect(driver.closes()).toEqual([{ peer: a, code: CloseCode.ForeignAck, reason: `results for unit ${other.id} offset 0, which rank 0 does not own` }]);
  });

  it('refuses results in a training epoch', () => {
    const { driver, a } = evalRun();
    driver.send(a, { t: 'results', epoch: 0, unit: 0, start: 0, values: [1] });
    expect(driver.closes()).toEqual([{ peer: a, code: CloseCode.OutOfOrder, reason: 'results for epoch 0, which is not an evaluation pass' }]);
  });

  it('hands a dead rank its unacknowledged evaluation positions to the living, counts its delivered results as duplicates, and still merges every index', () => {
    const { driver, config, a, b } = evalRun({ length: 20 });
    trainEpochZero(driver, config, a, b);
    const pass = evalPassAfter(0);
    const plan = passPlan(config, 2, pass);
    const [unitA] = lastEpochFrame(driver, a).units;
    // Rank 0 evaluates offsets [0, 4), sends their results and dies before its ack.
    driver.send(a, { t: 'ack', epoch: pass, unit: unitA.id, cursor: 0, inflight: { unit: unitA.id, end: 4 } });
    driver.send(a, { t: 'results', epoch: pass, unit: unitA.id, start: 0, values: [0, 1, 2, 3].map((k) => resultOf(plan.at(0, k))) });
    driver.closed(a);
    const assigned = driver.framesTo(b).filter((m): m is Extract<ServerMessage, { t: 'assign' }> => m.t === 'assign' && m.epoch === pass);
    expect(assigned).toHaveLength(1);
    finishUnits(driver, config, b, pass, [...lastEpochFrame(driver, b).units, ...assigned[0].units]);
    report(driver, [b], pass);
    const evalAudit = audits(driver).find((x) => x.epoch === pass)!;
    expect(evalAudit.eval).toEqual({ afterEpoch: 0, length: 20, evaluated: 20, duplicatesDropped: 4, missing: 0, sha256: expectedSha(20) });
    expect(evalAudit.ok).toBe(true);
  });

  it('a coordinator restarted during an evaluation pass starts it over: its results were not journaled', () => {
    const { driver, config, a, b } = evalRun();
    trainEpochZero(driver, config, a, b);
    const pass = evalPassAfter(0);
    finishUnits(driver, config, a, pass, lastEpochFrame(driver, a).units);
    const journaled: JournalState = driver.core.snapshot();
    expect(journaled.current?.units.find((u) => u.origin === 0)?.cursor).toBe(4);
    const restarted = new CoreDriver({ config, restore: journaled, settings: { rejoinTimeoutMs: 1000 } });
    const a2 = restarted.join('worker-a', 0);
    const b2 = restarted.join('worker-b', 1);
    const resent = lastEpochFrame(restarted, a2);
    expect(resent).toMatchObject({ epoch: pass });
    expect(resent.units.map((u) => u.cursor)).toEqual([0]);
    finishUnits(restarted, config, a2, pass, resent.units);
    finishUnits(restarted, config, b2, pass, lastEpochFrame(restarted, b2).units);
    report(restarted, [a2, b2], pass);
    const evalAudit = restarted.core.view().audits.find((x) => x.epoch === pass)!;
    expect(evalAudit.eval).toMatchObject({ evaluated: 7, missing: 0, sha256: expectedSha(7) });
    expect(evalAudit.events.some((e) => e.type === 'restart' && /evaluated again from the start/.test(e.detail))).toBe(true);
  });

  it('a coordinator restarted after every evaluation position was acknowledged keeps the journaled summary: the workers, already done, only report again', () => {
    const { driver, config, a, b } = evalRun();
    trainEpochZero(driver, config, a, b);
    const pass = evalPassAfter(0);
    finishUnits(driver, config, a, pass, lastEpochFrame(driver, a).units);
    finishUnits(driver, config, b, pass, lastEpochFrame(driver, b).units);
    // epochEnd went out; the crash comes before the reports (and the audit).
    const journaled: JournalState = driver.core.snapshot();
    expect(journaled.current?.eval).toEqual({ afterEpoch: 0, length: 7, evaluated: 7, duplicatesDropped: 1, missing: 0, sha256: expectedSha(7) });
    const restarted = new CoreDriver({ config, restore: journaled, settings: { rejoinTimeoutMs: 1000 } });
    const a2 = restarted.join('worker-a', 0);
    const b2 = restarted.join('worker-b', 1);
    expect(restarted.framesTo(a2).filter((m) => m.t === 'epochEnd')).toEqual([expect.objectContaining({ epoch: pass })]);
    acknowledged.set(`${a2}:${pass}`, 4);
    acknowledged.set(`${b2}:${pass}`, 4);
    report(restarted, [a2, b2], pass, config);
    const evalAudit = restarted.core.view().audits.find((x) => x.epoch === pass)!;
    expect(evalAudit.eval).toEqual({ afterEpoch: 0, length: 7, evaluated: 7, duplicatesDropped: 1, missing: 0, sha256: expectedSha(7) });
    expect(evalAudit.ok).toBe(true);
  });
});
