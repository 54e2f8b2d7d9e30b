/**
 * The coordinator core's contract: what it is fed (inputs, each with the time) and what it asks
 * for (effects). The core is a pure state machine; the socket shell (`Coordinator`) and the
 * simulator (`test/sim`) both translate their world into these inputs and carry out these effects.
 */
import type { ClientMessage, CollectiveOpName, ServerMessage } from '../shared/protocol.ts';
import type { JournalRecord, JournalState } from './journalRecords.ts';
import type { EpochAudit, EpochEvent, RunReport } from './report.ts';

/** A connection as the core knows it: a number the shell chose, never reused within one core. */
export type PeerId = number;

/** A timer the core armed; the shell feeds `{ kind: 'timer', id }` back when it is due. */
export type TimerId = number;

export const InputKind = {
  /** The shell is listening: start the rendezvous, or continue from the restored journal. */
  Start: 'start',
  /** A WebSocket connection was accepted (the token, if any, already checked at the upgrade). */
  Connected: 'connected',
  /** A frame from a peer, already parsed and validated against the wire's schema. */
  Frame: 'frame',
  /** A frame the edge refused (not JSON, not a known message, binary, too large). */
  Refused: 'refused',
  /** A pong (or any sign of life that is not a frame). */
  Pong: 'pong',
  /** The connection is gone, for whatever reason (the peer closed it, or we did). */
  Closed: 'closed',
  /** A timer armed by an `armTimer` effect fell due. */
  Timer: 'timer',
  /** Spare time: the core may do a slice of background work (the plan audit). */
  Idle: 'idle',
  /** Appending to the journal failed (disk full, file too large, I/O error): stop cleanly. */
  JournalFailed: 'journalFailed',
  /** The host is closing the coordinator (close()). */
  Shutdown: 'shutdown',
} as const;

export type CoreInput =
  | { readonly kind: typeof InputKind.Start; readonly now: number }
  | { readonly kind: typeof InputKind.Connected; readonly now: number; readonly peer: PeerId }
  | { readonly kind: typeof InputKind.Frame; readonly now: number; readonly peer: PeerId; readonly message: ClientMessage }
  | { readonly kind: typeof InputKind.Refused; readonly now: number; readonly peer: PeerId; readonly closeCode: number; readonly reason: string }
  | { readonly kind: typeof InputKind.Pong; readonly now: number; readonly peer: PeerId }
  | { readonly kind: typeof InputKind.Closed; readonly now: number; readonly peer: PeerId; readonly code: number }
  | { readonly kind: typeof InputKind.Timer; readonly now: number; readonly id: TimerId }
  | { readonly kind: typeof InputKind.Idle; readonly now: number }
  | { readonly kind: typeof InputKind.JournalFailed; readonly now: number; readonly error: string }
  | { readonly kind: typeof InputKind.Shutdown; readonly now: number; readonly reason: string };

/** What the coordinator tells its host (the launcher, the CLI, a dashboard) as the run goes. */
export interface CoordinatorEvents {
  listening: [{ host: string; port: number }];
  joined: [{ rank: number; pid: number; workerId: string; rejoined: boolean; standby: boolean }];
  refused: [{ reason: string; closeCode: number }];
  epochStart: [{ epoch: number; worldSize: number; numSamples: number; ranks: Array<{ rank: number; pid: number | null }> }];
  progress: [{ epoch: number; rank: number; acknowledged: number; numSamples: number; consumed: number; planned: number }];
  event: [EpochEvent & { epoch: number | null }];
  epochAudit: [EpochAudit];
  done: [RunReport];
}

/**
 * Measurements for the host's metrics, told like events but not among CoordinatorEvents: the
 * shell feeds them to its metrics and emits nothing (the launcher's bridge carries only events).
 */
export interface CoreMeasurements {
  /** A collective settled: its op, seconds since its first call (the core's clock), and whether it succeeded. */
  collectiveSettled: [{ op: CollectiveOpName; seconds: number; ok: boolean }];
}

/** Everything the core tells its host: the events and the measurements. */
export type CoreEventMap = CoordinatorEvents & CoreMeasurements;

