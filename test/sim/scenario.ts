/**
 * One seed, one scenario: the group's shape, the run's config, the core's knobs and a fault
 * schedule. Everything is drawn from the seed, so `--seed S` replays it exactly.
 */
import { resolveCoreSettings, type CoreSettings, type FailurePolicyName } from '../../coordinator/options.ts';
import type { WorldSizeRange } from '../../coordinator/journal.ts';
import { evalConfig, evalPassCount } from '../../shared/evalPass.ts';
import type { RunConfig } from '../../shared/protocol.ts';
import { checkPlannable } from '../../shared/runPlan.ts';
import { computeNumSamples } from '../../shared/sampler.ts';
import { Rng } from './rng.ts';

/** A per-batch collective waits for the others' steps (up to seconds here): only a hang outlasts this. */
export const PER_BATCH_TIMEOUT_MS = 20_000;

/** A misbehaving member (part 1, findings 6 and 7, and foreign acks). */
export type RogueKind = 'flood' | 'hugeSeq' | 'foreignAck' | 'badCursor';

/**
 * A simulated worker's own mistake in an evaluation pass, never drawn: tests plant it (through
 * runSeed's tweak) to show the invariants catch it. `skipResults`: no results for its first
 * batch; `wrongResult`: a wrong value for dataset index 0.
 */
export type WorkerBug = 'skipResults' | 'wrongResult';

/** A journal record a buggy or hand-edited journal might hold (part 1, finding 9). */
export const BAD_RECORDS = ['null', '{"k":"acks","epoch":0,"cursors":[[0,1e300,0]]}', '{"k":"acks","epoch":0,"cursors":[[0,"99999",0]]}', '{"k":"member","rank":-1}', '[]'] as const;

export interface CrashPlan {
  readonly at: number;
  /** How long the coordinator stays down before it restarts from its journal. */
  readonly downMs: number;
  /** Bytes cut off the journal's end (a torn last record); 0 for a clean cut. */
  readonly tearBytes: number;
  /** A bad record written into the journal before the restart (finding 9). */
  readonly badRecord: string | undefined;
}

export interface FaultPlan {
  /** Times at which a random live worker process is killed. */
  readonly kills: readonly number[];
  /** Per worker and epoch end: the chance it is killed right there. */
  readonly killAtBoundary: number;
  /** Per collective call: the chance the caller is killed while it waits. */
  readonly killInCollective: number;
  /** Per hello before the group is complete: the chance the worker dies before its welcome. */
  readonly killInRendezvous: number;
  /** A worker stalls (SIGSTOP) for `forMs`, then continues; `resumeOnDeath` resumes it the moment it is declared dead. */
  readonly zombies: ReadonlyArray<{ readonly at: number; readonly forMs: number; readonly resumeOnDeath: boolean }>;
  /** The coordinator's event loop blocked (SIGSTOP, a long permutation) for `forMs`. */
  readonly stalls: ReadonlyArray<{ readonly at: number; readonly forMs: number }>;
  readonly crashes: readonly CrashPlan[];
  /** Times at which a new worker process starts (elastic growth, or a late replacement). */
  readonly joins: readonly number[];
  /** Times at which a random worker leaves cleanly (destroy). */
  readonly leaves: readonly number[];
  /** After a worker dies: the chance a replacement starts and claims its rank. */
  readonly replaceChance: number;
  readonly rogue: { readonly kind: RogueKind; readonly at: number } | undefined;
}

