/**
 * How a dead rank's unacknowledged tail is shared among the living: by their measured speed in
 * this epoch (default), or in equal parts. Pure arithmetic; the ledger cuts the units.
 */

export const TailSplit = { Rate: 'rate', Equal: 'equal' } as const;
export type TailSplitName = (typeof TailSplit)[keyof typeof TailSplit];

/** A live rank that may take part of the tail. */
export interface TailTaker {
  readonly rank: number;
  /**
   * Its speed: positions it acknowledged this epoch. Only ratios matter (every rank is measured
   * over the same epoch), so no clock is needed.
   */
  readonly rate: number;
  /** Positions it still holds, not yet acknowledged. */
  readonly remaining: number;
}

/**
 * The share of a `tail` of positions each taker gets, in takers' order, summing to `tail`.
 *
 * By rate: the shares that let every taker finish at the same time at its measured rate (water
 * filling): with equal work left, exactly in proportion to rate; a rank already behind (a
 * straggler with more left than its rate clears) gets nothing until the others catch up with it.
 * Equal, or when no taker has acknowledged anything yet (no rate to go by): near-equal parts.
 */
export function shareTail(tail: number, takers: readonly TailTaker[], split: TailSplitName): number[] {
  if (takers.length === 0 || tail <= 0) return takers.map(() => 0);
  const measured = takers.some((t) => t.rate > 0);
  if (split === TailSplit.Equal || !measured) return equalShares(tail, takers.length);
  // Each taker's finish time without the tail; the tail raises the earliest ones to a common
  // level T, where sum(rate * T - remaining) over the takers below T equals the tail.
  const order = takers.map((t, i) => ({ i, rate: t.rate, remaining: t.remaining, finish: t.rate > 0 ? t.remaining / t.rate : Infinity })).sort((a, b) => a.finish - b.finish || a.i - b.i);
  let rateSum = 0;
  let remainingSum = 0;
  let level = 0;
  for (let k = 0; k < order.length; k++) {
    if (order[k].rate <= 0) break;
    rateSum += order[k].rate;
    remainingSum += order[k].remaining;
    level = (tail + remainingSum) / rateSum;
    // The next taker's finish is at or below the level: it takes part too.
    if (k + 1 < order.length && order[k + 1].finish < level) continue;
    break;
  }
  const exact = takers.map((t) => (t.rate > 0 ? Math.max(0, t.rate * level - t.remaining) : 0));
  return roundShares(exact, tail);
}

/** `tail` in `parts` near-equal integers, the larger ones first. */
function equalShares(tail: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(tail / parts) + (i < tail % parts ? 1 : 0));
}

/** Integers summing to `total`, each the floor of its exact share or one more (largest remainders first, ties by order). */
function roundShares(exact: readonly number[], total: number): number[] {
  const shares = exact.map((x) => Math.floor(x));
  let left = total - shares.reduce((a, b) => a + b, 0);
  // Rounding never hands a position to a taker whose exact share is none.
  const byRemainder = exact
    .map((x, i) => ({ i, x, frac: x - Math.floor(x) }))
    .filter((s, _, all) => s.x > 0 || all.every((o) => o.x <= 0))
    .sort((a, b) => b.frac - a.frac || a.i - b.i);
  for (let k = 0; left > 0; k = (k + 1) % byRemainder.length, left--) shares[byRemainder[k].i]++;
  return shares;
}
