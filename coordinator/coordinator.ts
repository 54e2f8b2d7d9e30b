/**
 * The coordinator's shell: an HTTP server with ws on its upgrade event, Node's timers and the
 * journal file, translated into inputs of the pure GroupCore and back from its effects. Every
 * decision is the core's; this file only moves bytes and keeps time.
 */
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { createPrivateKey, timingSafeEqual, X509Certificate, type KeyObject } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import { isHost, isLoopback } from '../shared/endpoint.ts';
import { CloseCode, closeReason, encode, MAX_FRAME_BYTES, parseClientMessage, type RunConfig } from '../shared/protocol.ts';
import { trace, tracing } from '../shared/debugTrace.ts';
import { CorkedWrites } from './corkedWrites.ts';
import { describeEffect } from './effectText.ts';
import { EffectKind, InputKind, type CoordinatorEvents, type CoreEffect, type CoreInput, type PeerId, type TimerId } from './coreTypes.ts';
import { GroupCore } from './groupCore.ts';
import type { PlansAhead } from './planAuditor.ts';
import { Journal, type JournalState, type WorldSizeRange } from './journal.ts';
import { CoordinatorMetrics } from './metrics.ts';
import { isPageRequest, LiveObservers, OBSERVE_PATH, requestPath } from './observers.ts';
import { CoordinatorConfigError, resolveCoreSettings, type CoreSettingsInput } from './options.ts';
import { PeerSocket } from './peerSocket.ts';
import type { RunReport } from './report.ts';

export { FailurePolicy, type FailurePolicyName, CoordinatorConfigError } from './options.ts';
export type { CoordinatorEvents } from './coreTypes.ts';
export { isLoopback } from '../shared/endpoint.ts';

export type CoordinatorOptions = CoreSettingsInput & {
  /** A fixed world size, or torchrun's elastic MIN:MAX. */
  readonly worldSize: number | WorldSizeRange;
  readonly config: RunConfig;
  /** Bind address; 127.0.0.1 by default. A non-loopback host needs a token. */
  readonly host?: string;
  /** 0 (the default) asks the OS for a free port. */
  readonly port?: number;
  /** Shared secret checked at the WebSocket upgrade and for GET /status and GET /metrics. */
  readonly token?: string;
  /** Serve TLS: workers connect with wss://, GET /status is HTTPS. Without it the token travels in clear. */
  readonly tls?: CoordinatorTls;
  /** Append-only journal for restarts; created anew unless `restore` continues it. */
  readonly journalPath?: string;
  /** State read from the journal: a restarted coordinator continues where it stopped. */
  readonly restore?: JournalState;
  /** With `restore`: a new group (of any size) takes over the remaining positions. */
  readonly resume?: boolean;
  /**
   * Where the audit's plans come from, derived ahead of their epoch off the event loop, made for
   * the run's config (a restored journal's, when there is one); the CLI gives worker/planSource.ts's
   * PlanSource (large permutations in a worker thread). Without it a permutation is derived in the
   * audit's first slice of its epoch, on the event loop.
   */
  readonly plans?: (config: RunConfig) => PlansAhead;
};

/** A certificate (chain) and its private key, PEM text or Buffers, as node:https takes them. */
export interface CoordinatorTls {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

/**
 * Why the server could not serve TLS with this certificate and key, or undefined if it can:
 * found at construction (and by the CLI before it launches anything), not at the first handshake.
 */
export function tlsProblem(tls: CoordinatorTls): string | undefined {
  // OpenSSL's messages start with `error:<hex>:<library>::`; the rest is what went wrong.
  const reason = (err: unknown) => (err instanceof Error ? err.message : String(err)).replace(/^error:[0-9A-F]+:[^:]*:[^:]*:/, '');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(tls.cert);
  } catch (err) {
    return `the certificate is not a PEM certificate (${reason(err)})`;
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(tls.key);
  } catch (err) {
    return `the private key cannot be read (${reason(err)}; an unencrypted PEM key is needed)`;
  }
  // OpenSSL keeps a key of another type (EC for an RSA certificate) in a slot of its own, unchecked.
  if (key.asymmetricKeyType !== cert.publicKey.asymmetricKeyType || !cert.checkPrivateKey(key)) {
    return "the private key and the certificate do not go together (the key is not the certificate's)";
  }
  try {
    createSecureContext({ cert: tls.cert, key: tls.key });
  } catch (err) {
    return `TLS cannot be served with them (${reason(err)})`;
  }
  return undefined;
}

