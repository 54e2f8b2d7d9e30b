/**
 * Rendezvous: who gets which rank. A pure state machine, no sockets; the server feeds it
 * hellos and departures and acts on its decisions.
 */
import { CloseCode, PROTOCOL_VERSION, type DatasetIdentity } from '../shared/protocol.ts';

export interface JoinRequest {
  readonly workerId: string;
  readonly version: number;
  /** A claimed rank (torchrun's RANK); absent takes the lowest free one. */
  readonly rank?: number;
  /** The dataset length the worker sees, when it says. */
  readonly length?: number;
  /** The world size the worker was started for (torchrun's WORLD_SIZE), when it says. */
  readonly worldSize?: number;
  /** The dataset the worker loaded, when it says. */
  readonly dataset?: DatasetIdentity;
}

export type JoinDecision =
  | { readonly ok: true; readonly rank: number; readonly rejoined: boolean }
  | { readonly ok: false; readonly closeCode: number; readonly reason: string };

export interface RendezvousOptions {
  /** The most ranks the group takes (an elastic group's MAX). */
  readonly worldSize: number;
  /** An elastic group's MIN; a worker's WORLD_SIZE may be anything in MIN..MAX. Default worldSize. */
  readonly minWorldSize?: number;
  readonly length: number;
  /** The coordinator's dataset: a worker that names another is refused. Absent: lengths only. */
  readonly dataset?: DatasetIdentity;
  readonly version?: number;
}

export class Rendezvous {
  readonly worldSize: number;
  private readonly minWorldSize: number;
  private readonly length: number;
  private readonly dataset: DatasetIdentity | undefined;
  private readonly version: number;
  /** rank -> workerId of its holder, live or not */
  private readonly holders = new Map<number, string>();
  private holdersChanged = 0;
  /** The same, the other way round: a join looks its worker up without a scan (1,024 joins stay linear). */
  private readonly rankByWorker = new Map<string, number>();
  private readonly live = new Set<number>();
  /** Every rank below it is held: where the search for the lowest free rank starts. */
  private freeFrom = 0;

  constructor(options: RendezvousOptions) {
    this.worldSize = options.worldSize;
    this.minWorldSize = options.minWorldSize ?? options.worldSize;
    this.length = options.length;
    this.dataset = options.dataset;
    this.version = options.version ?? PROTOCOL_VERSION;
  }

  join(request: JoinRequest): JoinDecision {
    if (request.version !== this.version) {
      return refuse(CloseCode.VersionMismatch, `protocol version ${request.version} is not supported; the coordinator speaks ${this.version}`);
    }
    if (request.length !== undefined && request.length !== this.length) {
      return refuse(CloseCode.ConfigMismatch, `dataset length ${request.length} differs from the coordinator's ${this.length}`);
    }
    const theirs = request.dataset;
    if (theirs && this.dataset && theirs.fingerprint !== this.dataset.fingerprint) {
      // Same length, other data: the audit would hold while every sample was the wrong one.
      return refuse(CloseCode.ConfigMismatch, `dataset ${identityText(theirs)} differs from the coordinator's ${identityText(this.dataset)}`);
    }
    if (request.worldSize !== undefined && (request.worldSize < this.minWorldSize || request.worldSize > this.worldSize)) {
      const size = this.minWorldSize === this.worldSize ? `${this.worldSize}` : `${this.minWorldSize}..${this.worldSize}`;
      return refuse(CloseCode.ConfigMismatch, `WORLD_SIZE ${request.worldSize} differs from the coordinator's world size ${size}`);
    }
    // A worker that comes back (reconnect, coordinator restart) gets its rank again.
    const previous = this.rankOf(request.workerId);
    if (previous !== undefined) {
      if (request.rank !== undefined && request.rank !== previous) {
        return refuse(CloseCode.RankTaken, `worker ${request.workerId} holds rank ${previous}, not ${request.rank}`);
      }
      if (this.live.has(previous)) return refuse(CloseCode.OutOfOrder, `worker ${request.workerId} is already connected as rank ${previous}`);
      this.live.add(previous);
      return { ok: true, rank: previous, rejoined: true };
    }
    if (request.rank !== undefined) {
      if (request.rank >= this.worldSize) {
        return refuse(CloseCode.GroupFull, `rank ${request.rank} is beyond the world size ${this.worldSize} (ranks 0..${this.worldSize - 1})`);
      }
      // A rank whose holder is gone (not connected) may be taken over by a replacement.
      if (this.holders.has(request.rank) && this.live.has(request.rank)) {
        return refuse(CloseCode.RankTaken, `rank ${request.rank} is already taken by worker ${this.holders.get(request.rank)}`);
      }
      return this.admit(request.rank, request.workerId);
    }
    const free = this.lowestFreeRank();
    if (free === undefined) return refuse(CloseCode.GroupFull, `the group is full: all ${this.worldSize} ranks are taken`);
    return this.admit(free, request.workerId);
  }

