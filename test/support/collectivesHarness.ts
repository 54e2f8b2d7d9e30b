/** Collectives in memory: the coordinator side alone, or clients wired to it through the wire schemas. */
import { Collectives, type CollectiveMessage, type CollectiveRefusal } from '../../coordinator/collectives.ts';
import { KeyValueStore } from '../../coordinator/kvStore.ts';
import { encode, parseClientMessage, parseServerMessage, type ClientMessage, type ServerMessage } from '../../shared/protocol.ts';
import { CollectivesClient } from '../../worker/collectivesClient.ts';
import { FakeScheduler } from './fakeScheduler.ts';

export interface Sent {
  rank: number;
  message: ServerMessage;
}

/** A Collectives whose members are `state.members` (change it to change the group). */
export function collectivesSide(ranks: readonly number[] = [0, 1, 2, 3]) {
  const scheduler = new FakeScheduler();
  const state = { members: [...ranks] };
  const sent: Sent[] = [];
  const collectives = new Collectives({ members: () => state.members, send: (to, message) => to.forEach((rank) => sent.push({ rank, message })), scheduler });
  return { scheduler, state, sent, collectives };
}

/** One rank's collective frame, with a 5 s timeout unless told otherwise. */
export function call(seq: number, op: CollectiveMessage['op'], extra: Partial<CollectiveMessage> = {}): CollectiveMessage {
  return { t: 'collective', seq, op, timeoutMs: 5000, ...extra };
}

/** Round-trips through the wire encoding and schema, so the tests also prove every frame is valid. */
export function overWire<M extends ClientMessage | ServerMessage>(message: M, parse: (raw: string) => { ok: boolean }): M {
  const raw = encode(message);
  const parsed = parse(raw) as { ok: true; message: M } | { ok: false; reason: string };
  if (!parsed.ok) throw new Error(`invalid frame ${raw}: ${parsed.reason}`);
  return parsed.message;
}

/**
 * W clients wired to one Collectives and one KeyValueStore in memory. A contribution the
 * coordinator refuses (the core would close that connection) is recorded in `refusals`.
 */
export function clientGroup(size: number, clientOptions: { timeoutMs?: number; graceMs?: number } = {}) {
  const scheduler = new FakeScheduler();
  const state = { members: Array.from({ length: size }, (_, r) => r) };
  const clients: CollectivesClient[] = [];
  const toClient = (rank: number, message: ServerMessage): void => {
    const wired = overWire(message, parseServerMessage);
    if (!clients[rank].handle(wired)) throw new Error(`client ${rank} did not consume ${wired.t}`);
  };
  const wiring = {
    collectives: new Collectives({ members: () => state.members, send: (to, message) => to.forEach((rank) => toClient(rank, message)), scheduler }),
  };
  const store = new KeyValueStore({ send: toClient, scheduler });
  const outbox: { rank: number; message: ClientMessage }[] = [];
  const refusals: { rank: number; refusal: CollectiveRefusal }[] = [];
  for (let rank = 0; rank < size; rank++) {
    clients.push(
      new CollectivesClient({
        rank: () => rank,
        send: (message) => {
          const wired = overWire(message, parseClientMessage);
          outbox.push({ rank, message: wired });
          if (wired.t === 'collective') {
            const refusal = wiring.collectives.contribute(rank, wired);
            if (refusal) refusals.push({ rank, refusal });
          } else if (wired.t === 'store') store.request(rank, wired);
        },
        scheduler,
        ...clientOptions,
      }),
    );
  }
  return {
    scheduler,
    state,
    clients,
    get collectives(): Collectives {
      return wiring.collectives;
    },
    /** A coordinator restart: a new, empty Collectives; the clients keep their numbering. */
    restartCoordinator(): void {
      wiring.collectives = new Collectives({ members: () => state.members, send: (to, message) => to.forEach((rank) => toClient(rank, message)), scheduler });
    },
    store,
    outbox,
    refusals,
  };
}
