/**
 * The live page and its observers: `GET /` serves the page (coordinator/livePage.ts), and a
 * WebSocket at `/observe` pushes snapshots of the run to it. Observers are read-only and never
 * workers: they never reach the core, are not counted in the group, and whatever they send closes
 * them. They are bounded: one merged state, at most one snapshot per tick, and a slow observer is
 * skipped rather than waited for. Part of the shell: it keeps time and holds sockets.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { CoordinatorEvents } from './coreTypes.ts';
import type { CollectiveInFlight } from './groupCore.ts';
import { DENIED_PAGE_HTML, LIVE_PAGE_HTML, LIVE_PAGE_SCRIPT } from './livePage.ts';
import type { RunReport } from './report.ts';

/** The observers' WebSocket path (workers connect at any other). */
export const OBSERVE_PATH = '/observe';
/** The close code for an observer that sent something: observers only listen (policy violation). */
export const OBSERVER_SENT_CLOSE_CODE = 1008;
const COOKIE = 'distsampler_live';
/** A rank of the current pass, as the page shows it. */
export type ObservedRankState = 'joining' | 'alive' | 'dead' | 'left' | 'replaced' | 'standby';

/** One rank's row. */
export interface ObservedRank {
  rank: number;
  state: ObservedRankState;
  /** Positions of its shard acknowledged in the current pass (by whichever worker held them). */
  acknowledged: number;
  numSamples: number;
}

/** One of the report's events as it happened. */
export interface ObservedEvent {
  epoch: number | null;
  type: string;
  rank: number | null;
  detail: string;
  /** ISO 8601, when the coordinator knows it. */
  at?: string;
}

/** What each observer gets: the whole merged state, never a delta, so a skipped one loses nothing. */
export interface ObserverSnapshot {
  t: 'snapshot';
  /** Grows with every change: equal versions are equal snapshots. */
  version: number;
  /** When it was made (ms since 1970): the page's rates are differences between these. */
  at: number;
  phase: string;
  /** The pass in progress or last seen (below 0: an evaluation pass), null before the first. */
  epoch: number | null;
  generation: number;
  worldSize: number;
  liveRanks: number[];
  missingRanks: number[];
  /** Collectives still waiting for ranks, oldest first (a few). */
  collectives: Array<{ seq: number; op: string; arrived: number[]; waitingFor: number[] }>;
  ranks: ObservedRank[];
  /** Positions acknowledged and planned in the current pass. */
  consumed: number;
  planned: number;
  /** Summed over the passes audited so far (the report's, once the run is done). */
  redelivered: number;
  missing: number;
  audited: number;
  /** The last events, oldest first. */
  events: ObservedEvent[];
  /** Set once the run ended. */
  finished: { ok: boolean; error?: string } | null;
}

/** What the observers read from the coordinator's `status()` at each snapshot. */
export interface ObservedStatus {
  readonly phase: string;
  readonly worldSize: number;
  readonly live: readonly number[];
  readonly missing: readonly number[];
  readonly generation: number;
  /** Collectives still waiting for ranks, oldest first (a few). */
  readonly collectives?: readonly CollectiveInFlight[];
}

export interface LiveObserverOptions {
  /** The coordinator's token; none: the page is open (a loopback-only coordinator). */
  readonly token?: string;
  /** Served over TLS: the cookie is Secure. */
  readonly secure?: boolean;
  /** At most one snapshot per observer this often (250 ms). */
  readonly intervalMs?: number;
  /** An observer with more than this buffered is skipped for the tick (1 MiB). */
  readonly maxBufferedBytes?: number;
  /** Events kept for the page (50). */
  readonly maxEvents?: number;
}

/** The live page's address: `http://host:port/` (`https://` with TLS; an IPv6 literal in brackets). */
export function livePageUrl(host: string, port: number, secure = false): string {
  const bracketed = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `${secure ? 'https' : 'http'}://${bracketed}:${port}/`;
}

/** The path of a request's URL, without its query. */
export function requestPath(url: string | undefined): string {
  return new URL(url ?? '/', 'http://localhost').pathname;
}

/**
 * A request for the live page: `/` from a browser (it accepts text/html), or `/?token=`. Other
 * clients asking for `/` (a plain fetch, curl's Accept: *\/*) keep getting the JSON hint.
 */
export function isPageRequest(req: IncomingMessage): boolean {
  const url = new URL(req.url ?? '/', 'http://localhost');
  return url.pathname === '/' && (url.searchParams.has('token') || (req.headers.accept ?? '').includes('text/html'));
}

/** Equal strings, in time independent of where they differ (equal lengths compared only). */
function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

// Only the page's own script may run, and it may only talk to this origin.
const CSP = `default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-${createHash('sha256').update(LIVE_PAGE_SCRIPT).digest('base64')}'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'`;

/**
 * The live page and its observers for one coordinator: serves `GET /`, admits `/observe`
 * upgrades, and keeps the merged state it pushes.
 *
 *   const observers = new LiveObservers(coordinator, () => coordinator.status(), { token });
 *   if (requestPath(req.url) === '/') observers.servePage(req, res);
 */