  /** The holder of `rank` went away; it keeps the rank (it may come back) unless released. */
  disconnected(rank: number): void {
    this.live.delete(rank);
  }

  /** Frees a rank for anyone to claim (a clean leave, or a dead worker to be replaced). */
  release(rank: number): void {
    this.live.delete(rank);
    this.unhold(rank);
  }

  /** Every rank up to the world size is held. */
  get complete(): boolean {
    return this.holders.size === this.worldSize;
  }

  /** Holders known from a journal: they may rejoin by worker id, none is live yet. */
  restore(holders: ReadonlyMap<number, string>): void {
    for (const [rank, workerId] of holders) this.hold(rank, workerId);
  }

  /** Bumped whenever a rank changes holder: who holds what is unchanged while it is. */
  get holdersVersion(): number {
    return this.holdersChanged;
  }

  holderEntries(): Array<[number, string]> {
    return [...this.holders].sort((a, b) => a[0] - b[0]);
  }

  /** Moves a holder to another (free) rank: elastic worlds keep ranks contiguous. */
  move(from: number, to: number): void {
    const holder = this.holders.get(from);
    if (holder === undefined || this.holders.has(to)) throw new Error(`cannot move rank ${from} to ${to}`);
    this.unhold(from);
    this.hold(to, holder);
    if (this.live.delete(from)) this.live.add(to);
  }

  isLive(rank: number): boolean {
    return this.live.has(rank);
  }

  liveRanks(): number[] {
    return [...this.live].sort((a, b) => a - b);
  }

  /** How many ranks are live: liveRanks().length without sorting them (asked at every join). */
  get liveCount(): number {
    return this.live.size;
  }

  /** The worker holding `rank` (live or not), if any. */
  holderOf(rank: number): string | undefined {
    return this.holders.get(rank);
  }

  rankOf(workerId: string): number | undefined {
    return this.rankByWorker.get(workerId);
  }

  freeRanks(): number[] {
    const free: number[] = [];
    for (let rank = 0; rank < this.worldSize; rank++) if (!this.holders.has(rank)) free.push(rank);
    return free;
  }

  /** Ranks nobody holds yet: what a rendezvous timeout reports. */
  missingRanks(): number[] {
    return this.freeRanks();
  }

  private admit(rank: number, workerId: string): JoinDecision {
    this.hold(rank, workerId);
    this.live.add(rank);
    return { ok: true, rank, rejoined: false };
  }

  private lowestFreeRank(): number | undefined {
    while (this.freeFrom < this.worldSize && this.holders.has(this.freeFrom)) this.freeFrom++;
    return this.freeFrom < this.worldSize ? this.freeFrom : undefined;
  }

  /** `workerId` holds `rank` now; a previous holder of the rank (taken over) no longer holds it. */
  private hold(rank: number, workerId: string): void {
    const previous = this.holders.get(rank);
    if (previous !== undefined && this.rankByWorker.get(previous) === rank) this.rankByWorker.delete(previous);
    if (previous !== workerId) this.holdersChanged++;
    this.holders.set(rank, workerId);
    // join() admits only a worker that holds no rank; were a journal to name one twice, its first rank counts.
    if (!this.rankByWorker.has(workerId)) this.rankByWorker.set(workerId, rank);
  }

  private unhold(rank: number): void {
    const holder = this.holders.get(rank);
    if (holder === undefined) return;
    this.holders.delete(rank);
    this.holdersChanged++;
    if (this.rankByWorker.get(holder) === rank) this.rankByWorker.delete(holder);
    this.freeFrom = Math.min(this.freeFrom, rank);
  }
}

/** A dataset in a refusal: what it is and the start of its fingerprint (a close reason holds 123 bytes). */
function identityText(dataset: DatasetIdentity): string {
  const fingerprint = dataset.fingerprint.length > 19 ? `${dataset.fingerprint.slice(0, 19)}…` : dataset.fingerprint;
  return dataset.description === fingerprint ? fingerprint : `${dataset.description} ${fingerprint}`;
}

function refuse(closeCode: number, reason: string): JoinDecision {
  return { ok: false, closeCode, reason };
}
