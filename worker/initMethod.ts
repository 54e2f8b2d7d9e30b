/**
 * Where to join: initProcessGroup's options and the init method (env:// or ws://) they resolve to.
 */
import { isHost, wsUrl } from '../shared/endpoint.ts';
import { InitEnvError, InitMethodError } from './errors.ts';

export interface InitOptions {
  /**
   * 'env://' (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE), 'ws://host:port', or torch's
   * 'tcp://host:port' (the coordinator's address, as OpenPCDet's init_dist_pytorch passes it; the
   * same as ws://). Default env://.
   */
  readonly initMethod?: string;
  /** Claim this rank; absent: RANK from the environment, else the lowest free rank. */
  readonly rank?: number;
  /** Expected world size (WORLD_SIZE); the coordinator refuses it at the rendezvous if outside its MIN..MAX. */
  readonly worldSize?: number;
  readonly token?: string;
  /** How long to wait for the welcome (connect plus rendezvous); 120 s. */
  readonly timeoutMs?: number;
  /** How long to keep reconnecting to a coordinator that went away; 30 s. */
  readonly reconnectTimeoutMs?: number;
  /** The dataset length this worker sees; the coordinator refuses a mismatch. */
  readonly length?: number;
  readonly workerId?: string;
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Called every `waitNoticeMs` (5 s) while the group is not joined yet (the coordinator not up,
   * or the group not complete), so a waiting worker can say so instead of staying silent.
   */
  readonly onWaiting?: (notice: WaitNotice) => void;
  readonly waitNoticeMs?: number;
}

/** A worker still waiting to join: where, for how long, and until when. */
export interface WaitNotice {
  readonly url: string;
  readonly waitedMs: number;
  readonly timeoutMs: number;
}

export function resolveInitUrl(options: InitOptions): { url: string; rank?: number; worldSize?: number; token?: string } {
  const env = options.env ?? process.env;
  const method = options.initMethod ?? 'env://';
  const token = options.token ?? env.DISTSAMPLER_TOKEN ?? undefined;
  const intFrom = (name: string, raw: string | undefined): number | undefined => {
    if (raw === undefined || raw === '') return undefined;
    if (!/^\d+$/.test(raw)) throw new InitEnvError(`${name} must be a non-negative integer, got '${raw}'`);
    return Number(raw);
  };
  if (method === 'env://') {
    const port = intFrom('MASTER_PORT', env.MASTER_PORT);
    if (port === undefined) throw new InitEnvError('env:// needs MASTER_PORT (and MASTER_ADDR, default 127.0.0.1)');
    if (port < 1 || port > 65535) throw new InitEnvError(`MASTER_PORT must be a port in 1..65535, got '${env.MASTER_PORT}'`);
    const host = env.MASTER_ADDR || '127.0.0.1';
    if (!isHost(host)) throw new InitEnvError(`MASTER_ADDR '${host}' is not a host name or address`);
    const url = wsUrl(host, port);
    return checkedMembership({ url, rank: options.rank ?? intFrom('RANK', env.RANK), worldSize: options.worldSize ?? intFrom('WORLD_SIZE', env.WORLD_SIZE), token });
  }
  if (/^wss?:\/\/[^/]+/.test(method)) {
    if (!URL.canParse(method)) throw new InitMethodError(`init method '${method}' is not a valid URL`);
    if (new URL(method).port === '0') throw new InitMethodError(`init method '${method}': port 0 is not a port a coordinator listens on`);
    return checkedMembership({ url: method, rank: options.rank, worldSize: options.worldSize, token });
  }
  // torch's tcp://: the address of rank 0's store, here the coordinator's (OpenPCDet's init_dist_pytorch passes it).
  const tcp = /^tcp:\/\/([^/]+)\/?$/.exec(method);
  if (tcp) return resolveInitUrl({ ...options, initMethod: `ws://${tcp[1]}` });
  throw new InitMethodError(`unsupported init method '${method}': use env://, ws://host:port or tcp://host:port`);
}

/** A rank and world size the coordinator could accept at all; refused here with the name of the setting. */
function checkedMembership<T extends { rank?: number; worldSize?: number }>(resolved: T): T {
  const { rank, worldSize } = resolved;
  if (worldSize !== undefined && !(Number.isSafeInteger(worldSize) && worldSize >= 1)) {
    throw new InitEnvError(`world size (WORLD_SIZE) must be an integer >= 1, got ${worldSize}`);
  }
  if (rank !== undefined && !(Number.isSafeInteger(rank) && rank >= 0)) throw new InitEnvError(`rank (RANK) must be an integer >= 0, got ${rank}`);
  if (rank !== undefined && worldSize !== undefined && rank >= worldSize) {
    throw new InitEnvError(`rank (RANK) ${rank} is beyond the world size (WORLD_SIZE) ${worldSize}: ranks are 0..${worldSize - 1}`);
  }
  return resolved;
}
