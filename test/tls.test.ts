/**
 * TLS (issue 11): a coordinator serving wss:// and HTTPS for GET /status, workers that trust its
 * certificate joining over it, the others refused at once, and the CLI's refusals of TLS flags.
 * One self-signed certificate (openssl) for 127.0.0.1 and localhost; everything else in-process.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { get } from 'node:https';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator, CoordinatorConfigError, type CoordinatorTls } from '../coordinator/coordinator.ts';
import { plaintextTokenWarning } from '../bin/coordinatorCommand.ts';
import { wsUrl } from '../shared/endpoint.ts';
import { initProcessGroup, InitError, InitTlsError, resolveInitUrl, type InitOptions, type ProcessGroup } from '../worker/processGroup.ts';
import { consume } from './support/consume.ts';
import { runConfig } from './support/runConfig.ts';
import { useTempDir } from './support/tempDir.ts';
import { expectRefusal } from './support/usage.ts';

const temp = useTempDir('tls');
const certPath = temp.file('cert.pem');
const keyPath = temp.file('key.pem');
const junkPath = temp.file('junk.pem');
const missingPath = temp.file('missing.pem');
let tls: CoordinatorTls;

beforeAll(() => {
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', keyPath, '-out', certPath],
    { stdio: 'ignore' },
  );
  writeFileSync(junkPath, 'not a certificate\n');
  tls = { cert: readFileSync(certPath), key: readFileSync(keyPath) };
});

const coordinators: Coordinator[] = [];
const groups: ProcessGroup[] = [];
afterEach(async () => {
  await Promise.all(groups.splice(0).map((pg) => pg.destroy()));
  await Promise.all(coordinators.splice(0).map((c) => c.close()));
});

/** A coordinator serving TLS (or not) on port 0: 8 samples, one epoch. */
async function startCoordinator(worldSize: number, options: { tls?: CoordinatorTls; token?: string } = {}): Promise<{ coordinator: Coordinator; port: number; secure: boolean }> {
  const coordinator = new Coordinator({ worldSize, config: runConfig({ length: 8, batchSize: 4 }), heartbeatMs: 200, deadAfterMs: 5000, ...options });
  coordinators.push(coordinator);
  const { port, secure } = await coordinator.listen();
  return { coordinator, port, secure };
}

/**
 * What initProcessGroup rejected with (it must reject). It is given an hour to join: only a
 * refusal at once (not retries until a timeout) ends it within the test's timeout.
 */
async function joinFailure(options: InitOptions): Promise<{ error: InitError }> {
  const outcome: unknown = await initProcessGroup({ timeoutMs: 3_600_000, ...options }).then(
    (pg) => {
      groups.push(pg);
      return undefined;
    },
    (err: unknown) => err,
  );
  expect(outcome).toBeInstanceOf(InitError);
  return { error: outcome as InitError };
}

