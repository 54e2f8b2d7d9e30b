/**
 * What a completed collective answers, computed from every member's value, and the shape checks
 * allReduce makes on arrival. Pure functions; Collectives decides when to call them.
 */
import { DistSamplerError } from '../shared/errors.ts';
import type { ClientMessage, CollectiveOpName, ReduceOpName } from '../shared/protocol.ts';

type Json = Exclude<Extract<ClientMessage, { t: 'collective' }>['value'], undefined>;

/** What allReduce was given by one rank: a number, or an array of numbers of some length. */
export type Shape = { kind: 'scalar' } | { kind: 'array'; length: number };

/** The collective as compute() needs it: what was called, and each rank's value. */
export interface Gathered {
  readonly op: CollectiveOpName;
  readonly reduce: ReduceOpName;
  readonly src: number | undefined;
  readonly values: ReadonlyMap<number, Json | undefined>;
}

/** A reduction overflowed to Infinity, which JSON cannot carry. */
export class Overflow extends DistSamplerError {
  constructor(message: string) {
    super('ERR_REDUCTION_OVERFLOW', message);
  }
}

const REDUCERS: Record<ReduceOpName, (a: number, b: number) => number> = {
  sum: (a, b) => a + b,
  min: (a, b) => Math.min(a, b),
  max: (a, b) => Math.max(a, b),
  product: (a, b) => a * b,
};

/**
 * The result every member gets. Values were checked on arrival; members all contributed. Ranks
 * are folded in ascending order, so results are deterministic. Throws Overflow.
 */
export function compute(entry: Gathered, members: readonly number[]): Json | undefined {
  switch (entry.op) {
    case 'barrier':
      return undefined;
    case 'broadcast':
      return entry.values.get(entry.src as number);
    case 'allGather': {
      // Indexed by rank: holes (ranks that are not members) are null, as JSON has no undefined.
      const size = members.length === 0 ? 0 : members[members.length - 1] + 1;
      const out: Json[] = new Array<Json>(size).fill(null);
      for (const rank of members) out[rank] = entry.values.get(rank) ?? null;
      return out;
    }
    case 'allReduce': {
      const fold = REDUCERS[entry.reduce];
      const inputs = members.map((r) => entry.values.get(r) as number | number[]);
      let acc: number | number[] = Array.isArray(inputs[0]) ? [...inputs[0]] : inputs[0];
      for (const next of inputs.slice(1)) {
        if (Array.isArray(acc) && Array.isArray(next)) {
          const arr: number[] = acc;
          acc = arr.map((a, i) => fold(a, next[i]));
        } else {
          acc = fold(acc as number, next as number);
        }
      }
      const finite = Array.isArray(acc) ? acc.every(Number.isFinite) : Number.isFinite(acc);
      if (!finite) {
        // JSON would carry Infinity as null; say so instead of lying.
        throw new Overflow(`the ${entry.reduce} overflowed to Infinity, which JSON cannot carry`);
      }
      return acc;
    }
  }
}

/** The shape of an allReduce value, or undefined when allReduce cannot take it. */
export function shapeOf(value: Json | undefined): Shape | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? { kind: 'scalar' } : undefined;
  if (Array.isArray(value) && value.every((v) => typeof v === 'number' && Number.isFinite(v))) return { kind: 'array', length: value.length };
  return undefined;
}

export function sameShape(a: Shape, b: Shape): boolean {
  if (a.kind === 'scalar' || b.kind === 'scalar') return a.kind === b.kind;
  return a.length === b.length;
}

export function describeShape(shape: Shape): string {
  return shape.kind === 'scalar' ? 'a number' : `an array of ${shape.length} numbers`;
}

/** A value allReduce cannot take, in a few words for the error message. */
export function describe(value: Json | undefined): string {
  if (value === undefined) return 'no value';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array with non-numbers';
  if (typeof value === 'number') return `${value}`;
  return `a ${typeof value}`;
}