/**
 * The process group's server: rendezvous, epochs, the ledger of acknowledged positions, the
 * audit, collectives and the store, over WebSockets on one HTTP server (HTTPS with `tls`).
 *
 *   const coordinator = new Coordinator({ worldSize: 4, config });
 *   const { host, port } = await coordinator.listen();
 *   const report = await coordinator.done;   // the run ended (ok or not)
 *   await coordinator.drained;               // every worker has left
 *   await coordinator.close();
 *
 * @throws CoordinatorConfigError for a world size, host, duration, run config or TLS pair it cannot serve
 */
export class Coordinator extends EventEmitter<CoordinatorEvents> {
  readonly config: RunConfig;
  readonly range: WorldSizeRange;
  /** Its Prometheus metrics, served at `GET /metrics`; `metrics.registry` to merge into your own. */
  readonly metrics: CoordinatorMetrics;
  /** The live page (`GET /`) and its read-only observers (`/observe`): never part of the group. */
  private readonly observers: LiveObservers;
  private readonly core: GroupCore;
  private readonly host: string;
  private readonly port: number;
  private readonly token: string | undefined;
  private readonly tls: CoordinatorTls | undefined;
  private readonly journal: Journal | undefined;
  private readonly sockets = new Map<PeerId, WebSocket>();
  /** The audit's plans, derived ahead (see deriveAhead), if the options gave a source. */
  private readonly auditPlans: PlansAhead | undefined;
  /** The TCP (or TLS) stream under each worker's WebSocket, corked while one input's frames are written. */
  private readonly streams = new WeakMap<WebSocket, Duplex>();
  private readonly timers = new Map<TimerId, NodeJS.Timeout>();
  private nextPeer = 1;
  private journalError: string | undefined;
  private idleQueued = false;
  private stopped = false;
  private http: Server | undefined;
  private wss: WebSocketServer | undefined;
  private resolveDone!: (report: RunReport) => void;
  /** Settles with the report when the run finishes or aborts (never rejects). */
  readonly done: Promise<RunReport>;
  private resolveDrained!: () => void;
  /**
   * Settles once the run has ended and every worker has left (destroy()), died, or outstayed
   * lingerMs. A process hosting the coordinator closes it after this, not right after `done`.
   */
  readonly drained: Promise<void>;

  constructor(options: CoordinatorOptions) {
    super();
    const settings = resolveCoreSettings(options);
    this.host = options.host ?? '127.0.0.1';
    this.port = options.port ?? 0;
    this.token = options.token;
    if (!isHost(this.host)) throw new CoordinatorConfigError(`host must be a host name or IP address, got '${this.host}'`);
    if (!isLoopback(this.host) && !this.token) {
      throw new CoordinatorConfigError(`refusing to listen on non-loopback host ${this.host} without a token (--token or DISTSAMPLER_TOKEN)`);
    }
    const tlsError = options.tls && tlsProblem(options.tls);
    if (tlsError) throw new CoordinatorConfigError(`tls: ${tlsError}`);
    this.tls = options.tls;
    const range = typeof options.worldSize === 'number' ? { min: options.worldSize, max: options.worldSize } : options.worldSize;
    // The run's config: a restored journal's wins over the options'.
    this.auditPlans = options.plans?.(options.restore ? options.restore.config : options.config);
    this.core = new GroupCore({ settings, config: options.config, range, restore: options.restore, resume: options.resume, journaling: options.journalPath !== undefined, ...(this.auditPlans ? { plans: this.auditPlans } : {}) });
    if (this.auditPlans) this.deriveAhead(options.config, this.auditPlans);
    this.config = this.core.config;
    this.range = this.core.range;
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.drained = new Promise((resolve) => (this.resolveDrained = resolve));
    // Subscribed before listen(), so it sees every event from 'listening' on.
    this.metrics = new CoordinatorMetrics(this, () => this.status());
    this.observers = new LiveObservers(this, () => this.status(), { token: this.token, secure: this.tls !== undefined });
    this.metrics.countObservers(() => this.observers.count);
    if (options.journalPath) {
      this.journal = options.restore ? Journal.append(options.journalPath) : Journal.create(options.journalPath, this.config, this.range);
    }
  }

