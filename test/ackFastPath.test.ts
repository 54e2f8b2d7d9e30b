/** parseClientMessage's fast path for acks takes and refuses exactly what the schema does. */
import { describe, expect, it } from 'vitest';
import { ClientMessageSchema, parseClientMessage } from '../shared/protocol.ts';
import { testRng } from './support/testRng.ts';

describe('the ack fast path', () => {
  it('agrees with the schema on valid acks and on every near miss', () => {
    const rng = testRng(14);
    const values: unknown[] = [0, 1, 7, -1, 2.5, -0, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 2, '3', null, true, [], {}, { unit: 1, end: 2 }];
    const pick = () => values[Math.floor(rng() * values.length)];
    for (let i = 0; i < 5000; i++) {
      const ack: Record<string, unknown> = { t: 'ack', epoch: pick(), unit: pick(), cursor: pick(), inflight: rng() < 0.3 ? null : rng() < 0.5 ? { unit: pick(), end: pick() } : pick() };
      if (rng() < 0.1) ack.extra = 1;
      if (rng() < 0.05) delete ack.cursor;
      const raw = JSON.stringify(ack);
      const fast = parseClientMessage(raw);
      const schema = ClientMessageSchema.safeParse(JSON.parse(raw));
      expect(fast.ok, raw).toBe(schema.success);
      if (fast.ok && schema.success) expect(fast.message, raw).toEqual(schema.data);
    }
  });

  it('takes a plain ack as it is', () => {
    expect(parseClientMessage('{"t":"ack","epoch":3,"unit":1,"cursor":32,"inflight":{"unit":1,"end":64}}')).toEqual({ ok: true, message: { t: 'ack', epoch: 3, unit: 1, cursor: 32, inflight: { unit: 1, end: 64 } } });
    expect(parseClientMessage('{"t":"ack",')).toEqual({ ok: false, reason: 'frame is not valid JSON' });
  });
});