export class LiveObservers {
  private readonly wss: WebSocketServer;
  /** Each observer, and the version it was last sent. */
  private readonly observers = new Map<WebSocket, number>();
  private readonly token: string | undefined;
  /** The cookie's value: derived from the token, so the cookie is no bearer token for workers. */
  private readonly cookieValue: string | undefined;
  private readonly secure: boolean;
  private readonly intervalMs: number;
  private readonly maxBufferedBytes: number;
  private readonly maxEvents: number;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private version = 1;
  private epoch: number | null = null;
  private readonly ranks = new Map<number, ObservedRank>();
  private consumed = 0;
  private planned = 0;
  private redelivered = 0;
  private missing = 0;
  private audited = 0;
  private readonly events: ObservedEvent[] = [];
  private finished: ObserverSnapshot['finished'] = null;

  /**
   * @param events the Coordinator (or anything emitting its events), subscribed to at once
   * @param status its `status()`, read for each snapshot
   */
  constructor(
    events: EventEmitter<CoordinatorEvents>,
    private readonly status: () => ObservedStatus,
    options: LiveObserverOptions = {},
  ) {
    this.token = options.token || undefined;
    this.cookieValue = this.token && createHmac('sha256', this.token).update('distsampler live page').digest('base64url');
    this.secure = options.secure ?? false;
    this.intervalMs = options.intervalMs ?? 250;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 1024 * 1024;
    this.maxEvents = options.maxEvents ?? 50;
    // Observers send nothing: a small cap, and whatever fits closes them anyway.
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 4096, clientTracking: false });
    this.subscribe(events);
  }

  /** Observers connected now. */
  get count(): number {
    return this.observers.size;
  }

  /** Whether a request may see the run: the Bearer token or the page's cookie (always, without a token). */
  authorized(req: IncomingMessage): boolean {
    if (!this.token || !this.cookieValue) return true;
    const header = req.headers.authorization ?? '';
    if (header.startsWith('Bearer ') && sameSecret(header.slice(7), this.token)) return true;
    const cookie = (req.headers.cookie ?? '')
      .split(';')
      .map((part) => part.trim())
      .find((part) => part.startsWith(`${COOKIE}=`));
    return cookie !== undefined && sameSecret(cookie.slice(COOKIE.length + 1), this.cookieValue);
  }

  /**
   * `GET /`: the page; `/?token=T` with the right token sets the cookie and redirects (303) to `/`,
   * so the token leaves the address bar; without a valid token, 401 and a page with no data.
   */
  servePage(req: IncomingMessage, res: ServerResponse): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      return void res.end('GET only');
    }
    const given = new URL(req.url ?? '/', 'http://localhost').searchParams.get('token');
    if (given !== null && (!this.token || sameSecret(given, this.token))) {
      const headers: Record<string, string> = { location: '/', 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' };
      if (this.cookieValue) {
        headers['set-cookie'] = `${COOKIE}=${this.cookieValue}; Path=/; HttpOnly; SameSite=Strict${this.secure ? '; Secure' : ''}`;
      }
      res.writeHead(303, headers);
      return void res.end();
    }
    const ok = given === null && this.authorized(req);
    res.writeHead(ok ? 200 : 401, {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'content-security-policy': CSP,
      'referrer-policy': 'no-referrer',
      'x-content-type-options': 'nosniff',
    });
    res.end(req.method === 'HEAD' ? undefined : ok ? LIVE_PAGE_HTML : DENIED_PAGE_HTML);
  }

  /** An upgrade at `/observe`: 401 before upgrading without the token, else a new observer. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.closed || !this.authorized(req)) {
      const body = this.closed ? 'the coordinator is closing' : 'missing or wrong DISTSAMPLER_TOKEN';
      const status = this.closed ? '503 Service Unavailable' : '401 Unauthorized';
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      socket.destroy();
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.add(ws));
  }

  /** Sends the last snapshot to everyone who can take it, then closes every observer (1001). */
  close(): void {
    if (this.closed) return;
    this.tick();
    this.closed = true;
    clearInterval(this.timer);
    for (const ws of this.observers.keys()) {
      ws.close(1001, 'the coordinator closed');
      // A peer that never answers the close must not hold the server open.
      setTimeout(() => ws.terminate(), 1000).unref();
    }
    this.observers.clear();
  }

  /** The merged state as observers get it. */
  snapshot(): ObserverSnapshot {
    const status = this.status();
    return {
      t: 'snapshot',
      version: this.version,
      at: Date.now(),
      phase: status.phase,
      epoch: this.epoch,
      generation: status.generation,
      worldSize: status.worldSize,
      liveRanks: [...status.live],
      missingRanks: [...status.missing],
      collectives: (status.collectives ?? []).map((c) => ({ seq: c.seq, op: c.op, arrived: [...c.arrived], waitingFor: [...c.waitingFor] })),
      ranks: [...this.ranks.values()].sort((a, b) => a.rank - b.rank).map((r) => ({ ...r })),
      consumed: this.consumed,
      planned: this.planned,
      redelivered: this.redelivered,
      missing: this.missing,
      audited: this.audited,
      events: this.events.map((e) => ({ ...e })),
      finished: this.finished,
    };
  }

  private add(ws: WebSocket): void {
    this.observers.set(ws, 0);
    ws.on('message', () => ws.close(OBSERVER_SENT_CLOSE_CODE, 'observers are read-only'));
    ws.on('error', () => ws.terminate());
    ws.on('close', () => {
      this.observers.delete(ws);
      if (this.observers.size === 0) this.stopTimer();
    });
    // The current state at once, not a tick later.
    this.send(ws, JSON.stringify(this.snapshot()));
    this.timer ??= setInterval(() => this.tick(), this.intervalMs).unref();
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Each observer behind the current version that is not backed up gets one snapshot, made once. */
  private tick(): void {
    let text: string | undefined;
    for (const [ws, sent] of this.observers) {
      if (sent === this.version || ws.readyState !== ws.OPEN) continue;
      // Backed up: it gets a later snapshot once it drained; the group never waits for it.
      if (ws.bufferedAmount > this.maxBufferedBytes) continue;
      text ??= JSON.stringify(this.snapshot());
      this.send(ws, text);
    }
  }

  private send(ws: WebSocket, text: string): void {
    if (ws.readyState !== ws.OPEN) return;
    this.observers.set(ws, this.version);
    ws.send(text);
  }

  private changed(): void {
    this.version++;
  }

  private rank(rank: number): ObservedRank {
    let row = this.ranks.get(rank);
    if (!row) this.ranks.set(rank, (row = { rank, state: 'alive', acknowledged: 0, numSamples: 0 }));
    return row;
  }

  private subscribe(events: EventEmitter<CoordinatorEvents>): void {
    events.on('joined', ({ rank, rejoined, standby }) => {
      const known = this.ranks.get(rank);
      const row = this.rank(rank);
      // A new worker on a dead rank of the pass takes it over; any other newcomer waits for a pass.
      row.state = standby ? 'standby' : rejoined ? 'alive' : known?.state === 'dead' ? 'replaced' : 'joining';
      this.changed();
    });
    events.on('epochStart', ({ epoch, worldSize, numSamples, ranks }) => {
      this.epoch = epoch;
      this.consumed = 0;
      this.planned = worldSize * numSamples;
      const members = new Set(ranks.map((r) => r.rank));
      const standbys = [...this.ranks.values()].filter((r) => r.state === 'standby' && r.rank >= worldSize);
      this.ranks.clear();
      // A rank missing from the members died before the pass began (an empty list says nothing).
      for (let rank = 0; rank < worldSize; rank++) {
        this.ranks.set(rank, { rank, state: members.size === 0 || members.has(rank) ? 'alive' : 'dead', acknowledged: 0, numSamples });
      }
      for (const standby of standbys) this.ranks.set(standby.rank, standby);
      this.changed();
    });
    events.on('progress', (p) => {
      // A restarted coordinator continues a pass it never saw start.
      if (p.epoch !== this.epoch) {
        this.epoch = p.epoch;
        this.ranks.clear();
      }
      const row = this.rank(p.rank);
      row.acknowledged = p.acknowledged;
      row.numSamples = p.numSamples;
      this.consumed = p.consumed;
      this.planned = p.planned;
      this.changed();
    });
    events.on('event', (event) => {
      this.events.push({ epoch: event.epoch, type: event.type, rank: event.rank, detail: event.detail, ...(event.at ? { at: event.at } : {}) });
      if (this.events.length > this.maxEvents) this.events.splice(0, this.events.length - this.maxEvents);
      if (event.rank !== null && event.epoch === this.epoch && this.ranks.has(event.rank)) {
        const row = this.rank(event.rank);
        if (event.type === 'death') row.state = 'dead';
        else if (event.type === 'leave') row.state = 'left';
        else if (event.type === 'replace') row.state = 'replaced';
      }
      this.changed();
    });
    events.on('epochAudit', (audit) => {
      this.redelivered += audit.redelivered;
      this.missing += audit.missing;
      this.audited++;
      this.consumed = audit.consumed;
      this.planned = audit.planned;
      this.changed();
    });
    events.on('done', (report) => {
      this.finishedWith(report);
      this.changed();
      // The end goes out at once: the server may close right after.
      this.tick();
    });
  }

  /** The report's totals win: a late report can amend an audit (what a lost worker delivered twice). */
  private finishedWith(report: RunReport): void {
    const passes = [...report.epochs, ...report.eval.map((e) => e.pass)];
    this.redelivered = passes.reduce((sum, p) => sum + p.redelivered, 0);
    this.missing = passes.reduce((sum, p) => sum + p.missing, 0);
    this.audited = passes.length;
    this.finished = { ok: report.ok, ...(report.error ? { error: report.error } : {}) };
  }
}
