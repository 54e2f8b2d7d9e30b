/**
 * The journal replay check's comparison: a journal replayed against the core's state in memory.
 * Cursors and counts may lag in the journal (unflushed acks, coalesced late acks), never lead,
 * and not at all once an epoch's end is announced (`strict`).
 */
import type { LedgerUnit } from '../../coordinator/epochLedger.ts';
import type { JournalState } from '../../coordinator/journalRecords.ts';

/** Where the replayed state differs from memory beyond what the journal may lag, if it does. */
export function compareStates(replayed: JournalState, memory: JournalState, strict: boolean): string | undefined {
  const members = (s: JournalState) => JSON.stringify([...s.members].sort((a, b) => a[0] - b[0]));
  if (members(replayed) !== members(memory)) return `members ${members(replayed)} in the journal, ${members(memory)} in memory`;
  if (replayed.audits.length !== memory.audits.length) return `${replayed.audits.length} audits in the journal, ${memory.audits.length} in memory`;
  for (let i = 0; i < memory.audits.length; i++) {
    const [a, b] = [JSON.stringify(replayed.audits[i]), JSON.stringify(memory.audits[i])];
    if (a !== b) {
      let at = 0;
      while (a[at] === b[at]) at++;
      return `audit of epoch ${memory.audits[i].epoch} differs at ${at}: journal …${a.slice(Math.max(0, at - 60), at + 60)} memory …${b.slice(Math.max(0, at - 60), at + 60)}`;
    }
  }
  const a = replayed.current;
  const b = memory.current;
  if (!a || !b) return a === b ? undefined : `current epoch ${a?.epoch} in the journal, ${b?.epoch} in memory`;
  if (a.epoch !== b.epoch || a.worldSize !== b.worldSize || a.numSamples !== b.numSamples) return `epoch ${a.epoch}/${a.worldSize} in the journal, ${b.epoch}/${b.worldSize} in memory`;
  // A lost worker's late acks are counted at once and journaled with the next flush: the journal may lag, never lead.
  if (a.redelivered > b.redelivered || (strict && a.redelivered !== b.redelivered)) return `epoch ${a.epoch}: redelivered ${a.redelivered} in the journal, ${b.redelivered} in memory${strict ? ' at the epoch end' : ''}`;
  if (a.units.length !== b.units.length) return `epoch ${a.epoch}: ${a.units.length} units in the journal, ${b.units.length} in memory`;
  const byId = new Map(a.units.map((u) => [u.id, u]));
  for (const u of b.units) {
    const j = byId.get(u.id);
    if (!j) return `unit ${u.id} is not in the journal`;
    if (j.origin !== u.origin || j.start !== u.start || j.end !== u.end || j.owner !== u.owner) {
      return `unit ${u.id}: journal origin ${j.origin} [${j.start}, ${j.end}) owner ${j.owner}, memory origin ${u.origin} [${u.start}, ${u.end}) owner ${u.owner}`;
    }
    if (j.cursor > u.cursor || (strict && j.cursor !== u.cursor)) return `unit ${u.id}: cursor ${j.cursor} in the journal, ${u.cursor} in memory${strict ? ' at the epoch end' : ''}`;
    if (!redoneMatches(j.redone, u.redone, strict)) return `unit ${u.id}: redone ${JSON.stringify(j.redone)} in the journal, ${JSON.stringify(u.redone)} in memory`;
  }
  return undefined;
}

/** The same handed-over ranges; what was counted of each may lag in the journal (late acks, coalesced), never lead, and not at all at the epoch end. */
function redoneMatches(journaled: LedgerUnit['redone'], memory: LedgerUnit['redone'], strict: boolean): boolean {
  const j = journaled ?? [];
  const m = memory ?? [];
  if (j.length !== m.length) return false;
  return j.every((r, i) => r.from === m[i].from && r.to === m[i].to && r.worker === m[i].worker && (strict ? r.counted === m[i].counted : r.counted <= m[i].counted));
}
