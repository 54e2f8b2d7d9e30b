/**
 * An evaluation pass's results as the coordinator holds them: one per dataset index, the first
 * that arrived (a padded plan's duplicates and a redelivered batch's results are dropped and
 * counted), kept as JSON text until the pass ends and its summary is taken. Pure.
 */
import { createHash } from 'node:crypto';
import type { EvalSummary } from './report.ts';

export class EvalResults {
  /** The JSON text of each index's result; undefined until one arrives. */
  private readonly held: Array<string | undefined>;
  private count = 0;
  private duplicates = 0;

  constructor(readonly length: number) {
    this.held = new Array<string | undefined>(length);
  }

  /** Keeps the result of `index` unless it has one; false (and counted) for a duplicate. */
  record(index: number, json: string): boolean {
    if (this.held[index] !== undefined) {
      this.duplicates++;
      return false;
    }
    this.held[index] = json;
    this.count++;
    return true;
  }

  has(index: number): boolean {
    return this.held[index] !== undefined;
  }

  /** Every index has its result. */
  get complete(): boolean {
    return this.count === this.length;
  }

  /** The pass's summary: counts, and the sha256 of the results in dataset order (`,`-joined JSON). */
  summary(afterEpoch: number): EvalSummary {
    const hash = createHash('sha256');
    let first = true;
    for (let index = 0; index < this.length; index++) {
      const json = this.held[index];
      if (json === undefined) continue;
      hash.update(first ? json : `,${json}`);
      first = false;
    }
    return { afterEpoch, length: this.length, evaluated: this.count, duplicatesDropped: this.duplicates, missing: this.length - this.count, sha256: hash.digest('hex') };
  }
}
