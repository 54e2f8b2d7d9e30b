/**
 * torchrun's multi-node flags for `run`: `--nnodes MIN:MAX --node-rank K --rdzv-endpoint HOST:PORT`.
 * One launcher hosts the coordinator (node rank 0, unless --no-coordinator names a standalone
 * `distsampler coordinator` at the endpoint); the others only start their workers, numbered node
 * by node. Pure parsing: what this launcher is, or a UsageError saying what does not fit.
 */
import type { WorldSizeRange } from '../coordinator/journal.ts';
import { DURATION_KNOBS } from '../coordinator/options.ts';
import { hostValue } from './endpoints.ts';
import { worldSizeFlag } from './runConfigFlags.ts';
import { intFlag, UsageError } from './usage.ts';

/** Where the coordinator listens (or, with port 0 on the launcher that hosts it, where it binds). */
export interface RdzvEndpoint {
  readonly host: string;
  readonly port: number;
}

/** This launcher's place among the nodes of the run. */
export interface NodePlan {
  /** How many launchers form the group: MIN..MAX (1..1 without --nnodes). */
  readonly nodes: WorldSizeRange;
  /** This launcher's node rank: its workers' GROUP_RANK. */
  readonly rank: number;
  /** This launcher starts the coordinator (and gets the run's report); otherwise only its workers. */
  readonly hostsCoordinator: boolean;
  readonly endpoint?: RdzvEndpoint;
}

/** The flags this file reads, as parseArgs gives them. */
export interface NodeFlagValues {
  nnodes?: string;
  'node-rank'?: string;
  'rdzv-endpoint'?: string;
  'no-coordinator'?: boolean;
}

export function nodePlan(values: NodeFlagValues): NodePlan {
  const parsed = worldSizeFlag('nnodes', values.nnodes, 1);
  const nodes = typeof parsed === 'number' ? { min: parsed, max: parsed } : parsed;
  const rank = intFlag('node-rank', values['node-rank'], 0, 0);
  if (rank >= nodes.max) {
    const ranks = nodes.max === 1 ? 'the only node rank is 0' : `node ranks are 0..${nodes.max - 1}`;
    throw new UsageError(`--node-rank ${rank} with --nnodes ${values.nnodes ?? 1}: ${ranks}`);
  }
  const hostsCoordinator = rank === 0 && values['no-coordinator'] !== true;
  const raw = values['rdzv-endpoint'];
  if (raw === undefined) {
    if (!hostsCoordinator) throw new UsageError(`${rank > 0 ? `--node-rank ${rank}` : '--no-coordinator'} needs --rdzv-endpoint HOST:PORT, the coordinator's address`);
    if (nodes.max > 1) throw new UsageError(`--nnodes ${values.nnodes} needs --rdzv-endpoint HOST:PORT: where this launcher's coordinator listens for the other nodes`);
    return { nodes, rank, hostsCoordinator };
  }
  const endpoint = endpointFlag(raw);
  if (endpoint.port === 0 && !hostsCoordinator) {
    throw new UsageError(`--rdzv-endpoint ${raw}: port 0 lets the OS pick the port of a coordinator this launcher starts; node rank ${rank}${rank === 0 ? ' with --no-coordinator' : ''} joins one elsewhere and needs its port`);
  }
  return { nodes, rank, hostsCoordinator, endpoint };
}

/** `HOST:PORT`, IPv6 in brackets (`[fd00::1]:29500`). */
export function endpointFlag(raw: string): RdzvEndpoint {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(raw.trim());
  if (!m) throw new UsageError(`--rdzv-endpoint must be HOST:PORT (IPv6 as [ADDR]:PORT), got '${raw}'`);
  return { host: hostValue('--rdzv-endpoint', m[1]), port: intFlag('rdzv-endpoint', m[2], 0, 0, 65535) };
}

/**
 * Flags that only mean something where the coordinator runs: the run config, its knobs, its
 * faults and its outputs. A launcher that only starts workers refuses them rather than ignore them.
 */
const COORDINATOR_ONLY = [
  'epochs',
  'length',
  'batch-size',
  'ack-ms',
  'seed',
  'no-shuffle',
  'drop-last',
  'engine',
  'sampler',
  'no-pad',
  'eval-every',
  'host',
  'port',
  'tls-cert',
  'tls-key',
  'report',
  'on-failure',
  'tail-split',
  'max-attempts',
  'max-failed',
  'journal',
  'resume',
  'world-size',
  'kill',
  'kill-coordinator',
  'join',
  ...DURATION_KNOBS.map((k) => k.flag),
] as const;

/** A launcher that starts only workers: the first coordinator flag given to it is refused. */
export function refuseCoordinatorFlags(values: Readonly<Record<string, unknown>>, plan: NodePlan): void {
  const given = COORDINATOR_ONLY.find((flag) => values[flag] !== undefined);
  if (given === undefined) return;
  const who = plan.rank > 0 ? `node rank ${plan.rank}` : 'a launcher with --no-coordinator';
  const where = plan.rank > 0 ? "node rank 0's launcher (or the standalone `distsampler coordinator`)" : 'the standalone `distsampler coordinator`';
  throw new UsageError(`--${given} is the coordinator's: ${who} only starts workers; give it to ${where}`);
}

/**
 * The flags of the launcher that hosts the coordinator, checked against the node plan: the group's
 * size comes from --nnodes times the workers per node, and the bind address from the endpoint.
 */
export function checkHostingFlags(values: { 'world-size'?: string; port?: string; resume?: string }, plan: NodePlan): void {
  if (plan.nodes.max > 1 && values['world-size'] !== undefined) {
    throw new UsageError('--world-size and --nnodes both set the size of the group: give --nnodes (the group is nodes times --nproc-per-node)');
  }
  if (plan.endpoint && values.port !== undefined) throw new UsageError('--port and --rdzv-endpoint both set the port: give one of them');
  if (plan.nodes.max > 1 && values.resume !== undefined) {
    throw new UsageError('--resume continues a single-node run; for several nodes start `distsampler coordinator --resume FILE` and launchers with --no-coordinator');
  }
}

/** WORLD_SIZE a node's workers are started with: the most the group may hold. */
export function nodeWorldSize(plan: NodePlan, perNode: number): WorldSizeRange {
  return { min: plan.nodes.min * perNode, max: plan.nodes.max * perNode };
}