export interface Scenario {
  readonly seed: string;
  readonly range: WorldSizeRange;
  readonly config: RunConfig;
  /** Workers send their epoch report with their closing ack when out of work (the real client's way), not only at the epoch's end. */
  readonly earlyReports: boolean;
  readonly settings: CoreSettings;
  /** Worker processes started at time 0. */
  readonly workers: number;
  /** Workers claim RANK (torchrun) instead of taking the lowest free rank. */
  readonly claimRanks: boolean;
  /** Step time per sample, in virtual ms. */
  readonly stepMsPerSample: number;
  /** A straggler's rank and how many times slower its steps are (none: every rank at one pace). */
  readonly straggler?: { readonly rank: number; readonly factor: number };
  /** Dataset indices whose training step always throws: each of their positions must end quarantined. */
  readonly poison: ReadonlySet<number>;
  /** Step time per sample of an evaluation pass (config.eval), in virtual ms. */
  readonly evalStepMsPerSample: number;
  /** One-way network delay bound, ms. */
  readonly netDelayMs: number;
  /** Workers call one collective at each epoch start and store ops while stepping. */
  readonly collectives: boolean;
  /** Workers also call an allReduce after every batch (a training loop's), uneven shards or not. */
  readonly collectivePerBatch: boolean;
  /** ... in evaluation passes too (only when they have few batches per rank as well). */
  readonly evalCollectivePerBatch: boolean;
  /**
   * With per-batch collectives: workers train as under pg.elastic: a training epoch's acks wait
   * for a commit every `commitEvery` batches (and when out of work), and a group change mid-epoch
   * rewinds each rank to its commit.
   */
  readonly elastic?: { readonly commitEvery: number };
  readonly faults: FaultPlan;
  /** Virtual time after which a run that has not ended is a hang. */
  readonly horizonMs: number;
  readonly workerBug?: WorkerBug;
}

function drawLength(rng: Rng, maxWorld: number): { length: number; engine: RunConfig['engine'] } {
  const roll = rng.next();
  if (roll < 0.06) return { length: 0, engine: 'torch' };
  if (roll < 0.14) return { length: rng.int(1, Math.max(1, maxWorld - 1)), engine: rng.pick(['torch', 'feistel'] as const) };
  if (roll < 0.8) return { length: rng.int(5, 2000), engine: rng.pick(['torch', 'torch', 'feistel'] as const) };
  if (roll < 0.95) return { length: rng.int(2000, 5000), engine: rng.pick(['torch', 'feistel'] as const) };
  return { length: rng.int(20_000, 60_000), engine: 'feistel' };
}

function times(rng: Rng, count: number, spanMs: number): number[] {
  return Array.from({ length: count }, () => rng.real(0, spanMs)).sort((a, b) => a - b);
}

/**
 * Sometimes OpenPCDet's sampler and sometimes unpadded shards (a stream of its own, so the rest
 * of a seed's scenario stays what it was). OpenPCDet's takes no seed and no dropLast; a length
 * it cannot pad for some world of the group stays with torch's sampler.
 */
function withSampling(rng: Rng, config: RunConfig, range: WorldSizeRange): RunConfig {
  let sampled: RunConfig = config;
  if (rng.chance(0.2) && config.engine === 'torch') sampled = { ...sampled, sampler: 'openpcdet', seed: '0', dropLast: false };
  if (rng.chance(0.25)) sampled = { ...sampled, pad: false, dropLast: false };
  for (let size = range.min; size <= range.max; size++) {
    try {
      checkPlannable(sampled, size);
    } catch {
      return config;
    }
  }
  return sampled;
}

/**
 * Sometimes evaluation passes (a stream of its own, so the rest of a seed's scenario stays what
 * it was): after every 1..epochs epochs, over the training length or a drawn one (0..3000, tiny
 * ones too), padded or not. A length OpenPCDet's sampler cannot pad for some world of the group
 * (padding beyond the dataset) means no evaluation, as the coordinator would refuse it.
 */
function withEval(rng: Rng, config: RunConfig, range: WorldSizeRange): RunConfig {
  if (config.epochs < 1 || !rng.chance(0.35)) return config;
  const every = rng.int(1, config.epochs);
  const roll = rng.next();
  // The training set only when small: tens of thousands of batches of one more per pass would outrun the event budget.
  const length = roll < 0.3 && config.length <= 5000 ? config.length : roll < 0.45 ? rng.int(1, range.max) : rng.int(0, 3000);
  const evaluated: RunConfig = { ...config, eval: { every, length, pad: rng.chance(0.6) } };
  for (let size = range.min; size <= range.max; size++) {
    try {
      checkPlannable(evalConfig(evaluated, evaluated.eval!), size);
    } catch {
      return config;
    }
  }
  return evaluated;
}

