/**
 * `run --nnodes --node-rank --rdzv-endpoint` (torchrun's multi-node flags): the launcher that hosts
 * the coordinator, launchers that only start workers, ranks numbered node by node. Through real
 * processes: two launchers on this machine forming one group of 4, and a coordinator in one
 * network namespace with the workers in another, reachable only over a veth pair the test makes.
 */
import { execFileSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { checkHostingFlags, endpointFlag, nodePlan, refuseCoordinatorFlags } from '../bin/nodeFlags.ts';
import { UsageError } from '../bin/usage.ts';
import { exitWithin, killStarted, REPO, startCli, writeStepModule } from './support/cli.ts';
import { readReport } from './support/report.ts';
import { useTempDir } from './support/tempDir.ts';
import { expectRefusal } from './support/usage.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 30_000 });
const temp = useTempDir('multi-node');
afterEach(killStarted);

const TOKEN = 'multi-node-test-token';
const NO_TOKEN = { DISTSAMPLER_TOKEN: '' };

describe('node flags: what this launcher is', () => {
  it('hosts the coordinator on node rank 0 and only starts workers elsewhere or with --no-coordinator', () => {
    expect(nodePlan({})).toEqual({ nodes: { min: 1, max: 1 }, rank: 0, hostsCoordinator: true });
    expect(nodePlan({ nnodes: '2', 'rdzv-endpoint': 'node0:29500' })).toEqual({ nodes: { min: 2, max: 2 }, rank: 0, hostsCoordinator: true, endpoint: { host: 'node0', port: 29500 } });
    expect(nodePlan({ nnodes: '1:3', 'node-rank': '2', 'rdzv-endpoint': '[fd00::1]:7' })).toMatchObject({ nodes: { min: 1, max: 3 }, rank: 2, hostsCoordinator: false, endpoint: { host: 'fd00::1', port: 7 } });
    expect(nodePlan({ 'no-coordinator': true, 'rdzv-endpoint': '10.0.0.1:1' }).hostsCoordinator).toBe(false);
  });

  it('refuses what cannot work, naming the flags', () => {
    const refused = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        expect(err).toBeInstanceOf(UsageError);
        return (err as Error).message;
      }
      throw new Error('not refused');
    };
    expect(refused(() => nodePlan({ nnodes: '2', 'node-rank': '2', 'rdzv-endpoint': 'h:1' }))).toBe('--node-rank 2 with --nnodes 2: node ranks are 0..1');
    expect(refused(() => nodePlan({ 'node-rank': '1', nnodes: '2' }))).toMatch(/^--node-rank 1 needs --rdzv-endpoint HOST:PORT/);
    expect(refused(() => nodePlan({ nnodes: '2' }))).toMatch(/^--nnodes 2 needs --rdzv-endpoint HOST:PORT/);
    expect(refused(() => nodePlan({ nnodes: '2', 'node-rank': '1', 'rdzv-endpoint': 'h:0' }))).toMatch(/port 0 .* node rank 1 joins one elsewhere and needs its port/);
    expect(refused(() => endpointFlag('h'))).toMatch(/^--rdzv-endpoint must be HOST:PORT/);
    expect(refused(() => endpointFlag('h:70000'))).toMatch(/rdzv-endpoint/);
    const worker = nodePlan({ nnodes: '2', 'node-rank': '1', 'rdzv-endpoint': 'h:1' });
    expect(refused(() => refuseCoordinatorFlags({ epochs: '3' }, worker))).toMatch(/^--epochs is the coordinator's: node rank 1 only starts workers; give it to node rank 0's launcher/);
    expect(refused(() => refuseCoordinatorFlags({ 'dead-after-ms': '9' }, worker))).toMatch(/^--dead-after-ms is the coordinator's/);
    expect(() => refuseCoordinatorFlags({ dataset: 'd.jsonl', step: 's.ts', token: 't' }, worker)).not.toThrow();
    const host = nodePlan({ nnodes: '2', 'rdzv-endpoint': 'h:1' });
    expect(refused(() => checkHostingFlags({ 'world-size': '4' }, host))).toMatch(/^--world-size and --nnodes both set the size/);
    expect(refused(() => checkHostingFlags({ port: '5' }, host))).toMatch(/^--port and --rdzv-endpoint both set the port/);
    expect(refused(() => checkHostingFlags({ resume: 'j' }, host))).toMatch(/^--resume continues a single-node run/);
  });

  it('run refuses them before it starts anything', async () => {
    await expectRefusal('run', ['--nnodes', '2', '--rdzv-endpoint', '127.0.0.1:0'], [/^--nnodes 2: the other nodes' workers must present the coordinator's token/], NO_TOKEN);
    await expectRefusal('run', ['--nnodes', '2', '--node-rank', '1', '--rdzv-endpoint', '127.0.0.1:9'], [/^node rank 1 needs the coordinator's token/], NO_TOKEN);
    await expectRefusal('run', ['--nnodes', '2', '--node-rank', '1', '--rdzv-endpoint', '127.0.0.1:9', '--token', 't', '--kill', '2@0:0.5'], [/^--kill is the coordinator's/]);
    await expectRefusal('run', ['--nnodes', '2', '--nproc-per-node', '2', '--rdzv-endpoint', '127.0.0.1:0', '--token', 't', '--kill', '3@0:0.5'], [/^--kill 3@0:0\.5: rank 3 is not on this node \(node rank 0 starts ranks 0\.\.1\)/]);
    await expectRefusal('run', ['--rdzv-endpoint', '127.0.0.1:0', '--ca', join(temp.path, 'ca.pem')], [/^--ca is for workers joining a TLS coordinator elsewhere/]);
  });
});

/** A script that prints its environment and its rank, consumes its shards, and sums everyone's count. */
function countingScript(): string {
  return writeStepModule(
    temp.path,
    'train',
    `import { initProcessGroup } from ${JSON.stringify(join(REPO, 'worker/processGroup.ts'))};
import { rangeDataset } from ${JSON.stringify(join(REPO, 'worker/datasets.ts'))};
const env = ['RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'GROUP_RANK'].map((k) => k + '=' + process.env[k]).join(' ');
const pg = await initProcessGroup();
console.log('env ' + env + ' rank=' + pg.rank + ' world=' + pg.worldSize);
let samples = 0;
for await (const epoch of pg.epochs()) for await (const batch of epoch.batches(rangeDataset(pg.config.length))) samples += batch.indices.length;
// One collective over every rank of every node: the group is one group.
console.log('total ' + (await pg.allReduce(samples, 'sum')));
await pg.destroy();
`,
  );
}

describe('two launchers on one machine', () => {
  it('form one group of 4: node 0 hosts the coordinator on a port the OS picks, node 1 joins it, ranks numbered node by node', async () => {
    const script = countingScript();
    const reportPath = temp.file('report.json');
    const nodeFlags = ['--nnodes', '2', '--nproc-per-node', '2', '--token', TOKEN];
    const node0 = startCli(['run', ...nodeFlags, '--node-rank', '0', '--rdzv-endpoint', '127.0.0.1:0', '--epochs', '2', '--length', '200', '--batch-size', '10', '--report', reportPath, script]);
    const [, port] = await node0.waitFor(/--rdzv-endpoint 127\.0\.0\.1:(\d+) --node-rank K/);
    const node1 = startCli(['run', ...nodeFlags, '--node-rank', '1', '--rdzv-endpoint', `127.0.0.1:${port}`, script]);
    const [done0, done1] = await Promise.all([exitWithin(node0, 120_000), exitWithin(node1, 120_000)]);
    expect(done0.code, node0.stderr()).toBe(0);
    expect(done1.code, node1.stderr()).toBe(0);
    for (const local of [0, 1]) {
      expect(node0.stdout()).toMatch(new RegExp(`^\\[rank${local}\\]: env RANK=${local} LOCAL_RANK=${local} WORLD_SIZE=4 LOCAL_WORLD_SIZE=2 GROUP_RANK=0 rank=${local} world=4$`, 'm'));
      expect(node1.stdout()).toMatch(new RegExp(`^\\[rank${2 + local}\\]: env RANK=${2 + local} LOCAL_RANK=${local} WORLD_SIZE=4 LOCAL_WORLD_SIZE=2 GROUP_RANK=1 rank=${2 + local} world=4$`, 'm'));
    }
    // 2 epochs of 200 over all four ranks, summed across both launchers' processes.
    expect(node0.stdout().match(/\]: total 400$/gm)).toHaveLength(2);
    expect(node1.stdout().match(/\]: total 400$/gm)).toHaveLength(2);
    expect(node1.stderr()).toMatch(/^node rank 1: 2 workers \(ranks 2\.\.3\) exited 0/m);
    const report = readReport(reportPath);
    expect(report.ok).toBe(true);
    expect(report.epochs).toMatchObject([{ worldSize: 4, planned: 200, missing: 0 }, { worldSize: 4, planned: 200, missing: 0 }]);
    // Undisturbed: every rank's digest is PyTorch's plan for it.
    expect(node0.stdout()).toMatch(/4\/4 match plan/);
  });
});

describe('a node that starts before the coordinator', () => {
  it('waits for it, saying so from each script every few seconds, then joins when node 0 comes up', async () => {
    const script = countingScript();
    const port = await freePort();
    const nodeFlags = ['--nnodes', '2', '--nproc-per-node', '1', '--token', TOKEN, '--rdzv-endpoint', `127.0.0.1:${port}`];
    const node1 = startCli(['run', ...nodeFlags, '--node-rank', '1', script]);
    // Nothing listens yet: the script's process group says it is waiting (every 5 s), not silent.
    await node1.waitFor(new RegExp(`^\\[rank1\\]: distsampler: waiting for the coordinator at ws://127\\.0\\.0\\.1:${port} to complete the group \\(\\d+ s so far, giving up after \\d+ s\\)$`, 'm'));
    const node0 = startCli(['run', ...nodeFlags, '--node-rank', '0', '--epochs', '1', '--length', '50', script]);
    const [done0, done1] = await Promise.all([exitWithin(node0, 120_000), exitWithin(node1, 120_000)]);
    expect(done0.code, node0.stderr()).toBe(0);
    expect(done1.code, node1.stderr()).toBe(0);
    expect(node1.stdout()).toMatch(/^\[rank1\]: total 50$/m);
    expect(node0.stdout()).toMatch(/audit OK/);
  });
});

/** A port the OS gives and takes back: for a launcher that must know its coordinator's port before it exists. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Two network namespaces joined by a veth pair, with addresses only inside them: a coordinator
 * listening in one is reachable from the other over the pair alone. Needs root and iproute2 (CI
 * has both; .ci/run sets DISTSAMPLER_REQUIRE_NETNS so the test cannot quietly skip there).
 */
class NetnsPair {
  readonly names: readonly [string, string];
  readonly addresses: readonly [string, string];
  private made = false;

  constructor() {
    const id = process.pid % 100_000;
    this.names = [`dsamp${id}a`, `dsamp${id}b`];
    const subnet = `10.213.${process.pid % 250}`;
    this.addresses = [`${subnet}.1`, `${subnet}.2`];
  }

  /** Makes both namespaces; undefined when done, else why they cannot be made here. */
  make(): string | undefined {
    if (process.getuid?.() !== 0) return 'network namespaces need root';
    const [a, b] = this.names;
    const veth = [`${a}v`, `${b}v`];
    try {
      this.ip('netns', 'add', a);
      this.made = true;
      this.ip('netns', 'add', b);
      this.ip('link', 'add', veth[0], 'type', 'veth', 'peer', 'name', veth[1]);
      for (const [i, ns] of [a, b].entries()) {
        this.ip('link', 'set', veth[i], 'netns', ns);
        this.ip('-n', ns, 'addr', 'add', `${this.addresses[i]}/24`, 'dev', veth[i]);
        this.ip('-n', ns, 'link', 'set', veth[i], 'up');
        this.ip('-n', ns, 'link', 'set', 'lo', 'up');
      }
      return undefined;
    } catch (err) {
      this.remove();
      return `cannot make network namespaces: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
    }
  }

  /** `ip netns exec NS`: a prefix that runs a command inside namespace i. */
  exec(i: 0 | 1): string[] {
    return ['ip', 'netns', 'exec', this.names[i]];
  }

  /** Deleting a namespace deletes its end of the pair, and with it the other end. */
  remove(): void {
    if (!this.made) return;
    for (const ns of this.names) {
      try {
        this.ip('netns', 'del', ns);
      } catch {
        // Never made, or gone already.
      }
    }
    this.made = false;
  }

  private ip(...args: string[]): void {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  }
}

describe('across network namespaces', () => {
  const netns = new NetnsPair();
  let problem: string | undefined = 'not made yet';
  beforeAll(() => {
    problem = netns.make();
    if (problem !== undefined && process.env.DISTSAMPLER_REQUIRE_NETNS === '1') throw new Error(`DISTSAMPLER_REQUIRE_NETNS=1 but ${problem}`);
  });
  afterAll(() => netns.remove());

  it('a coordinator listening in one namespace, a launcher of workers in another, over a veth pair only', async (ctx) => {
    if (problem !== undefined) {
      ctx.skip(`skipped: ${problem}`);
      return;
    }
    const [coordinatorAddress] = netns.addresses;
    const script = countingScript();
    const reportPath = temp.file('netns-report.json');
    const coordinator = startCli(
      ['coordinator', '--host', coordinatorAddress, '--port', '0', '--token', TOKEN, '--world-size', '2', '--epochs', '1', '--length', '100', '--batch-size', '10', '--report', reportPath],
      {},
      { prefix: netns.exec(0) },
    );
    const [, port] = await coordinator.waitFor(new RegExp(`listening on ws://${coordinatorAddress.replaceAll('.', '\\.')}:(\\d+)`));
    // Plain ws:// off loopback: the token travels in clear, and the coordinator says so.
    expect(coordinator.stderr()).toMatch(new RegExp(`warning: --host ${coordinatorAddress.replaceAll('.', '\\.')} is not loopback and the token travels in clear`));
    const workers = startCli(['run', '--no-coordinator', '--nproc-per-node', '2', '--rdzv-endpoint', `${coordinatorAddress}:${port}`, '--token', TOKEN, script], {}, { prefix: netns.exec(1) });
    const [coordinatorDone, workersDone] = await Promise.all([exitWithin(coordinator, 120_000), exitWithin(workers, 120_000)]);
    expect(coordinatorDone.code, coordinator.stderr()).toBe(0);
    expect(workersDone.code, workers.stderr()).toBe(0);
    expect(workers.stdout()).toMatch(/^\[rank0\]: env RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 GROUP_RANK=0 rank=0 world=2$/m);
    expect(workers.stdout()).toMatch(/^\[rank1\]: env RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 GROUP_RANK=0 rank=1 world=2$/m);
    expect(workers.stdout().match(/\]: total 100$/gm)).toHaveLength(2);
    const report = readReport(reportPath);
    expect(report.ok).toBe(true);
    expect(report.epochs).toMatchObject([{ worldSize: 2, planned: 100, missing: 0 }]);
  });
});
