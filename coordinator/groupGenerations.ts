/**
 * Group generations: the members of the running epoch's collectives, as one numbered group.
 * When they change mid-epoch (a member dies or leaves, a replacement takes over a rank) a new
 * generation begins: pending collectives fail with GroupChanged, numbering restarts at 0, an
 * elastic group renumbers its members to 0..W'-1 (keeping ranks where it can, their units going
 * with them), and every member is told its rank and the new size in a `generation` frame.
 * A change at an epoch's start (standbys admitted, ranks compacted) begins one too, carried by
 * the epoch frames, and so does a coordinator restarted from its journal (the numbering died with
 * the old process) once its members are back. The unacknowledged positions were already re-planned by the failure policy
 * (the dead rank's tail split over the survivors). Part of GroupCore; pure.
 */
import { FailurePolicy } from './options.ts';
import type { MemberSet } from './epochState.ts';
import type { GroupState } from './groupState.ts';

export class GroupGenerations {
  /** Who the current generation's members are (rank:workerId, ascending); undefined before the first. */
  private key: string | undefined;
  /** The last members key built, and the state it was built from. */
  private built: { active: MemberSet | undefined; activeVersion: number | undefined; holders: number; key: string } | undefined;

  constructor(private readonly group: GroupState) {}

  /**
   * After every input: if the running epoch's members changed, a new generation begins now.
   * `why` is what changed, as the part that saw it said (a death, a replacement).
   */
  check(): void {
    const group = this.group;
    if (!group.current || (group.phase !== 'running' && group.phase !== 'reporting')) return;
    // After a restart, the members come back one by one: one generation once they are all here.
    if (group.rejoinTimer !== undefined) return;
    const key = this.membersKey();
    if (key === this.key && group.regroupDue === undefined) return;
    if (this.key === undefined && group.regroupDue === undefined) {
      this.key = key;
      return;
    }
    const why = group.regroupDue ?? group.generationReason ?? 'the members changed';
    group.generationReason = undefined;
    group.regroupDue = undefined;
    // Pending collectives fail first, answered under the ranks they were called with.
    const generation = group.collectives.generation + 1;
    group.collectives.newGeneration(generation, why);
    const moves = this.renumber();
    this.key = this.membersKey();
    const members = this.members();
    for (const rank of members) {
      group.sendTo(rank, { t: 'generation', generation, rank, worldSize: members.length, seq: group.collectives.nextSeq, reason: why });
    }
    const renumbered = moves.length ? `; ${moves.map(([from, to]) => `rank ${from} is rank ${to}`).join(', ')}` : '';
    group.recordEvent('generation', null, `generation ${generation}: ${members.length} ${members.length === 1 ? 'rank' : 'ranks'} (${why})${renumbered}`, {
      generation,
      worldSize: members.length,
      reason: why,
      renumbered: moves.map(([from, to]) => ({ from, to })),
    });
  }

  /**
   * An epoch begins with these members: a new generation if they are not the last one's (the
   * epoch frames carry it, so no call is caught by surprise). Before the epoch frames go out.
   */
  atEpochStart(): void {
    const group = this.group;
    const key = this.membersKey();
    const why = group.regroupDue ?? (this.key !== undefined && key !== this.key ? 'other members' : undefined);
    if (why !== undefined) {
      const generation = group.collectives.generation + 1;
      group.collectives.newGeneration(generation, why);
      const size = this.members().length;
      group.recordEvent('generation', null, `generation ${generation}: ${size} ranks at the epoch's start${why === 'other members' ? '' : ` (${why})`}`, { generation, worldSize: size, reason: why, atEpochStart: true });
    }
    group.generationReason = undefined;
    group.regroupDue = undefined;
    this.key = key;
  }

  /** The size of the current generation: the epoch's members. */
  get size(): number {
    return this.members().length;
  }

  private members(): number[] {
    const state = this.group.current;
    return state ? [...state.active].sort((a, b) => a - b) : [];
  }

  /**
   * Who the members are, as rank:workerId pairs. Asked after every input: rebuilt (O(W)) only
   * when the epoch's members or the ranks' holders changed since it was last built.
   */
  private membersKey(): string {
    const active = this.group.current?.active;
    const holders = this.group.rendezvous.holdersVersion;
    const built = this.built;
    if (built && built.active === active && built.activeVersion === active?.version && built.holders === holders) return built.key;
    const rankHolders = new Map(this.group.rendezvous.holderEntries());
    const key = this.members()
      .map((rank) => `${rank}:${rankHolders.get(rank) ?? ''}`)
      .join(',');
    this.built = { active, activeVersion: active?.version, holders, key };
    return key;
  }

  /**
   * An elastic group moves members ranked W' or above into free ranks below W' (lowest first),
   * as the next epoch's compaction would. Not while the epoch's reports come in (they are by
   * rank), and not under --on-failure wait (a free rank waits for its replacement).
   */
  private renumber(): Array<[number, number]> {
    const group = this.group;
    if (!group.isElastic || group.phase !== 'running' || group.settings.onFailure === FailurePolicy.Wait) return [];
    const members = this.members();
    const n = members.length;
    const held = new Set(group.rendezvous.holderEntries().map(([rank]) => rank));
    const holes: number[] = [];
    for (let r = 0; r < n; r++) if (!held.has(r) && !group.waitTimers.has(r)) holes.push(r);
    const moves: Array<[number, number]> = [];
    // A member still reconnecting (after a coordinator restart) keeps its rank: it rejoins by it.
    for (const from of members.filter((r) => r >= n && group.byRank.has(r))) {
      const to = holes.shift();
      if (to === undefined) break;
      group.renumber(from, to);
      moves.push([from, to]);
    }
    if (moves.length) group.journal.units(group.current!.ledger);
    return moves;
  }
}