/** Draws the scenario of one seed. */
export function drawScenario(seed: string): Scenario {
  const rng = new Rng(`scenario:${seed}`);
  const elastic = rng.chance(0.3);
  const min = rng.int(1, elastic ? 3 : 5);
  const range = { min, max: elastic ? min + rng.int(1, 2) : min };
  const { length, engine } = drawLength(rng, range.max);
  const world = range.max;
  const numSamples = Math.max(1, computeNumSamples(length, world, false));
  const batchesPerRank = rng.int(3, 25);
  const batchSize = rng.chance(0.1) ? 1 : Math.max(1, Math.ceil(numSamples / batchesPerRank));
  const epochs = rng.chance(0.03) ? 0 : rng.int(1, 3);
  const sampled = withSampling(new Rng(`sampling:${seed}`), { length, seed: String(rng.int(-5, 1e6)), shuffle: rng.chance(0.8), dropLast: rng.chance(0.3), engine, batchSize, epochs }, range);
  const evalRng = new Rng(`eval:${seed}`);
  const evaluated = withEval(evalRng, sampled, range);
  // Its own stream too: a coordinator that knows what its data is (workers name the same, or are refused).
  const identity = new Rng(`dataset:${seed}`);
  const config: RunConfig = identity.chance(0.3) ? { ...evaluated, dataset: { fingerprint: `sha256:${identity.int(0, 1e9).toString(16).padStart(64, '0')}`, description: 'jsonl sim.jsonl' } } : evaluated;
  const heartbeatMs = rng.int(50, 200);
  const deadAfterMs = heartbeatMs * rng.int(3, 6);
  const onFailure: FailurePolicyName = rng.pick(['reassign', 'reassign', 'wait', 'wait', 'abort'] as const);
  const settings = resolveCoreSettings({
    heartbeatMs,
    deadAfterMs,
    helloTimeoutMs: rng.int(500, 2000),
    rendezvousTimeoutMs: rng.int(5000, 15_000),
    settleMs: rng.int(0, 400),
    reportTimeoutMs: rng.int(500, 3000),
    waitTimeoutMs: rng.int(300, 3000),
    journalFlushMs: rng.int(10, 100),
    lingerMs: rng.int(0, 1500),
    onFailure,
    // Its own stream: the rest of a seed's scenario stays what it was.
    tailSplit: new Rng(`split:${seed}`).chance(0.7) ? 'rate' : 'equal',
  });
  // Work follows speed only where speeds differ: a straggler, from a stream of its own.
  const speeds = new Rng(`speed:${seed}`);
  const straggler = speeds.chance(0.25) ? { rank: speeds.int(0, world - 1), factor: speeds.real(2, 5) } : undefined;
  // Bad samples, from their own stream: one or two indices whose step throws every time.
  const poisoning = new Rng(`poison:${seed}`);
  const poison = new Set<number>(length > 0 && poisoning.chance(0.2) ? times(poisoning, poisoning.int(1, 2), length).map(Math.floor) : []);
  // An epoch of roughly 0.3 to 3 virtual seconds, whatever the length.
  const epochMs = rng.real(300, 3000);
  const stepMsPerSample = epochMs / Math.max(1, Math.ceil(length / world));
  // An evaluation pass takes about as long as an epoch (0.3 to 3 virtual seconds) whatever its
  // length: at the training pace a tiny training set would make a large evaluation run for hours.
  const evalLength = config.eval?.length ?? 0;
  const evalMs = evalRng.real(300, 3000);
  const evalStepMsPerSample = evalMs / Math.max(1, Math.ceil(evalLength / world));
  // Acks per batch, at the default interval, or coalesced over 0.3 to 30 batches' steps: a stream of its own.
  const acking = new Rng(`ack:${seed}`);
  const ackRoll = acking.real(0, 1);
  // Most workers report when they run out of work (as the real client does); some only at the epoch's end.
  const earlyReports = acking.chance(0.8);
  const ackMs = ackRoll < 0.2 ? 0 : ackRoll < 0.35 ? undefined : Math.min(60_000, stepMsPerSample * batchSize * acking.real(0.3, 30));
  const span = Math.max(1000, (epochs * epochMs + evalPassCount(config) * evalMs) * 1.3);
  const busy = rng.chance(0.75);
  const faults: FaultPlan = {
    kills: busy ? times(rng, rng.int(0, 2), span) : [],
    killAtBoundary: busy && rng.chance(0.3) ? 0.15 : 0,
    killInCollective: busy && rng.chance(0.2) ? 0.2 : 0,
    killInRendezvous: busy && rng.chance(0.1) ? 0.3 : 0,
    zombies: (busy ? times(rng, rng.int(0, 1), span) : []).map((at) => ({ at, forMs: deadAfterMs * rng.real(0.6, 2.5), resumeOnDeath: rng.chance(0.6) })),
    stalls: (busy ? times(rng, rng.int(0, 1), span) : []).map((at) => ({ at, forMs: deadAfterMs * rng.real(0.5, 3) })),
    crashes: (busy && rng.chance(0.35) ? times(rng, rng.int(1, 2), span) : []).map((at) => ({
      at,
      downMs: rng.real(5, deadAfterMs * 2),
      tearBytes: rng.chance(0.35) ? rng.int(1, 40) : 0,
      badRecord: rng.chance(0.04) ? rng.pick(BAD_RECORDS) : undefined,
    })),
    joins: busy && (elastic || rng.chance(0.15)) ? times(rng, rng.int(0, 2), span) : [],
    leaves: busy && elastic ? times(rng, rng.int(0, 1), span) : [],
    replaceChance: onFailure === 'wait' ? 0.6 : 0.2,
    rogue: busy && rng.chance(0.12) ? { kind: rng.pick(['flood', 'hugeSeq', 'foreignAck', 'badCursor'] as const), at: rng.real(0, span) } : undefined,
  };
  // Its own stream, like the sampling: the rest of a seed's scenario stays what it was.
  // Only with few batches per rank (each one waits for a round trip of every rank). Coordinator
  // crashes too: a restarted coordinator begins a new generation, numbered from 0, once its
  // members are back.
  const collectivePerBatch = Math.ceil(numSamples / batchSize) <= 100 && new Rng(`perBatch:${seed}`).chance(0.3);
  // A poison position costs a halving per level of its batch and maxAttempts tries alone, each a
  // step, maybe on the straggler, maybe after the others died; a tiny padded dataset repeats an
  // index on every rank (length 1: every position is the poison).
  const poisonMs = (): number => {
    if (poison.size === 0) return 0;
    const positions = Math.min(numSamples * world, poison.size * Math.ceil((numSamples * world) / Math.max(1, length)));
    const tries = settings.maxAttempts + 2 + Math.ceil(Math.log2(batchSize + 1));
    return epochs * positions * tries * stepMsPerSample * batchSize * 1.3 * (straggler?.factor ?? 1);
  };
  const elasticRng = new Rng(`elastic:${seed}`);
  const elasticLoop = collectivePerBatch && elasticRng.chance(0.5) ? { commitEvery: elasticRng.int(1, 6) } : undefined;
  return {
    seed,
    range,
    config: ackMs === undefined ? config : { ...config, ackMs },
    earlyReports,
    settings,
    workers: elastic ? rng.int(min, range.max) : rng.chance(0.1) ? world + 1 : world,
    claimRanks: !elastic && rng.chance(0.4),
    stepMsPerSample,
    ...(straggler ? { straggler } : {}),
    poison,
    evalStepMsPerSample,
    netDelayMs: rng.real(0.2, 5),
    collectives: rng.chance(0.5),
    collectivePerBatch,
    evalCollectivePerBatch: collectivePerBatch && Math.ceil(Math.ceil(evalLength / range.min) / batchSize) <= 100,
    ...(elasticLoop ? { elastic: elasticLoop } : {}),
    faults,
    // A replacement that joins while a per-batch collective is pending holds it up until it times
    // out: each evaluation pass (and its end, where workers die) adds a chance of that.
    // A straggler left alone (the others dead or never there) takes its factor times longer.
    horizonMs: span * 3 * (straggler?.factor ?? 1) + 30_000 + (collectivePerBatch ? evalPassCount(config) * PER_BATCH_TIMEOUT_MS : 0) + poisonMs(),
  };
}

/** No fault at all: none scheduled, and no chance of a death at a hello, a collective or a boundary. */
export function faultFree(s: Scenario): boolean {
  const f = s.faults;
  return faultCount(s) === 0 && f.killAtBoundary === 0 && f.killInCollective === 0 && f.killInRendezvous === 0 && s.poison.size === 0;
}

/** How many faults the scenario schedules (for the closing line). */
export function faultCount(s: Scenario): number {
  const f = s.faults;
  return f.kills.length + f.zombies.length + f.stalls.length + f.crashes.length + f.joins.length + f.leaves.length + (f.rogue ? 1 : 0);
}
