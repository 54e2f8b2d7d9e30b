import { describe, expect, it } from 'vitest';
import { CloseCode, closeReason, encode, MAX_CLOSE_REASON_BYTES, parseClientMessage, parseServerMessage, ProtocolError, PROTOCOL_VERSION } from '../shared/protocol.ts';
import { runConfig } from './support/runConfig.ts';

describe('protocol validation', () => {
  it('accepts every well-formed client message', () => {
    const messages = [
      { t: 'hello', v: PROTOCOL_VERSION, workerId: 'w', pid: 1, rank: 0, length: 10 },
      { t: 'ack', epoch: 0, unit: 1, cursor: 3, inflight: { unit: 1, end: 5 } },
      { t: 'ack', epoch: 0, unit: 1, cursor: 5, inflight: null },
      { t: 'epochReport', epoch: 0, samples: 5, digest: 'a'.repeat(16), waitMs: 1.5 },
      { t: 'collective', seq: 0, op: 'allReduce', value: [1, 2], reduce: 'sum', timeoutMs: 100 },
      { t: 'store', req: 1, op: 'set', keys: ['k'], value: 'v', timeoutMs: 100 },
      { t: 'leave' },
    ];
    for (const m of messages) expect(parseClientMessage(JSON.stringify(m))).toMatchObject({ ok: true, message: m });
  });

  it('rejects invalid JSON, unknown types, wrong types and missing fields with a reason', () => {
    expect(parseClientMessage('{"t":"hello"')).toEqual({ ok: false, reason: 'frame is not valid JSON' });
    expect(parseClientMessage('{"t":"nope"}')).toMatchObject({ ok: false });
    expect(parseClientMessage('{"t":"ack","epoch":"0","unit":1,"cursor":1,"inflight":null}')).toMatchObject({ ok: false });
    expect(parseClientMessage('{"t":"ack","epoch":0,"unit":-1,"cursor":1,"inflight":null}')).toMatchObject({ ok: false });
    expect(parseClientMessage('{"t":"hello","v":1}')).toMatchObject({ ok: false });
    expect(parseClientMessage('[]')).toMatchObject({ ok: false });
    expect(parseClientMessage('null')).toMatchObject({ ok: false });
    const r = parseClientMessage('{"t":"ack","epoch":0,"unit":1.5,"cursor":1,"inflight":null}');
    expect(r.ok ? '' : r.reason).toMatch(/unit/);
  });

  it('refuses a value nested too deeply for the schema instead of throwing', () => {
    const depth = 20_000;
    const frame = `{"t":"collective","seq":0,"op":"allGather","timeoutMs":0,"value":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    expect(parseClientMessage(frame)).toEqual({ ok: false, reason: 'frame nests too deeply' });
    const reply = `{"t":"collectiveResult","seq":0,"value":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    expect(parseServerMessage(reply)).toEqual({ ok: false, reason: 'frame nests too deeply' });
  });

  it('cuts close reasons to 123 bytes of UTF-8 on a character boundary', () => {
    expect(closeReason('short')).toBe('short');
    const cut = closeReason(`rank 3 is taken by ${'ü'.repeat(100)}`);
    expect(Buffer.byteLength(cut, 'utf8')).toBeLessThanOrEqual(MAX_CLOSE_REASON_BYTES);
    expect(cut.startsWith('rank 3 is taken by üü')).toBe(true);
    expect(cut).not.toContain('\uFFFD');
    expect(Buffer.byteLength(closeReason('€'.repeat(60)), 'utf8')).toBe(123);
  });

  it('round-trips server messages through encode and parse', () => {
    const welcome = {
      t: 'welcome' as const,
      v: PROTOCOL_VERSION,
      rank: 1,
      worldSize: 2,
      minWorldSize: 2,
      maxWorldSize: 2,
      workerId: 'w',
      config: runConfig({ length: 10, seed: '-5', batchSize: 4, epochs: 2 }),
    };
    expect(parseServerMessage(encode(welcome))).toEqual({ ok: true, message: welcome });
  });

  it('names the close code in ProtocolError', () => {
    const e = new ProtocolError(CloseCode.RankTaken, 'rank 0 is already taken');
    expect(e.code).toBe('ERR_RANK_TAKEN');
    expect(e.closeCode).toBe(4002);
  });
});