/** One event (or measurement) for the host, as a tagged value (the shell emits the events on its EventEmitter). */
export type CoreEvent = { [K in keyof CoreEventMap]: { readonly name: K; readonly payload: CoreEventMap[K][0] } }[keyof CoreEventMap];

export const EffectKind = {
  /** One frame to these peers (encode once, send to each that is still open). */
  Send: 'send',
  /** A heartbeat ping to a peer (ws ping). */
  Ping: 'ping',
  /** Close a peer with a code and reason (a `closed` input follows when it is gone). */
  Close: 'close',
  /** Drop a peer without a close handshake: it went silent (a `closed` input follows). */
  Terminate: 'terminate',
  /** Append a record to the journal, durably, before any later effect is carried out. */
  Journal: 'journal',
  /** Rewrite the journal as a snapshot of this state. */
  Compact: 'compact',
  /** Tell the host something happened. */
  Emit: 'emit',
  ArmTimer: 'armTimer',
  CancelTimer: 'cancelTimer',
  /** The run has ended and every worker has left: the host may close the server. */
  Drained: 'drained',
} as const;

export type CoreEffect =
  | { readonly kind: typeof EffectKind.Send; readonly peers: readonly PeerId[]; readonly message: ServerMessage }
  | { readonly kind: typeof EffectKind.Ping; readonly peer: PeerId }
  | { readonly kind: typeof EffectKind.Close; readonly peer: PeerId; readonly code: number; readonly reason: string }
  | { readonly kind: typeof EffectKind.Terminate; readonly peer: PeerId }
  | { readonly kind: typeof EffectKind.Journal; readonly record: JournalRecord }
  | { readonly kind: typeof EffectKind.Compact; readonly state: JournalState }
  | { readonly kind: typeof EffectKind.Emit; readonly event: CoreEvent }
  | { readonly kind: typeof EffectKind.ArmTimer; readonly id: TimerId; readonly atMs: number }
  | { readonly kind: typeof EffectKind.CancelTimer; readonly id: TimerId }
  | { readonly kind: typeof EffectKind.Drained };

/**
 * Known bugs the simulator's own test plants to prove it can catch them. Never set outside tests.
 * - `acceptForeignAck`: an ack for a unit the sender does not own is applied.
 * - `restartDropsLastAcks`: a restart ignores the last flushed acks record of the journal.
 * - `reassignForgetsInflight`: a death's in-flight batch is not counted as redelivered.
 * - `countZombieAck`: an ack from a connection already declared dead is applied.
 */
export const PlantedBug = {
  AcceptForeignAck: 'acceptForeignAck',
  RestartDropsLastAcks: 'restartDropsLastAcks',
  ReassignForgetsInflight: 'reassignForgetsInflight',
  CountZombieAck: 'countZombieAck',
  QuarantineWholeBatch: 'quarantineWholeBatch',
  RewindUncounted: 'rewindUncounted',
  RenumberLeavesUnits: 'renumberLeavesUnits',
} as const;
export type PlantedBugName = (typeof PlantedBug)[keyof typeof PlantedBug];

/** The core's state as the simulator's invariants read it (copies; changing them changes nothing). */
export interface CoreView {
  readonly phase: 'rendezvous' | 'running' | 'reporting' | 'between' | 'finished' | 'aborted';
  /** The epoch in progress (running or reporting), if any. */
  readonly epoch:
    | {
        readonly epoch: number;
        readonly worldSize: number;
        readonly numSamples: number;
        readonly units: readonly import('./epochLedger.ts').LedgerUnit[];
        readonly consumed: number;
        readonly redelivered: number;
        /** Ranks taking part in the epoch. */
        readonly active: readonly number[];
      }
    | undefined;
  readonly audits: readonly EpochAudit[];
  /** The last audited epoch's units: a worker lost in it may still report an overrun against them. */
  readonly recent: { readonly epoch: number; readonly units: readonly import('./epochLedger.ts').LedgerUnit[] } | undefined;
  /** Which connection holds which rank now. */
  readonly peers: ReadonlyMap<PeerId, { readonly rank: number | null; readonly workerId: string | null }>;
  /** rank -> workerId of every member, live or not (what the journal records). */
  readonly members: ReadonlyMap<number, string>;
  /** The final report, once the run ended. */
  readonly report: RunReport | undefined;
}
