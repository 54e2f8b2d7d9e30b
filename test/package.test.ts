/**
 * The package as a user gets it: `npm pack` of dist/ (built for this test run, as prepare builds
 * it), the tarball installed into a scratch project of its own, then used with plain node and no tsx in reach: every entry
 * imported, a TypeScript consumer type-checked by the project's own tsc with skipLibCheck off,
 * and `npx distsampler run` starting a script of the project's. One pack and one install for the
 * whole file (beforeAll), from the npm cache `npm ci` filled: they take most of its time.
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { REPO } from './support/cli.ts';
import { useTempDir } from './support/tempDir.ts';

// Timeouts here only catch hangs: building, packing and installing take a while on 2 busy cores.
vi.setConfig({ testTimeout: 180_000 });
const temp = useTempDir('package');
const execFileAsync = promisify(execFile);

/** The version of a package the repo installed (npm ci left it in the npm cache). */
function installedVersion(name: string): string {
  return (JSON.parse(readFileSync(join(REPO, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
}

/** A user's shell: none of this process's loaders (NODE_OPTIONS), and this file's temp folder for anything temporary. */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: temp.path };
  delete env.NODE_OPTIONS;
  return env;
}

/** Runs a command to its end; a non-zero exit is a result, not a rejection. */
async function sh(command: string, args: readonly string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(command, args, { cwd, env: userEnv(), maxBuffer: 64 << 20, timeout: 300_000, killSignal: 'SIGKILL' });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failed.code !== 'number') throw error;
    return { code: failed.code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

let project = '';
let packed: string[] = [];
const file = (name: string) => join(project, name);

beforeAll(async () => {
  const packDir = temp.folder('pack');
  // dist/ was built for this run (vitest's globalSetup runs `npm run build`, as prepare does);
  // building it again here would pull it from under the process tests running beside this file.
  const pack = await sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir], REPO);
  expect(pack.code, pack.stderr).toBe(0);
  const [tarball] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  packed = tarball.files.map((f) => f.path);
  project = temp.folder('project');
  writeFileSync(file('package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }, null, 2));
  const install = await sh(
    'npm',
    ['install', '--prefer-offline', '--no-audit', '--no-fund', join(packDir, tarball.filename), `typescript@${installedVersion('typescript')}`, `@types/node@${installedVersion('@types/node')}`],
    project,
  );
  expect(install.code, install.stderr).toBe(0);
}, 600_000);

describe('the packed package', () => {
  it('holds the compiled JavaScript and its declarations, a bin for plain node, and nothing of the repo’s own (sources, tests, bench, CI)', () => {
    for (const entry of ['shared', 'worker', 'coordinator']) expect(packed).toEqual(expect.arrayContaining([`dist/${entry}/index.js`, `dist/${entry}/index.d.ts`]));
    expect(packed).toEqual(expect.arrayContaining(['package.json', 'README.md', 'dist/bin/distsampler.js', 'dist/bin/launchedScript.mjs']));
    expect(packed.filter((path) => /^(test|bench|\.ci|scripts|node_modules)\//.test(path))).toEqual([]);
    expect(packed.filter((path) => !/^(dist\/.*\.(js|mjs|d\.ts)|package\.json|README\.md)$/.test(path))).toEqual([]);
    const installed = file('node_modules/distsampler');
    const bin = readFileSync(join(installed, 'dist/bin/distsampler.js'), 'utf8');
    expect(bin.split('\n')[0]).toBe('#!/usr/bin/env node');
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as { bin: Record<string, string>; dependencies: Record<string, string> };
    expect(manifest.bin).toEqual({ distsampler: 'dist/bin/distsampler.js' });
    // What makes `npm pack` (and `npm publish`, and `npm ci` in this repo) build dist/ first: the build this file's tarball came from.
    const own = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect([own.scripts.prepare, own.scripts.build]).toEqual(['npm run build', 'node bin/build.mjs']);
    // tsx is for the repo's own sources: a user's project gets it only if it wants .ts scripts.
    expect(Object.keys(manifest.dependencies)).not.toContain('tsx');
  });

  it('imports every entry with plain node and computes with it: a shard as torch gives it, a coordinator and a worker of one group, loader threads', async () => {
    writeFileSync(file('data.mjs'), 'export const length = 20;\nexport function get(i) { return { i }; }\n');
    writeFileSync(
      file('check.mjs'),
      `import { DistributedSampler, DistSamplerError, InvalidRankError, ShardPlan } from 'distsampler';
import { buildDataloader, initProcessGroup, rangeDataset } from 'distsampler/worker';
import { Coordinator } from 'distsampler/coordinator';

const sampler = new DistributedSampler(10, { numReplicas: 3, rank: 1, seed: 0 });
sampler.setEpoch(0);
const plan = new ShardPlan({ length: 10, worldSize: 3, seed: 0, epoch: 0 });

const coordinator = new Coordinator({ worldSize: 1, config: { length: 10, seed: '0', shuffle: true, dropLast: false, engine: 'torch', batchSize: 4, epochs: 1 } });
const { port } = await coordinator.listen();
const pg = await initProcessGroup({ initMethod: 'ws://127.0.0.1:' + port, rank: 0, worldSize: 1 });
const consumed = [];
for await (const epoch of pg.epochs()) for await (const batch of epoch.batches(rangeDataset(pg.config.length))) consumed.push(...batch.indices);
await pg.destroy();
const report = await coordinator.done;
await coordinator.close();

const { dataloader } = await buildDataloader({ dataset: ${JSON.stringify(file('data.mjs'))}, batchSize: 4, workers: 2 });
const loaded = [];
for await (const batch of dataloader) loaded.push(...batch.samples.map((s) => s.i));
await dataloader.close();

let deepImport = 'allowed';
await import('distsampler/dist/shared/sampler.js').catch((error) => (deepImport = error.code));
console.log(JSON.stringify({
  shard: [...sampler],
  planShard: Array.from(plan.shard(1)),
  typedError: new InvalidRankError(3, 3) instanceof DistSamplerError,
  ok: report.ok,
  consumed: consumed.sort((a, b) => a - b),
  loaded: loaded.sort((a, b) => a - b),
  deepImport,
}));
`,
    );
    const check = await sh(process.execPath, ['check.mjs'], project);
    expect(check.code, check.stderr).toBe(0);
    expect(JSON.parse(check.stdout)).toEqual({
      // torch: DistributedSampler(range(10), num_replicas=3, rank=1, seed=0), epoch 0; randperm(10) is [4, 1, 7, 5, 3, 9, 0, 8, 6, 2].
      shard: [1, 3, 8, 4],
      planShard: [1, 3, 8, 4],
      typedError: true,
      ok: true,
      consumed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      loaded: Array.from({ length: 20 }, (_, i) => i),
      // Only the entries of the exports map are the package's surface.
      deepImport: 'ERR_PACKAGE_PATH_NOT_EXPORTED',
    });
  });

  it("type-checks a TypeScript consumer of all three entries with the project's own tsc, skipLibCheck off", async () => {
    writeFileSync(
      file('tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, skipLibCheck: false, noEmit: true, types: ['node'] }, files: ['consumer.ts'] }, null, 2),
    );
    writeFileSync(
      file('consumer.ts'),
      `import { DistributedSampler, ShardPlan, type EngineName, type RunConfig } from 'distsampler';
import { buildDataloader, initProcessGroup, rangeDataset, type Batch, type Dataset, type ProcessGroup } from 'distsampler/worker';
import { Coordinator, type CoordinatorOptions, type RunReport } from 'distsampler/coordinator';

const engine: EngineName = 'feistel';
const config: RunConfig = { length: 100, seed: '0', shuffle: true, dropLast: false, engine, batchSize: 10, epochs: 1 };
const options: CoordinatorOptions = { worldSize: { min: 1, max: 2 }, config, onFailure: 'reassign' };
const coordinator = new Coordinator(options);
const { port } = await coordinator.listen();
const pg: ProcessGroup = await initProcessGroup({ initMethod: \`ws://127.0.0.1:\${port}\`, rank: 0, worldSize: 1 });
const dataset: Dataset<number> = rangeDataset(pg.config.length);
for await (const epoch of pg.epochs()) {
  for await (const batch of epoch.batches(dataset)) {
    const first: Batch['indices'] = batch.indices;
    void first;
  }
}
const total: number = await pg.allReduce(1, 'sum');
await pg.destroy();
const report: RunReport = await coordinator.done;
const ok: boolean = report.ok;
const shard: number[] = [...new DistributedSampler(100, { numReplicas: 2, rank: 1, engine })];
const plan = new ShardPlan({ length: 100, worldSize: 2 });
const { dataloader } = await buildDataloader({ dataset: 'data.mjs', batchSize: 4, workers: 0 });
await dataloader.close();
console.log(total, ok, shard.length, plan.numSamples);

// The declarations are real types, not any: each of these is an error the consumer's tsc must report.
// @ts-expect-error numReplicas is a number
new DistributedSampler(10, { numReplicas: '2', rank: 0 });
// @ts-expect-error timeoutMs is a number of milliseconds
await initProcessGroup({ timeoutMs: 'soon' });
// @ts-expect-error onFailure is one of the failure policies
new Coordinator({ ...options, onFailure: 'retry' });
`,
    );
    const tsc = await sh(file('node_modules/.bin/tsc'), ['-p', '.'], project);
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.code).toBe(0);
  });

  it('runs `npx distsampler run --workers 2 consumer.mjs`: a script of the project importing distsampler/worker, under plain node', async () => {
    writeFileSync(
      file('consumer.mjs'),
      `import { initProcessGroup, rangeDataset } from 'distsampler/worker';
const pg = await initProcessGroup();
let samples = 0;
for await (const epoch of pg.epochs()) {
  for await (const batch of epoch.batches(rangeDataset(pg.config.length))) samples += batch.indices.length;
}
console.log('rank ' + pg.rank + ' of ' + pg.worldSize + ' consumed ' + samples);
await pg.destroy();
`,
    );
    const run = await sh('npx', ['distsampler', 'run', '--workers', '2', '--epochs', '2', '--length', '200', '--batch-size', '10', 'consumer.mjs'], project);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^\[rank0\]: rank 0 of 2 consumed 200$/m);
    expect(run.stdout).toMatch(/^\[rank1\]: rank 1 of 2 consumed 200$/m);
    expect(run.stdout).toMatch(/^ +0 +2 +200 +200 +0 +0 +\d+ +2\/2 match plan +-$/m);
    expect(run.stdout).toMatch(/^ +1 +2 +200 +200 +0 +0 +\d+ +2\/2 match plan +-$/m);
    expect(run.stdout).toContain('audit OK: every planned position consumed');
    // bin/cli.ts reads the version from the package.json above dist/.
    const version = await sh('npx', ['distsampler', '--version'], project);
    const { version: ours } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
    expect(version.stdout).toBe(`distsampler ${ours}\n`);
  });

  it('refuses a .ts script (exit 2) saying what it needs, in a project without tsx', async () => {
    expect(() => createRequire(file('noop.js')).resolve('tsx')).toThrow();
    writeFileSync(file('train.ts'), 'const rank: string | undefined = process.env.RANK;\nconsole.log(rank);\n');
    const run = await sh('npx', ['distsampler', 'run', '--workers', '2', 'train.ts'], project);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(
      'distsampler run: the script train.ts is TypeScript, which needs tsx in your project (npm install -D tsx) or Node 22.6+ stripping types (NODE_OPTIONS=--experimental-strip-types; on by default from Node 23.6); a .js/.mjs file needs neither\n',
    );
  });
});
