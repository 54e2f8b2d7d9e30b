import { describe, expect, it } from 'vitest';
import { CloseCode } from '../shared/protocol.ts';
import { isLoopback } from '../shared/endpoint.ts';
import { CoreDriver, runConfig } from './support/coreDriver.ts';

const liveness = { heartbeatMs: 300, deadAfterMs: 1500 };

function twoWorkers(driver: CoreDriver): [number, number] {
  const a = driver.join('worker-a');
  const b = driver.join('worker-b');
  return [a, b];
}

describe('liveness: a peer is dead when it was silent, not when we were', () => {
  it('does not declare live workers dead after the coordinator itself stalled past deadAfterMs', () => {
    const driver = new CoreDriver({ settings: liveness });
    const [a, b] = twoWorkers(driver);
    driver.advance(600);
    driver.pong(a);
    driver.pong(b);
    // SIGSTOP for 3 s, SIGCONT: the timers fire before the pongs waiting in the sockets are read.
    driver.advance(3000, { stalled: true });
    driver.pong(a);
    driver.pong(b);
    driver.advance(600);
    expect(driver.closes()).toEqual([]);
    expect(driver.core.status().live).toEqual([0, 1]);
  });

  it('declares dead the one worker that stays silent while the coordinator runs', () => {
    const driver = new CoreDriver({ settings: liveness });
    const [a, b] = twoWorkers(driver);
    for (let t = 0; t < 2000; t += 100) {
      driver.advance(100);
      driver.pong(a);
    }
    expect(driver.closes()).toEqual([{ peer: b, code: null, reason: 'terminated' }]);
  });

  it('still declares a silent worker dead after a stall, once it stayed silent deadAfterMs past the wake-up', () => {
    const driver = new CoreDriver({ settings: liveness });
    const [a, b] = twoWorkers(driver);
    driver.advance(3000, { stalled: true });
    for (let t = 0; t < 1400; t += 100) {
      driver.advance(100);
      driver.pong(a);
    }
    expect(driver.closes()).toEqual([]);
    for (let t = 0; t < 400; t += 100) {
      driver.advance(100);
      driver.pong(a);
    }
    expect(driver.closes().map((c) => c.peer)).toEqual([b]);
  });
});

describe('connections', () => {
  it('closes a connection that sends no hello within helloTimeoutMs with 4012', () => {
    const driver = new CoreDriver({ settings: { helloTimeoutMs: 10_000, deadAfterMs: 100_000 } });
    const silent = driver.connect();
    driver.advance(9_999);
    expect(driver.closes()).toEqual([]);
    driver.advance(1);
    expect(driver.closes()).toEqual([{ peer: silent, code: CloseCode.HelloTimeout, reason: 'no hello within 10000 ms' }]);
  });

  it('keeps a connection that said hello past the hello timeout', () => {
    const driver = new CoreDriver({ settings: { helloTimeoutMs: 1000, heartbeatMs: 300, deadAfterMs: 100_000 } });
    driver.join('worker-a');
    driver.advance(5000);
    expect(driver.closes()).toEqual([]);
  });

  it('treats only loopback addresses as loopback, not names that start like one', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1']) expect(isLoopback(host), host).toBe(true);
    for (const host of ['127.foo.example', '127.0.0.1.nip.io', '0.0.0.0', '10.0.0.1', '1270.0.0.1', '127.0.0.256', 'example.com', '::']) expect(isLoopback(host), host).toBe(false);
  });
});

