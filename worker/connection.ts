/**
 * The worker's connection to the coordinator: one handshake (socket, hello, welcome), the first
 * connect that keeps trying until the group forms, and the reconnect after the coordinator went
 * away. Both retry loops use the one Backoff.
 */
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { encode, MAX_FRAME_BYTES, parseServerMessage, PROTOCOL_VERSION, ProtocolError } from '../shared/protocol.ts';
import type { ClientMessage, DatasetIdentity, ServerMessage } from '../shared/protocol.ts';
import { trace } from '../shared/debugTrace.ts';
import { Backoff, CONNECT_BACKOFF, RECONNECT_BACKOFF } from './backoff.ts';
import { errorFromClose, errorFromFrame, InitConnectError, InitHttpError, InitProtocolError, InitTimeoutError, InitTlsError, UnauthorizedError } from './errors.ts';

export type Welcome = Extract<ServerMessage, { t: 'welcome' }>;

/** Who this worker is and where it joins; the same for every (re)connect. */
export interface Endpoint {
  readonly url: string;
  /** For wss://: the CA (PEM) the coordinator's certificate must chain to; absent, the system's CAs. */
  readonly ca?: string | Buffer;
  readonly token?: string;
  readonly workerId: string;
  readonly length?: number;
  /** WORLD_SIZE, checked by the coordinator at the rendezvous. */
  readonly worldSize?: number;
  /** The dataset this worker loaded, checked by the coordinator at the rendezvous. */
  readonly dataset?: DatasetIdentity;
  /** The group generation this worker was in (a reconnect): a restarted coordinator goes on from it. */
  readonly generation?: number;
}

/** An open, welcomed connection. */
export interface Handshake {
  ws: WebSocket;
  welcome: Welcome;
  /** Frames that arrived right behind the welcome, before anyone listened for them. */
  early: string[];
  /** The TCP socket under ws (from its 'upgrade' response), to unref once the run is over. */
  socket: Socket | undefined;
}

/** For tests: the clock and random source of the retry loops. */
export interface RetryClock {
  readonly now?: () => number;
  readonly random?: () => number;
}

/** Closes after which a worker tries to reconnect: the coordinator died or restarts. */
export const RECONNECTABLE: ReadonlySet<number> = new Set([1001, 1006, 1011, 1012, 1013]);

/** Opens a socket, says hello and resolves at the welcome (or rejects with why not). */
export function handshake(endpoint: Endpoint, rank: number | undefined, timeoutMs: number): Promise<Handshake> {
  const { url, token, workerId, length, worldSize, dataset } = endpoint;
  const tls = endpoint.ca === undefined ? {} : { ca: endpoint.ca };
  const ws = new WebSocket(url, { maxPayload: MAX_FRAME_BYTES, headers: token ? { authorization: `Bearer ${token}` } : {}, ...tls });
  let socket: Socket | undefined;
  ws.once('upgrade', (response) => (socket = response.socket));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => fail(new InitTimeoutError(`no welcome from ${url} within ${timeoutMs} ms: the group did not fill (GET ${url.replace(/^ws/, 'http')}/status lists the missing ranks${token ? '; send the token as Authorization: Bearer' : ''})`)),
      timeoutMs,
    );
    function fail(error: Error): void {
      clearTimeout(timer);
      ws.removeAllListeners();
      ws.on('error', () => {});
      ws.terminate();
      reject(error);
    }
    ws.on('unexpected-response', (_req, res) => {
      fail(
        res.statusCode === 401
          ? new UnauthorizedError(`the coordinator at ${url} refused the token (HTTP 401): set DISTSAMPLER_TOKEN or --token`)
          : new InitHttpError(`the coordinator at ${url} answered HTTP ${res.statusCode}`),
      );
    });
    ws.on('error', (err) => fail(connectFailure(url, err)));
    ws.on('close', (code, reason) => fail(errorFromClose(code, reason.toString())));
    ws.on('open', () => {
      const hello: ClientMessage = {
        t: 'hello',
        v: PROTOCOL_VERSION,
        workerId,
        pid: process.pid,
        ...(rank !== undefined ? { rank } : {}),
        ...(length !== undefined ? { length } : {}),
        ...(worldSize !== undefined ? { worldSize } : {}),
        ...(dataset !== undefined ? { dataset } : {}),
        ...(endpoint.generation !== undefined ? { generation: endpoint.generation } : {}),
      };
      const text = encode(hello);
      trace('worker', () => `-> ${text}`);
      ws.send(text);
    });
    ws.once('message', (data) => {
      const text = data.toString();
      trace('worker', () => `<- ${text}`);
      const parsed = parseServerMessage(text);
      if (parsed.ok && parsed.message.t === 'welcome') {
        clearTimeout(timer);
        ws.removeAllListeners();
        // The epoch often rides in the same TCP segment as the welcome: keep it for the group.
        const early: string[] = [];
        ws.on('message', (frame) => early.push(frame.toString()));
        ws.on('error', () => {});
        resolve({ ws, welcome: parsed.message, early, socket });
        return;
      }
      const abort = parsed.ok && parsed.message.t === 'abort' ? parsed.message : undefined;
      fail(abort ? errorFromFrame(abort) : new InitProtocolError('the coordinator did not answer with a welcome'));
    });
  });
}

