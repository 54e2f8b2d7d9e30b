/**
 * A worker that loaded other data than its coordinator is refused at the rendezvous (4004),
 * even with the same length: the fingerprints (a JSON Lines file's sha256, a module's own, the
 * synthetic range's) say so, naming what each side loaded.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.ts';
import { Rendezvous } from '../coordinator/rendezvous.ts';
import { CloseCode, PROTOCOL_VERSION } from '../shared/protocol.ts';
import { datasetIdentity, DatasetModuleFingerprintError, JsonLinesDataset, openDataset, RANGE_FINGERPRINT, rangeDataset } from '../worker/datasets.ts';
import { initProcessGroup } from '../worker/processGroup.ts';
import { runConfig } from './support/runConfig.ts';
import { useTempDir } from './support/tempDir.ts';

const temp = useTempDir('dataset-identity');
const open: Coordinator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

const range = { fingerprint: RANGE_FINGERPRINT, description: RANGE_FINGERPRINT };

describe("a dataset's fingerprint", () => {
  it("is a JSON Lines file's sha256, taken while its lines are indexed, with the file's name in its description", async () => {
    const path = temp.file('train.jsonl');
    const text = '{"x":1}\n{"x":2}\n';
    writeFileSync(path, text);
    const dataset = await JsonLinesDataset.open(path, { chunkSize: 5 });
    expect(dataset.fingerprint).toBe(`sha256:${createHash('sha256').update(text).digest('hex')}`);
    expect(datasetIdentity(dataset)).toEqual({ fingerprint: dataset.fingerprint, description: expect.stringMatching(/^jsonl \d+-train\.jsonl \(2 lines\)$/) });
    await dataset.close();
  });

  it("is a module's exported fingerprint (none: only the length is checked), and 'range' for the synthetic range", async () => {
    const named = temp.file('named.mts');
    writeFileSync(named, "export const length = 3;\nexport const fingerprint = 'imagenet-val-v2';\nexport function get(i: number) { return i; }\n");
    expect((await openDataset({ dataset: named })).fingerprint).toBe('imagenet-val-v2');
    const anonymous = temp.file('anonymous.mts');
    writeFileSync(anonymous, 'export const length = 3;\nexport function get(i: number) { return i; }\n');
    const none = await openDataset({ dataset: anonymous });
    expect(none.fingerprint).toBeUndefined();
    expect(datasetIdentity(none)).toBeUndefined();
    const bad = temp.file('bad.mts');
    writeFileSync(bad, 'export const length = 3;\nexport const fingerprint = 42;\nexport function get(i: number) { return i; }\n');
    await expect(openDataset({ dataset: bad })).rejects.toBeInstanceOf(DatasetModuleFingerprintError);
    expect(rangeDataset(10).fingerprint).toBe(RANGE_FINGERPRINT);
  });
});

describe('the rendezvous and a dataset that is not the coordinator’s', () => {
  const sha = { fingerprint: `sha256:${'ab'.repeat(32)}`, description: 'jsonl train.jsonl (10 lines)' };

  it('refuses a worker whose fingerprint differs (4004), naming both datasets, and admits a match or a worker that names none', () => {
    const r = new Rendezvous({ worldSize: 3, length: 10, dataset: sha });
    const refused = r.join({ workerId: 'a', version: PROTOCOL_VERSION, length: 10, dataset: range });
    expect(refused).toEqual({ ok: false, closeCode: CloseCode.ConfigMismatch, reason: "dataset range differs from the coordinator's jsonl train.jsonl (10 lines) sha256:abababababab…" });
    expect(Buffer.byteLength((refused as { reason: string }).reason)).toBeLessThanOrEqual(123);
    expect(r.join({ workerId: 'b', version: PROTOCOL_VERSION, length: 10, dataset: sha })).toMatchObject({ ok: true });
    expect(r.join({ workerId: 'c', version: PROTOCOL_VERSION, length: 10 })).toMatchObject({ ok: true });
  });

  it('refuses, through a real coordinator, a worker that read the synthetic range while the coordinator serves a file of the same length', async () => {
    const coordinator = new Coordinator({ worldSize: 1, config: runConfig({ length: 10, batchSize: 5, dataset: sha }) });
    open.push(coordinator);
    const { port } = await coordinator.listen();
    const err: unknown = await initProcessGroup({ initMethod: `ws://127.0.0.1:${port}`, length: 10, dataset: range, timeoutMs: 5000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'ERR_CONFIG_MISMATCH', closeCode: CloseCode.ConfigMismatch });
    expect((err as Error).message).toMatch(/dataset range differs from the coordinator's jsonl train\.jsonl \(10 lines\) sha256:abab/);
  });
});