describe('redelivery accounting', () => {
  it('counts what a cut-off worker reports it still delivered, once, clamped to what was handed over', () => {
    const driver = new CoreDriver({ config: runConfig({ length: 100, batchSize: 10 }) });
    const [a] = twoWorkers(driver);
    // Rank 0 acks [0, 10) and starts [10, 20); then it is lost and its tail [10, 50) goes to rank 1.
    driver.send(a, { t: 'ack', epoch: 0, unit: 0, cursor: 0, inflight: { unit: 0, end: 10 } });
    driver.send(a, { t: 'ack', epoch: 0, unit: 0, cursor: 10, inflight: { unit: 0, end: 20 } });
    driver.closed(a);
    expect(driver.core.view().epoch?.redelivered).toBe(10);
    // It was only stalled: it comes back and says it handed out up to offset 40.
    const back = driver.connect();
    driver.send(back, { t: 'hello', v: 1, workerId: 'worker-a', pid: 1, rank: 0 });
    driver.send(back, { t: 'overrun', epoch: 0, unit: 0, end: 40 });
    expect(driver.core.view().epoch?.redelivered).toBe(30);
    driver.send(back, { t: 'overrun', epoch: 0, unit: 0, end: 40 });
    driver.send(back, { t: 'overrun', epoch: 0, unit: 0, end: 1_000_000 });
    expect(driver.core.view().epoch?.redelivered).toBe(40);
  });

  it('refuses an epoch report that claims fewer samples than the worker acknowledged', () => {
    const driver = new CoreDriver({ config: runConfig({ length: 20, batchSize: 10 }) });
    const [a, b] = twoWorkers(driver);
    for (const peer of [a, b]) {
      const unit = peer === a ? 0 : 1;
      driver.send(peer, { t: 'ack', epoch: 0, unit, cursor: 0, inflight: { unit, end: 10 } });
      driver.send(peer, { t: 'ack', epoch: 0, unit, cursor: 10, inflight: null });
    }
    // No report came with the last acks: once the grace passes, the epochEnd asks for them.
    driver.advance(0);
    expect(driver.framesTo(a).at(-1)).toEqual({ t: 'epochEnd', epoch: 0, seq: 0 });
    driver.send(a, { t: 'epochReport', epoch: 0, samples: 3, digest: '0'.repeat(16), waitMs: 0 });
    expect(driver.closes()).toEqual([{ peer: a, code: CloseCode.Malformed, reason: 'epoch report says 3 samples, but this worker acknowledged 10' }]);
  });
});

describe('collectives while ranks run out of work (the Join problem)', () => {
  const allReduce = (seq: number) => ({ t: 'collective' as const, seq, timeoutMs: 0, op: 'allReduce' as const, value: 1, reduce: 'sum' as const });
  const resultsTo = (driver: CoreDriver, peer: number) => driver.framesTo(peer).filter((m) => m.t === 'collectiveResult');

  function threeWorkers(): { driver: CoreDriver; a: number; b: number; c: number } {
    const driver = new CoreDriver({ config: runConfig({ length: 30, batchSize: 5 }), range: { min: 3, max: 3 } });
    return { driver, a: driver.join('worker-a'), b: driver.join('worker-b'), c: driver.join('worker-c') };
  }

  it('does not wait for a rank that said outOfWork after acknowledging everything it had', () => {
    const { driver, a, b, c } = threeWorkers();
    driver.send(c, { t: 'ack', epoch: 0, unit: 2, cursor: 0, inflight: { unit: 2, end: 10 } });
    driver.send(c, { t: 'ack', epoch: 0, unit: 2, cursor: 10, inflight: null });
    driver.send(a, allReduce(0));
    driver.send(b, allReduce(0));
    expect(resultsTo(driver, a)).toEqual([]);
    driver.send(c, { t: 'outOfWork', epoch: 0 });
    expect(resultsTo(driver, a)).toEqual([{ t: 'collectiveResult', seq: 0, value: 2 }]);
    expect(resultsTo(driver, b)).toEqual([{ t: 'collectiveResult', seq: 0, value: 2 }]);
    expect(resultsTo(driver, c)).toEqual([]);
  });

  it('ignores an outOfWork sent before an assign reached the rank: it has work, so the others wait for it', () => {
    const { driver, a, b, c } = threeWorkers();
    driver.send(c, { t: 'ack', epoch: 0, unit: 2, cursor: 0, inflight: { unit: 2, end: 10 } });
    driver.send(c, { t: 'ack', epoch: 0, unit: 2, cursor: 10, inflight: null });
    driver.send(c, { t: 'outOfWork', epoch: 0 });
    // Rank 0 dies: part of its shard goes to rank 2, with the seq it joins the others' collectives at.
    driver.closed(a);
    const assign = driver.framesTo(c).find((m) => m.t === 'assign');
    expect(assign).toMatchObject({ t: 'assign', seq: 0 });
    // Its outOfWork from before it saw the assign arrives late: rank 2 has work again.
    driver.send(c, { t: 'outOfWork', epoch: 0 });
    driver.send(b, allReduce(0));
    expect(resultsTo(driver, b)).toEqual([]);
    driver.send(c, allReduce(0));
    expect(resultsTo(driver, b)).toEqual([{ t: 'collectiveResult', seq: 0, value: 2 }]);
  });
});