/** GET /status over HTTPS: the status code and body, or the TLS error's message. */
function getStatus(port: number, options: { ca?: Buffer | string; token?: string }): Promise<{ status: number; body: string } | { error: string }> {
  const headers = options.token ? { authorization: `Bearer ${options.token}` } : {};
  return new Promise((resolve) => {
    get(`https://127.0.0.1:${port}/status`, { ca: options.ca, headers }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', (err) => resolve({ error: err.message }));
  });
}

describe('a coordinator serving TLS', () => {
  it('workers that trust its certificate join over wss:// (a CA given, or DISTSAMPLER_CA with env://) and run the epoch', async () => {
    const { coordinator, port, secure } = await startCoordinator(2, { tls });
    expect(secure).toBe(true);
    const url = wsUrl('127.0.0.1', port, secure);
    expect(url).toBe(`wss://127.0.0.1:${port}`);
    const pgs = await Promise.all([
      initProcessGroup({ initMethod: url, rank: 0, ca: tls.cert, env: {} }),
      // env:// with DISTSAMPLER_CA: the file is read at init, and the URL becomes wss://.
      initProcessGroup({ initMethod: 'env://', env: { MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RANK: '1', WORLD_SIZE: '2', DISTSAMPLER_CA: certPath } }),
    ]);
    groups.push(...pgs);
    const consumed = await Promise.all(pgs.map((pg) => consume(pg, { destroy: false })));
    // Collectives ride the same TLS connection.
    expect(await Promise.all(pgs.map((pg) => pg.allReduce(1, 'sum')))).toEqual([2, 2]);
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(consumed.flatMap((c) => c.indices[0]).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('refuses a worker without the CA at once (no retrying), naming the URL, the TLS error and --ca / DISTSAMPLER_CA', async () => {
    const { coordinator, port } = await startCoordinator(1, { tls });
    const url = `wss://127.0.0.1:${port}`;
    const { error } = await joinFailure({ initMethod: url, rank: 0, env: {} });
    expect(error).toBeInstanceOf(InitTlsError);
    expect(error.code).toBe('ERR_INIT_TLS');
    expect(error.message).toContain(url);
    expect(error.message).toMatch(/self[- ]signed certificate/);
    expect(error.message).toMatch(/--ca or DISTSAMPLER_CA/);
    expect(coordinator.status().live).toEqual([]);
  });

  it('refuses at once a wss:// worker whose coordinator serves no TLS, saying so', async () => {
    const { port, secure } = await startCoordinator(1);
    expect(secure).toBe(false);
    const { error } = await joinFailure({ initMethod: `wss://127.0.0.1:${port}`, rank: 0, ca: tls.cert, env: {} });
    expect(error.code).toBe('ERR_INIT_TLS');
    expect(error.message).toMatch(/wrong version number/);
    expect(error.message).toMatch(/--tls-cert/);
  });

  it('answers GET /status over HTTPS to a client with the CA (and the token), and fails the handshake without it', async () => {
    const { port } = await startCoordinator(2, { tls, token: 's3cret' });
    const ok = await getStatus(port, { ca: tls.cert, token: 's3cret' });
    expect(ok).toMatchObject({ status: 200 });
    expect(JSON.parse((ok as { body: string }).body)).toMatchObject({ worldSize: 2, missing: [0, 1] });
    expect(await getStatus(port, { ca: tls.cert })).toMatchObject({ status: 401 });
    expect(await getStatus(port, {})).toMatchObject({ error: expect.stringMatching(/self[- ]signed certificate/) });
  });

  it('refuses a certificate and key it could not serve with, naming why', () => {
    const make = (pair: CoordinatorTls) => () => new Coordinator({ worldSize: 1, config: runConfig(), tls: pair });
    expect(make({ cert: tls.key, key: tls.cert })).toThrow(/^tls: the certificate is not a PEM certificate/);
    expect(make({ cert: tls.cert, key: 'junk' })).toThrow(/^tls: the private key cannot be read/);
    // Another RSA key, and a key of another type (which OpenSSL itself would not compare).
    for (const other of [generateKeyPairSync('rsa', { modulusLength: 1024 }), generateKeyPairSync('ec', { namedCurve: 'P-256' })]) {
      const otherKey = other.privateKey.export({ type: 'pkcs8', format: 'pem' });
      expect(make({ cert: tls.cert, key: otherKey })).toThrow(CoordinatorConfigError);
      expect(make({ cert: tls.cert, key: otherKey })).toThrow(/^tls: the private key and the certificate do not go together/);
    }
  });
});

describe('where a worker joins with TLS', () => {
  const env = { MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' };

  it('env:// and tcp:// connect with wss:// given a CA or DISTSAMPLER_TLS=1; an explicit ws:// stays', () => {
    expect(resolveInitUrl({ env }).url).toBe('ws://127.0.0.1:29500');
    expect(resolveInitUrl({ env: { ...env, DISTSAMPLER_TLS: '1' } }).url).toBe('wss://127.0.0.1:29500');
    expect(resolveInitUrl({ env: { ...env, DISTSAMPLER_CA: certPath } }).url).toBe('wss://127.0.0.1:29500');
    expect(resolveInitUrl({ env, ca: tls.cert }).url).toBe('wss://127.0.0.1:29500');
    expect(resolveInitUrl({ initMethod: 'tcp://127.0.0.1:29500', env: { DISTSAMPLER_TLS: '1' } }).url).toBe('wss://127.0.0.1:29500');
    expect(resolveInitUrl({ initMethod: 'ws://127.0.0.1:29500', env: { DISTSAMPLER_TLS: '1' } }).url).toBe('ws://127.0.0.1:29500');
    expect(wsUrl('::1', 29500, true)).toBe('wss://[::1]:29500');
  });

  it.each([
    ['a DISTSAMPLER_CA that cannot be read', { env: { ...env, DISTSAMPLER_CA: missingPath } }, 'ERR_INIT_ENV', /^DISTSAMPLER_CA: cannot read .*missing\.pem/],
    ['a DISTSAMPLER_CA that is no certificate', { env: { ...env, DISTSAMPLER_CA: junkPath } }, 'ERR_INIT_ENV', /^DISTSAMPLER_CA: .*junk\.pem is not a PEM certificate/],
    ['a ca option that is no certificate', { initMethod: 'wss://127.0.0.1:1', ca: 'junk', env: {} }, 'ERR_INIT_OPTIONS', /^ca is not a PEM certificate/],
    ['a DISTSAMPLER_TLS other than 0 or 1', { env: { ...env, DISTSAMPLER_TLS: 'yes' } }, 'ERR_INIT_ENV', /^DISTSAMPLER_TLS must be 1 .* got 'yes'/],
  ] as const)('refuses %s before connecting', async (_what, options, code, message) => {
    const { error } = await joinFailure(options);
    expect(error.code).toBe(code);
    expect(error.message).toMatch(message);
  });
});

describe('the CLI with TLS', () => {
  it('refuses --tls-cert without --tls-key (and the reverse), in coordinator and run', async () => {
    await expectRefusal('coordinator', ['--world-size', '1', '--tls-cert', certPath], [/^--tls-cert needs --tls-key/]);
    await expectRefusal('coordinator', ['--world-size', '1', '--tls-key', keyPath], [/^--tls-key needs --tls-cert/]);
    await expectRefusal('run', ['--workers', '1', '--length', '10', '--tls-cert', certPath], [/^--tls-cert needs --tls-key/]);
  });

  it('refuses a certificate or key file it cannot read, naming the flag, and a pair it cannot serve with, naming both', async () => {
    await expectRefusal('coordinator', ['--world-size', '1', '--tls-cert', missingPath, '--tls-key', keyPath], [/^--tls-cert: cannot read .*missing\.pem \(ENOENT/]);
    await expectRefusal('coordinator', ['--world-size', '1', '--tls-cert', certPath, '--tls-key', temp.path], [/^--tls-key: cannot read .* \(EISDIR/]);
    await expectRefusal('coordinator', ['--world-size', '1', '--tls-cert', keyPath, '--tls-key', certPath], [/^--tls-cert .*key\.pem and --tls-key .*cert\.pem: the certificate is not a PEM certificate/]);
  });

  it('worker: refuses a --ca (or DISTSAMPLER_CA) it cannot read or that is no certificate', async () => {
    const env = { MASTER_PORT: '29500', DISTSAMPLER_CA: '', DISTSAMPLER_TLS: '' };
    await expectRefusal('worker', ['--ca', missingPath], [/^--ca: cannot read .*missing\.pem \(ENOENT/], env);
    await expectRefusal('worker', ['--ca', junkPath], [/^--ca: .*junk\.pem is not a PEM certificate/], env);
    await expectRefusal('worker', [], [/^DISTSAMPLER_CA: cannot read .*missing\.pem/], { ...env, DISTSAMPLER_CA: missingPath });
    await expectRefusal('worker', [], [/^DISTSAMPLER_TLS must be 1/], { ...env, DISTSAMPLER_TLS: 'on' });
  });

  it('warns that the token travels in clear on a non-loopback host without TLS, and only then', () => {
    expect(plaintextTokenWarning('0.0.0.0', false)).toMatch(/--host 0\.0\.0\.0 is not loopback and the token travels in clear .*; serve TLS with --tls-cert\/--tls-key$/);
    expect(plaintextTokenWarning('0.0.0.0', true)).toBeUndefined();
    expect(plaintextTokenWarning('127.0.0.1', false)).toBeUndefined();
    expect(plaintextTokenWarning('::1', false)).toBeUndefined();
  });
});
