/**
 * Collective values and results past the 64 KiB frame limit, in chunks: over a real coordinator on
 * port 0 (broadcast and allGather of several MB), and the bounds on both sides.
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Collectives } from '../coordinator/collectives.ts';
import { CloseCode, MAX_COLLECTIVE_VALUE_BYTES, MAX_FRAME_BYTES, PROTOCOL_VERSION, type ClientMessage, type ServerMessage } from '../shared/protocol.ts';
import { jsonTextPieces, MAX_CHUNK_DATA_BYTES, utf8Bytes } from '../shared/jsonChunks.ts';
import { CollectiveInvalidError, CollectivesClient, CollectiveValueTooLargeError } from '../worker/collectivesClient.ts';
import { FakeScheduler } from './support/fakeScheduler.ts';
import { useLiveGroups } from './support/liveGroup.ts';

const { startCoordinator, startGroup } = useLiveGroups();

/** About `bytes` of JSON: records with quotes, escapes, non-ASCII and astral characters, so chunk edges fall everywhere. */
function bigValue(rank: number, bytes: number): Array<{ rank: number; i: number; text: string }> {
  const out: Array<{ rank: number; i: number; text: string }> = [];
  const text = 'a "quoted" \\ path, é, 猫, 😀 and more ';
  for (let i = 0, size = 0; size < bytes; i++) {
    const record = { rank, i, text: `${text}${i}` };
    out.push(record);
    size += utf8Bytes(JSON.stringify(record)) + 1;
  }
  return out;
}

describe('chunked collectives over a real coordinator', () => {
  it('allGather of about 1 MB per rank (a 4 MB result) round-trips exactly on every rank', async () => {
    const { pgs } = await startGroup(4);
    const values = pgs.map((pg) => bigValue(pg.rank, 1_000_000));
    const results = await Promise.all(pgs.map((pg) => pg.allGather(values[pg.rank])));
    for (const result of results) expect(result).toEqual(values);
    // The group goes on as before.
    expect(await Promise.all(pgs.map((pg) => pg.allReduce(1)))).toEqual([4, 4, 4, 4]);
  });

  it('broadcast of about 2 MB from rank 2 reaches every rank', async () => {
    const { pgs } = await startGroup(3);
    const value = bigValue(2, 2_000_000);
    const results = await Promise.all(pgs.map((pg) => pg.broadcast(pg.rank === 2 ? value : undefined, 2)));
    for (const result of results) expect(result).toEqual(value);
  });

  it('a chunked allGather and the calls right behind it, not awaited, keep their order', async () => {
    const { pgs } = await startGroup(2);
    const calls = pgs.map((pg) => Promise.all([pg.allGather(bigValue(pg.rank, 200_000)), pg.barrier(), pg.allGather(pg.rank)]));
    const results = await Promise.all(calls);
    for (const [gathered, , small] of results) {
      expect(gathered).toEqual([bigValue(0, 200_000), bigValue(1, 200_000)]);
      expect(small).toEqual([0, 1]);
    }
  });
});