  /**
   * Why the journal could not be written (disk full, file too large, I/O error), if it failed:
   * the run was stopped there, and the journal holds everything up to that point (resumable).
   */
  get journalFailure(): string | undefined {
    return this.journalError;
  }

  /** The largest group this coordinator admits. */
  get worldSize(): number {
    return this.range.max;
  }

  /**
   * Starts listening; resolves with the bound address (port 0 asks the OS for one) and whether
   * it serves TLS (`secure`: workers connect with wss://).
   */
  async listen(): Promise<{ host: string; port: number; secure: boolean }> {
    const respond = (req: IncomingMessage, res: ServerResponse): void => {
      // The page does its own access check: a cookie, or ?token= exchanged for one.
      if (isPageRequest(req)) return this.observers.servePage(req, res);
      const authorized = this.tokenMatches(req);
      if (authorized && req.url === '/metrics') return void this.serveMetrics(res);
      // With a token, the status (who is there, who is missing) and the metrics are for its holders only.
      const [status, body] = !authorized
        ? [401, { error: 'missing or wrong DISTSAMPLER_TOKEN' }]
        : req.url !== '/status'
          ? [426, { error: `a WebSocket endpoint: connect with ${this.tls ? 'wss' : 'ws'}://, or GET /status or GET /metrics (or open / in a browser: the live page)` }]
          : [200, this.status()];
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    // The upgrade, GET /status and GET /metrics work the same over either server.
    const http: Server = this.tls ? createHttpsServer({ cert: this.tls.cert, key: this.tls.key }, respond) : createServer(respond);
    const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, clientTracking: false, WebSocket: PeerSocket });
    http.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    wss.on('connection', (ws) => this.accept(ws));
    this.http = http;
    this.wss = wss;
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(this.port, this.host, () => {
        http.off('error', reject);
        resolve();
      });
    });
    const address = { host: this.host, port: (http.address() as AddressInfo).port };
    this.emit('listening', address);
    this.feed({ kind: InputKind.Start, now: Date.now() });
    return { ...address, secure: this.tls !== undefined };
  }

  /** A snapshot for `GET /status` and for humans. */
  status(): ReturnType<GroupCore['status']> {
    return this.core.status();
  }

  private async serveMetrics(res: ServerResponse): Promise<void> {
    try {
      const text = await this.metrics.text();
      res.writeHead(200, { 'content-type': this.metrics.contentType });
      res.end(text);
    } catch (err) {
      // A metric that could not be collected is the scraper's to see, not a reason to crash the run.
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: `metrics: ${err instanceof Error ? err.message : String(err)}` }));
    }
  }

  /** Stops everything: closes sockets and the server. The report settles `done` if not yet. */
  async close(reason = 'coordinator shutting down'): Promise<void> {
    if (!this.stopped) this.feed({ kind: InputKind.Shutdown, now: Date.now(), reason });
    await this.stop();
  }

  /**
   * Stops abruptly, as SIGKILL would: sockets dropped, no goodbye, nothing more journaled.
   * For fault simulation in tests; a new Coordinator can restore from the journal.
   */
  async crash(): Promise<void> {
    await this.stop();
  }

  private async stop(): Promise<void> {
    this.stopped = true;
    this.observers.close();
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    for (const ws of this.sockets.values()) ws.terminate();
    this.sockets.clear();
    this.journal?.close();
    this.resolveDrained();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    this.http?.closeAllConnections();
  }

  // ---- inputs -----------------------------------------------------------------------

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Observers never reach the core: their own auth (cookie or bearer), their own server.
    // The path is parsed only when it could be the observers' (a URL parse per worker adds up at 1,024).
    if (req.url?.includes(OBSERVE_PATH) && requestPath(req.url) === OBSERVE_PATH) return this.observers.upgrade(req, socket, head);
    if (!this.tokenMatches(req)) {
      const body = 'missing or wrong DISTSAMPLER_TOKEN';
      socket.end(`HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      socket.destroy();
      return;
    }
    this.wss!.handleUpgrade(req, socket, head, (ws) => {
      this.streams.set(ws, socket);
      this.wss!.emit('connection', ws, req);
    });
  }

  private tokenMatches(req: IncomingMessage): boolean {
    if (!this.token) return true;
    const header = req.headers.authorization ?? '';
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
    const expected = Buffer.from(this.token);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  private accept(ws: WebSocket): void {
    if (this.stopped) return void ws.terminate();
    const peer = this.nextPeer++;
    this.sockets.set(peer, ws);
    ws.on('pong', () => this.feed({ kind: InputKind.Pong, now: Date.now(), peer }));
    ws.on('message', (data, isBinary) => {
      if (isBinary) return this.feed({ kind: InputKind.Refused, now: Date.now(), peer, closeCode: CloseCode.Malformed, reason: 'binary frames are not part of the protocol' });
      const text = data.toString();
      if (tracing()) trace('coordinator', () => `<- peer ${peer} ${text}`);
      const parsed = parseClientMessage(text);
      if (!parsed.ok) return this.feed({ kind: InputKind.Refused, now: Date.now(), peer, closeCode: CloseCode.Malformed, reason: parsed.reason });
      this.feed({ kind: InputKind.Frame, now: Date.now(), peer, message: parsed.message });
    });
    ws.on('error', (err: Error & { code?: string }) => {
      // ws has already closed the socket ('close' follows); an oversized frame is a refusal worth naming.
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        this.feed({ kind: InputKind.Refused, now: Date.now(), peer, closeCode: CloseCode.FrameTooLarge, reason: `frame over the ${MAX_FRAME_BYTES}-byte limit` });
      }
    });
    ws.on('close', (code) => {
      this.sockets.delete(peer);
      this.feed({ kind: InputKind.Closed, now: Date.now(), peer, code });
    });
    this.feed({ kind: InputKind.Connected, now: Date.now(), peer });
  }

  /**
   * The audit's permutations are derived in a worker thread ahead of their epoch: the first one
   * during the rendezvous, each next one while the epoch before it runs. Deriving one on the event
   * loop would hold up every ack for tens to hundreds of ms (2M to 1e7 indices).
   */
  private deriveAhead(config: RunConfig, plans: PlansAhead): void {
    const prepare = (epoch: number, ahead: boolean): void => {
      if (epoch >= config.epochs) return;
      void (ahead ? plans.prepareAhead(epoch) : plans.prepare(epoch)).then(() => this.offerIdle());
    };
    if (this.core.status().epoch === null) prepare(0, false);
    this.on('epochStart', ({ epoch }) => {
      if (epoch < 0) return;
      prepare(epoch, false);
      prepare(epoch + 1, true);
    });
  }

  private feed(input: CoreInput): void {
    if (this.stopped) return;
    this.carryOut(this.core.handle(input));
    this.offerIdle();
  }

  /** Offers the core an idle turn (the audit's next slice) when it wants one. */
  private offerIdle(): void {
    if (this.stopped) return;
    if (this.core.wantsIdle && !this.idleQueued) {
      // The plan audit runs in slices between other work, never holding up an ack.
      this.idleQueued = true;
      setImmediate(() => {
        this.idleQueued = false;
        this.feed({ kind: InputKind.Idle, now: Date.now() });
      });
    }
  }

  // ---- effects ----------------------------------------------------------------------

  private carryOut(effects: readonly CoreEffect[]): void {
    const writes = new CorkedWrites();
    let journalFailure: string | undefined;
    try {
      journalFailure = this.carryOutCorked(effects, writes);
    } finally {
      writes.flush();
    }
    // Disk full, file too large, I/O error: the run stops cleanly, its journal still resumable.
    if (journalFailure !== undefined) {
      this.journalError = journalFailure;
      this.feed({ kind: InputKind.JournalFailed, now: Date.now(), error: journalFailure });
    }
  }

  /** Carries out the effects, frames held back in `writes`; returns why the journal failed, if it did. */
  private carryOutCorked(effects: readonly CoreEffect[], writes: CorkedWrites): string | undefined {
    let journalFailure: string | undefined;
    const traced = tracing();
    for (const effect of effects) {
      if (traced) trace('coordinator', () => `decides ${describeEffect(effect)}`);
      switch (effect.kind) {
        case EffectKind.Send: {
          // What follows a journal record that could not be written is not durable: never send it.
          if (journalFailure !== undefined) break;
          const frame = Buffer.from(encode(effect.message));
          for (const peer of effect.peers) {
            const ws = this.sockets.get(peer);
            // A Buffer goes out as is (a server does not mask); binary: false keeps it a text frame.
            if (ws && ws.readyState === ws.OPEN) {
              const stream = this.streams.get(ws);
              if (stream) writes.hold(stream);
              ws.send(frame, { binary: false });
            }
          }
          break;
        }
        case EffectKind.Ping: {
          const ws = this.sockets.get(effect.peer);
          if (ws && ws.readyState === ws.OPEN) ws.ping();
          break;
        }
        case EffectKind.Close:
          writes.flush();
          this.sockets.get(effect.peer)?.close(effect.code, closeReason(effect.reason));
          break;
        case EffectKind.Terminate:
          writes.flush();
          this.sockets.get(effect.peer)?.terminate();
          break;
        case EffectKind.Journal:
        case EffectKind.Compact:
          if (journalFailure !== undefined || !this.journal) break;
          try {
            if (effect.kind === EffectKind.Journal) this.journal.write(effect.record);
            else this.journal.compact(effect.state);
          } catch (err) {
            journalFailure = err instanceof Error ? err.message : String(err);
          }
          break;
        case EffectKind.Emit:
          // A listener may close the coordinator (terminating sockets): what was sent goes out first.
          writes.flush();
          // A measurement is for the metrics only: it is no event of the Coordinator's.
          if (effect.event.name === 'collectiveSettled') {
            this.metrics.observeCollective(effect.event.payload);
            break;
          }
          this.emit(effect.event.name, effect.event.payload as never);
          if (effect.event.name === 'done') this.resolveDone(effect.event.payload);
          break;
        case EffectKind.ArmTimer: {
          const timer = setTimeout(() => {
            this.timers.delete(effect.id);
            this.feed({ kind: InputKind.Timer, now: Date.now(), id: effect.id });
          }, Math.max(0, effect.atMs - Date.now()));
          this.timers.set(effect.id, timer);
          break;
        }
        case EffectKind.CancelTimer:
          clearTimeout(this.timers.get(effect.id));
          this.timers.delete(effect.id);
          break;
        case EffectKind.Drained:
          this.resolveDrained();
          break;
      }
    }
    return journalFailure;
  }
}
