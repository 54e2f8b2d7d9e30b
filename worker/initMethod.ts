/**
 * Where to join: initProcessGroup's options and the init method (env://, ws:// or wss://) they
 * resolve to, and the CA a wss:// coordinator's certificate must chain to.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isHost, wsUrl } from '../shared/endpoint.ts';
import type { DatasetIdentity } from '../shared/protocol.ts';
import { InitEnvError, InitMethodError, InitOptionsError } from './errors.ts';

export interface InitOptions {
  /**
   * 'env://' (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE), 'ws://host:port', 'wss://host:port'
   * (a coordinator serving TLS), or torch's 'tcp://host:port' (the coordinator's address, as
   * OpenPCDet's init_dist_pytorch passes it; the same as ws://). env:// and tcp:// connect with
   * wss:// when a CA is given (`ca`, DISTSAMPLER_CA) or DISTSAMPLER_TLS=1. Default env://.
   */
  readonly initMethod?: string;
  /**
   * The CA certificate(s), PEM, that a wss:// coordinator's certificate must chain to (a
   * self-signed certificate is its own CA). Default: the PEM file DISTSAMPLER_CA names, read at
   * init; without either, the system's CAs.
   */
  readonly ca?: string | Buffer;
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
  /**
   * The dataset this worker loaded (datasetIdentity(dataset) from worker/datasets.ts): the
   * coordinator refuses it (4004) when its own is another, naming both.
   */
  readonly dataset?: DatasetIdentity;
  readonly workerId?: string;
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Called every `waitNoticeMs` (5 s) while the group is not joined yet (the coordinator not up,
   * or the group not complete), so a waiting worker can say so instead of staying silent. A script
   * started by `distsampler run` prints waitNoticeText on stderr by default.
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

/** A wait notice as a line: "waiting for the coordinator at URL to complete the group (10 s so far, giving up after 120 s)". */
export function waitNoticeText({ url, waitedMs, timeoutMs }: WaitNotice): string {
  const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;
  return `waiting for the coordinator at ${url} to complete the group (${seconds(waitedMs)} so far, giving up after ${seconds(timeoutMs)})`;
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
    const url = wsUrl(host, port, tlsWanted(options, env));
    return checkedMembership({ url, rank: options.rank ?? intFrom('RANK', env.RANK), worldSize: options.worldSize ?? intFrom('WORLD_SIZE', env.WORLD_SIZE), token });
  }
  if (/^wss?:\/\/[^/]+/.test(method)) {
    if (!URL.canParse(method)) throw new InitMethodError(`init method '${method}' is not a valid URL`);
    if (new URL(method).port === '0') throw new InitMethodError(`init method '${method}': port 0 is not a port a coordinator listens on`);
    return checkedMembership({ url: method, rank: options.rank, worldSize: options.worldSize, token });
  }
  // torch's tcp://: the address of rank 0's store, here the coordinator's (OpenPCDet's init_dist_pytorch passes it).
  const tcp = /^tcp:\/\/([^/]+)\/?$/.exec(method);
  if (tcp) return resolveInitUrl({ ...options, initMethod: `${tlsWanted(options, env) ? 'wss' : 'ws'}://${tcp[1]}` });
  throw new InitMethodError(`unsupported init method '${method}': use env://, ws://host:port or tcp://host:port`);
}

/** env:// and tcp:// name no scheme: a CA (`ca`, DISTSAMPLER_CA) or DISTSAMPLER_TLS=1 means wss://. */
function tlsWanted(options: InitOptions, env: NodeJS.ProcessEnv): boolean {
  const flag = env.DISTSAMPLER_TLS ?? '';
  if (!['', '0', '1'].includes(flag)) throw new InitEnvError(`DISTSAMPLER_TLS must be 1 (connect with wss://) or 0, got '${flag}'`);
  return flag === '1' || options.ca !== undefined || Boolean(env.DISTSAMPLER_CA);
}

/**
 * The CA a wss:// connection trusts: `ca`, else the file DISTSAMPLER_CA names (read now), else
 * undefined (the system's CAs). One that is no PEM certificate is refused, naming where it came
 * from: a CA the TLS layer silently ignored would only show up as an untrusted certificate.
 */
export function resolveCa(options: InitOptions): string | Buffer | undefined {
  if (options.ca !== undefined) {
    const problem = caProblem(options.ca);
    if (problem) throw new InitOptionsError(`ca ${problem}`);
    return options.ca;
  }
  const path = (options.env ?? process.env).DISTSAMPLER_CA;
  if (!path) return undefined;
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (err) {
    throw new InitEnvError(`DISTSAMPLER_CA: cannot read ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const problem = caProblem(pem);
  if (problem) throw new InitEnvError(`DISTSAMPLER_CA: ${path} ${problem}`);
  return pem;
}

/** Why `pem` is not a CA certificate a TLS client can take (worded to follow its name), or undefined. */
export function caProblem(pem: string | Buffer): string | undefined {
  if (!pem.toString().includes('-----BEGIN CERTIFICATE-----')) return 'is not a PEM certificate (no -----BEGIN CERTIFICATE----- line)';
  try {
    new X509Certificate(pem);
  } catch (err) {
    return `is not a PEM certificate (${err instanceof Error ? err.message : String(err)})`;
  }
  return undefined;
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