describe('bounds on chunked values', () => {
  it('a value over the per-call limit is refused with CollectiveValueTooLargeError before any of it is sent; the coordinator is told', async () => {
    const sent: ClientMessage[] = [];
    const client = new CollectivesClient({ rank: () => 0, send: (m) => sent.push(m), scheduler: new FakeScheduler(), maxValueBytes: 100_000 });
    const err: unknown = await client.allGather('x'.repeat(200_000)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CollectiveValueTooLargeError);
    expect(err).toMatchObject({ code: 'ERR_COLLECTIVE_VALUE_TOO_LARGE', seq: 0, bytes: 200_002, message: 'allGather #0: the value is 200002 bytes of JSON, over the 100000-byte limit of one call' });
    expect(sent).toEqual([{ t: 'collective', seq: 0, op: 'allGather', timeoutMs: 30000, refused: expect.stringMatching(/over the 100000-byte limit/), gen: 0 }]);
  });

  it('the wire refuses an announced size over MAX_COLLECTIVE_VALUE_BYTES with 4000', async () => {
    const ws = await rawMember(await startCoordinator(1));
    const closed = closeOf(ws);
    ws.send(JSON.stringify({ t: 'collective', seq: 0, op: 'allGather', timeoutMs: 0, bytes: MAX_COLLECTIVE_VALUE_BYTES + 1 }));
    expect(await closed).toMatchObject({ code: CloseCode.Malformed, reason: expect.stringMatching(/bytes/) });
  }, 20_000);

  it('the coordinator refuses chunks past the announced size, chunks of nothing announced, a second value while one is assembling, and a text that is not JSON', () => {
    const collectives = new Collectives({ members: () => [0, 1], send: () => {}, scheduler: new FakeScheduler() });
    const header = (seq: number, bytes: number): ClientMessage => ({ t: 'collective', seq, op: 'allGather', timeoutMs: 0, bytes });
    expect(collectives.receive(0, { t: 'collectiveChunk', seq: 0, data: '1' })).toMatchObject({ closeCode: CloseCode.Malformed, reason: expect.stringMatching(/announced no chunked value/) });
    expect(collectives.receive(0, header(0, 3) as never)).toBeUndefined();
    expect(collectives.receive(0, header(1, 3) as never)).toMatchObject({ reason: expect.stringMatching(/still sending the chunks of #0/) });
    expect(collectives.receive(0, { t: 'collectiveChunk', seq: 0, data: '1234' })).toMatchObject({ reason: expect.stringMatching(/pass the 3 bytes announced/) });
    expect(collectives.receive(1, header(0, 3) as never)).toBeUndefined();
    expect(collectives.receive(1, { t: 'collectiveChunk', seq: 0, data: '[1' })).toBeUndefined();
    expect(collectives.receive(1, { t: 'collectiveChunk', seq: 0, data: ',' })).toMatchObject({ reason: expect.stringMatching(/not JSON/) });
  });

  it('an assembled value counts toward its member as it arrives and is released when the collective settles', () => {
    const sent: ServerMessage[] = [];
    const collectives = new Collectives({ members: () => [0, 1], send: (_to, m) => sent.push(m), scheduler: new FakeScheduler() });
    const text = JSON.stringify('y'.repeat(150_000));
    const pieces = [...jsonTextPieces(text)];
    expect(pieces.length).toBeGreaterThan(2);
    collectives.receive(0, { t: 'collective', seq: 0, op: 'allGather', timeoutMs: 0, bytes: utf8Bytes(text) });
    collectives.receive(0, { t: 'collectiveChunk', seq: 0, data: pieces[0] });
    expect(collectives.chunkedBytesHeldBy(0)).toBe(utf8Bytes(pieces[0]));
    for (const data of pieces.slice(1)) collectives.receive(0, { t: 'collectiveChunk', seq: 0, data });
    expect(collectives.chunkedBytesHeldBy(0)).toBe(utf8Bytes(text));
    // A value that fits a frame is charged to the other budget, as before.
    expect(collectives.heldBy(0)).toEqual({ count: 1, bytes: 0 });
    collectives.receive(1, { t: 'collective', seq: 0, op: 'allGather', timeoutMs: 0, value: 'z' });
    expect(collectives.chunkedBytesHeldBy(0)).toBe(0);
    // The result went out chunked: an announcement, then pieces that each fit a frame.
    expect(sent[0]).toMatchObject({ t: 'collectiveResult', seq: 0, bytes: expect.any(Number) });
    expect(sent.slice(1).every((m) => m.t === 'collectiveChunk' && Buffer.byteLength(JSON.stringify(m)) <= MAX_FRAME_BYTES)).toBe(true);
  });
});

describe('jsonTextPieces', () => {
  it('cuts any text into pieces that fit a frame escaped, never inside a surrogate pair, and that join back to it', () => {
    const text = JSON.stringify(bigValue(0, 400_000)) + '"\\'.repeat(40_000) + '😀'.repeat(30_000);
    const pieces = [...jsonTextPieces(text)];
    expect(pieces.join('')).toBe(text);
    for (const piece of pieces) {
      expect(utf8Bytes(JSON.stringify(piece))).toBeLessThanOrEqual(MAX_CHUNK_DATA_BYTES);
      const last = piece.charCodeAt(piece.length - 1);
      expect(last >= 0xd800 && last <= 0xdbff).toBe(false);
    }
  });
});

it('a value that is not JSON is still refused as invalid, not chunked', async () => {
  const client = new CollectivesClient({ rank: () => 0, send: () => {}, scheduler: new FakeScheduler() });
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  await expect(client.allGather(cyclic as never)).rejects.toBeInstanceOf(CollectiveInvalidError);
});

/** A bare WebSocket member of a group of one, resolved once welcomed. */
async function rawMember(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const welcomed = new Promise((resolve) => ws.once('message', resolve));
  ws.send(JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION, workerId: 'raw', pid: 1 }));
  await welcomed;
  return ws;
}

function closeOf(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}