/** OpenSSL's certificate verification codes, as Node puts them on the error (its tls docs list them). */
const CERTIFICATE_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_CRL', 'UNABLE_TO_DECRYPT_CERT_SIGNATURE', 'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'CERT_SIGNATURE_FAILURE', 'CRL_SIGNATURE_FAILURE', 'CERT_NOT_YET_VALID', 'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID', 'CRL_HAS_EXPIRED', 'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD', 'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_CHAIN_TOO_LONG', 'CERT_REVOKED', 'INVALID_CA', 'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE',
  'CERT_UNTRUSTED', 'CERT_REJECTED', 'HOSTNAME_MISMATCH',
]);

/**
 * What a socket error means for joining. A failed TLS handshake is final (InitTlsError): the
 * same certificate fails the same way for the next 120 s. Anything else is a coordinator not
 * reachable (yet), worth another try.
 */
function connectFailure(url: string, err: Error & { code?: string }): InitConnectError | InitTlsError {
  const code = err.code ?? '';
  if (url.startsWith('wss:')) {
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
      return new InitTlsError(`the coordinator at ${url} has a certificate for another name: ${err.message}; connect to a host name or address the certificate lists`, { cause: err });
    }
    if (CERTIFICATE_CODES.has(code)) {
      const hint = code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID' ? "check its dates and this machine's clock" : 'pass the CA that signed it (the certificate itself when self-signed) with --ca or DISTSAMPLER_CA';
      return new InitTlsError(`the coordinator at ${url} has a certificate this worker does not trust: ${err.message} (${code}); ${hint}`, { cause: err });
    }
    if (code === 'EPROTO' || code.startsWith('ERR_SSL_')) {
      // OpenSSL's text: `...:SSL routines:<function>:<reason>:<file>:<line>:`; the reason says it.
      const reason = /SSL routines:[^:]*:([^:]+)/.exec(err.message)?.[1] ?? err.message.split('\n')[0];
      return new InitTlsError(`the TLS handshake with the coordinator at ${url} failed (${reason}): does it serve TLS (--tls-cert, --tls-key)? If not, connect with ws://`, { cause: err });
    }
  }
  // A TLS coordinator drops a plain connection without a word: say what it may be.
  const hint = url.startsWith('ws:') && code === 'ECONNRESET' ? ' (a coordinator serving TLS drops ws:// connections so: if it does, connect with wss://, --ca or DISTSAMPLER_CA)' : '';
  return new InitConnectError(`cannot reach the coordinator at ${url}: ${err.message}${hint}`, { cause: err });
}

/**
 * Worth another try: nobody listening yet, an attempt that timed out, or the coordinator went
 * away mid-handshake. A refusal (4xxx, a wrong token, an abort, a failed TLS handshake) is final.
 */
export function retryable(err: unknown): boolean {
  if (err instanceof InitConnectError || err instanceof InitTimeoutError) return true;
  return err instanceof ProtocolError && RECONNECTABLE.has(err.closeCode);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Like a torchrun worker waiting for its store: keeps trying until the coordinator is up and the
 * group complete, or `timeoutMs` has passed (then the last attempt's error).
 */
export async function connect(endpoint: Endpoint, rank: number | undefined, timeoutMs: number, clock: RetryClock = {}): Promise<Handshake> {
  const backoff = new Backoff({ ...CONNECT_BACKOFF, timeoutMs, ...clock });
  for (;;) {
    try {
      return await handshake(endpoint, rank, Math.max(1, backoff.remaining()));
    } catch (err) {
      const delay = retryable(err) ? backoff.next() : undefined;
      if (delay === undefined) throw err;
      await sleep(delay);
    }
  }
}

/** Longest a single reconnect attempt waits for its welcome, so a half-open attempt is retried. */
const RECONNECT_ATTEMPT_MS = 5000;

/**
 * After the coordinator went away: waits a backoff delay, then tries again, until a welcome,
 * a final refusal (rejects with it) or `timeoutMs` (resolves undefined). Stops trying once
 * `cancelled()` (resolves undefined; a welcome that races it is closed).
 */
export async function reconnect(
  endpoint: Endpoint,
  rank: number,
  timeoutMs: number,
  cancelled: () => boolean,
  clock: RetryClock = {},
): Promise<Handshake | undefined> {
  const backoff = new Backoff({ ...RECONNECT_BACKOFF, timeoutMs, ...clock });
  for (let delay = backoff.next(); delay !== undefined && !cancelled(); delay = backoff.next()) {
    await sleep(delay);
    if (cancelled()) break;
    try {
      const joined = await handshake(endpoint, rank, Math.max(1, Math.min(RECONNECT_ATTEMPT_MS, backoff.remaining())));
      if (!cancelled()) return joined;
      joined.ws.terminate();
      break;
    } catch (err) {
      if (!retryable(err)) throw err;
    }
  }
  return undefined;
}
