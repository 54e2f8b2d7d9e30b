/**
 * What the core journals, as effects: decisions before the frames that announce them, acks
 * coalesced (a flush every journalFlushMs, or before any other record), and a compaction once the
 * file has grown. Pure: the host appends what it is told to.
 */
import type { Scheduler } from '../shared/scheduler.ts';
import { EffectKind, type CoreEffect } from './coreTypes.ts';
import type { EpochLedger } from './epochLedger.ts';
import { journaledAudit, type JournalRecord, type JournalState } from './journalRecords.ts';

/** Journal records between compactions before the next flush rewrites the file. */
const COMPACT_AFTER = 2000;

export interface JournalWriterOptions {
  /** False when the coordinator has no journal file: nothing is emitted. */
  readonly enabled: boolean;
  readonly flushMs: number;
  readonly timers: Scheduler;
  readonly sink: (effect: CoreEffect) => void;
  /** What a compaction writes: the core's state now. */
  readonly snapshot: () => JournalState;
  /** The epoch whose acks are being buffered. */
  readonly ledger: () => EpochLedger | undefined;
  /** Test only (plantedBug restartDropsLastAcks): acks are never journaled. */
  readonly dropAcks?: boolean;
}

export class JournalWriter {
  private readonly pendingAcks = new Map<number, [cursor: number, inflight: number]>();
  /** The ledger changed in a way acks do not say (a lost worker's late acks counted): a units record with the next flush. */
  private pendingUnits = false;
  private lines = 0;
  private flushTimer: unknown;
  /** A write failed: nothing more is journaled (the run stops; the file stays resumable). */
  private broken = false;

  constructor(private readonly options: JournalWriterOptions) {}

  private get active(): boolean {
    return this.options.enabled && !this.broken;
  }

  markBroken(): void {
    this.broken = true;
    this.pendingAcks.clear();
    this.pendingUnits = false;
  }

  write(record: JournalRecord): void {
    if (!this.active) return;
    if (record.k !== 'acks') this.flushAcks();
    this.options.sink({ kind: EffectKind.Journal, record: record.k === 'audit' ? { k: 'audit', audit: journaledAudit(record.audit) } : record });
    this.lines++;
  }

  /** The ledger's units as they are now (after a reassignment, a handover, an overrun). */
  units(ledger: EpochLedger): void {
    // This snapshot holds whatever bufferUnits was waiting to write.
    if (ledger === this.options.ledger()) this.pendingUnits = false;
    this.write({ k: 'units', epoch: ledger.epoch, units: ledger.snapshot(), redelivered: ledger.redelivered, t: this.options.timers.now() });
  }

  compact(): void {
    if (!this.active) return;
    // The snapshot holds every cursor and unit: what was buffered is in it.
    this.pendingAcks.clear();
    this.pendingUnits = false;
    this.options.sink({ kind: EffectKind.Compact, state: this.options.snapshot() });
    this.lines = 0;
  }

  /** A unit's cursor moved: journal it with the next flush. */
  bufferAck(unitId: number): void {
    const unit = this.active ? this.options.ledger()?.unit(unitId) : undefined;
    if (!unit) return;
    this.pendingAcks.set(unitId, [unit.cursor, unit.inflight]);
    this.armFlush();
  }

  /**
   * The units changed by counting, not by a decision a worker hears of (a lost worker's late acks,
   * thousands of them after a stall with small batches): one units record with the next flush,
   * rather than one per ack. A crash before it loses those counts, as it loses buffered acks.
   */
  bufferUnits(): void {
    if (!this.active || !this.options.ledger()) return;
    this.pendingUnits = true;
    this.armFlush();
  }

  private armFlush(): void {
    if (this.flushTimer !== undefined) return;
    this.flushTimer = this.options.timers.setTimeout(() => {
      this.flushTimer = undefined;
      this.flushAcks();
    }, this.options.flushMs);
  }

  flushAcks(): void {
    const ledger = this.options.ledger();
    if (this.pendingUnits && ledger) {
      // The units record holds every cursor too: the buffered acks are in it.
      this.pendingAcks.clear();
      this.units(ledger);
      if (this.lines >= COMPACT_AFTER) this.compact();
      return;
    }
    if (this.pendingAcks.size === 0 || !ledger) return;
    const cursors = [...this.pendingAcks].map(([id, [cursor, inflight]]): [number, number, number] => [id, cursor, inflight]);
    this.pendingAcks.clear();
    if (!this.options.dropAcks) this.write({ k: 'acks', epoch: ledger.epoch, cursors, t: this.options.timers.now() });
    if (this.lines >= COMPACT_AFTER) this.compact();
  }
}
