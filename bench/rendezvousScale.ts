/**
 * The `group` section's rendezvous at scale: 1,024 initProcessGroup calls from one child process,
 * and the same spread over 4 (bench/groupWorker.ts in its `many` mode), against a Coordinator in
 * this process. Each layout runs a few times; the row is the median run, the others in `detail`.
 *
 * ms = the first hello seen by the coordinator -> the last initProcessGroup resolved (worker
 * clock), as the rendezvous/128 row measures it. The row splits it where the time goes:
 *   hellos arriving   first -> last hello: the children opening sockets and saying hello while
 *                     the coordinator upgrades each connection (HTTP, ws handshake) and admits it;
 *   completing        last hello -> the coordinator's 'done' (this row's run has no epochs): the
 *                     one turn in which the coordinator writes every welcome and finish frame;
 *   last welcome      ... -> the last initProcessGroup resolved in a child;
 * and, outside ms, go -> first hello: one child process creating its share of the 1,024 client
 * sockets before it hears its first 101 back.
 *
 * DISTSAMPLER_BENCH_CPU_PROF=DIR makes the children write V8 CPU profiles there (run the parent
 * under `node --cpu-prof` to profile the coordinator too).
 */
import { spawnSync } from 'node:child_process';
import { Coordinator } from '../coordinator/coordinator.ts';
import { Child } from './groupChild.ts';
import { wallNow, type ChildMessage } from './groupCommon.ts';
import type { BenchRow, Cell, SectionOptions } from './sections.ts';

const SECTION = 'group';
/** Bounds a hang only: booting tsx children on a small, loaded machine is slow. */
const STEP_TIMEOUT_MS = 120_000;
/** The target for 1,024 workers. */
export const SCALE_TARGET_MS = 1000;
const PROFILE_DIR = process.env.DISTSAMPLER_BENCH_CPU_PROF;

export interface ScaleCase {
  readonly workers: number;
  readonly processes: number;
}

/** The row's name, also what group.ts's keys() looks the row up by. */
export function scaleRowName({ workers, processes }: ScaleCase): string {
  return `rendezvous/${workers} in ${processes} ${processes === 1 ? 'process' : 'processes'}`;
}

export const scaleLegend: readonly string[] = [
  'rendezvous/1024 in 1 (4) processes: 1,024 initProcessGroup calls from 1 (4) children, ms as above; the median of 3 runs',
  '  (--quick: 256 calls, 1 run). detail: hellos arriving (first -> last hello), completing (last hello -> the coordinator',
  '  has written every welcome and finish frame, one turn), last hello -> last welcome; go -> first hello (the children',
  `  creating their client sockets) is outside ms; coordinator CPU from go to that turn's end. Target: under ${SCALE_TARGET_MS} ms.`,
];

type Rendezvoused = Extract<ChildMessage, { t: 'rendezvous' }>;

function formatMs(value: number): string {
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ms`;
}

function cpuMs(usage: NodeJS.CpuUsage): number {
  return (usage.user + usage.system) / 1000;
}

/** Why this machine cannot hold the sockets (each side holds one descriptor per worker), or undefined. */
function descriptorShortage(workers: number): string | undefined {
  const shell = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' });
  const limit = Number(shell.stdout.trim());
  if (shell.status !== 0 || !Number.isFinite(limit)) return undefined;
  const needed = workers + 100;
  return limit < needed ? `ulimit -n is ${limit}; ${workers} connections need about ${needed} descriptors in each process (raise it: ulimit -n 4096)` : undefined;
}

/** One rendezvous of `workers` connections from `processes` children; an error row if it fails. */
export async function measureRendezvousScale(options: SectionOptions, scale: ScaleCase): Promise<BenchRow> {
  const name = scaleRowName(scale);
  const { workers, processes } = scale;
  const identity = { what: `${workers} initProcessGroup calls from ${processes} ${processes === 1 ? 'process' : 'processes'}`, world: workers };
  const perChild = Array.from({ length: processes }, (_, i) => Math.floor(workers / processes) + (i < workers % processes ? 1 : 0));
  const profile = PROFILE_DIR === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`];
  const children = perChild.map((count, i) => new Child(options.repoRoot, { mode: 'many', count }, `many child ${i}`, profile));
  let coordinator: Coordinator | undefined;
  try {
    await Promise.all(children.map((child) => child.next('ready', STEP_TIMEOUT_MS)));
    coordinator = new Coordinator({
      worldSize: workers,
      config: { length: workers, seed: '0', shuffle: true, dropLast: false, engine: 'torch', batchSize: 1, epochs: 0 },
      rendezvousTimeoutMs: STEP_TIMEOUT_MS,
    });
    const { host, port } = await coordinator.listen();
    const helloAt: number[] = [];
    let cpuAtLastHello: NodeJS.CpuUsage | undefined;
    coordinator.on('joined', () => {
      helloAt.push(wallNow());
      if (helloAt.length === workers) cpuAtLastHello = process.cpuUsage();
    });
    // With no epochs the run ends as the group completes: 'done' is emitted after every welcome
    // and finish frame is written, in the same turn as the last hello.
    let doneAt = Number.NaN;
    let coordinatorCpuMs = Number.NaN;
    let completingCpuMs = Number.NaN;
    const cpuAtGo = process.cpuUsage();
    coordinator.once('done', () => {
      doneAt = wallNow();
      coordinatorCpuMs = cpuMs(process.cpuUsage(cpuAtGo));
      if (cpuAtLastHello) completingCpuMs = cpuMs(process.cpuUsage(cpuAtLastHello));
    });
    const goAt = wallNow();
    for (const child of children) child.go(`ws://${host}:${port}`);
    const results: Rendezvoused[] = await Promise.all(children.map((child) => child.next('rendezvous', STEP_TIMEOUT_MS)));
    const report = await coordinator.done;
    if (!report.ok) throw new Error(`the coordinator's run failed: ${report.error ?? 'audit not ok'}`);
    const welcomed = results.flatMap((r) => r.welcomedAt);
    if (welcomed.length !== workers || helloAt.length !== workers) throw new Error(`${welcomed.length} welcomes and ${helloAt.length} joins for W=${workers}`);
    const firstHello = helloAt[0];
    const lastHello = helloAt[helloAt.length - 1];
    const lastWelcome = Math.max(...welcomed);
    const ms = lastWelcome - firstHello;
    const values: Record<string, Cell> = {
      ...identity,
      count: workers,
      ms,
      helloSpreadMs: lastHello - firstHello,
      completingMs: doneAt - lastHello,
      completingCpuMs,
      lastHelloToLastWelcomeMs: lastWelcome - lastHello,
      goToFirstHelloMs: firstHello - goAt,
      goToLastWelcomeMs: lastWelcome - goAt,
      coordinatorCpuMs,
      target: `< ${SCALE_TARGET_MS} ms`,
      meets: ms < SCALE_TARGET_MS,
      detail:
        `hellos arriving ${formatMs(lastHello - firstHello)}; completing ${formatMs(doneAt - lastHello)} (CPU ${formatMs(completingCpuMs)}); ` +
        `last hello->last welcome ${formatMs(lastWelcome - lastHello)}; outside ms: go->first hello ${formatMs(firstHello - goAt)}; ` +
        `coordinator CPU go->complete ${formatMs(coordinatorCpuMs)}`,
    };
    return { section: SECTION, name, status: 'ok', values };
  } catch (error) {
    return { section: SECTION, name, status: 'error', values: identity, note: error instanceof Error ? error.message : String(error) };
  } finally {
    await coordinator?.close();
    await Promise.all(children.map((child) => child.dispose(3000)));
  }
}

/** `runs` rendezvous of one layout: the median run's row, every run's ms in its detail; the first error ends it. */
async function medianOf(options: SectionOptions, scale: ScaleCase, runs: number): Promise<BenchRow> {
  const done: BenchRow[] = [];
  for (let run = 0; run < runs; run++) {
    options.log(`${scaleRowName(scale)}, run ${run + 1} of ${runs} ...`);
    const row = await measureRendezvousScale(options, scale);
    if (row.status !== 'ok') return row;
    done.push(row);
  }
  const ms = (row: BenchRow): number => Number(row.values.ms);
  const sorted = [...done].sort((a, b) => ms(a) - ms(b));
  const median = sorted[Math.floor((sorted.length - 1) / 2)];
  if (runs === 1) return median;
  const all = `median of ${runs} runs (${done.map((row) => formatMs(ms(row))).join(', ')})`;
  return { ...median, values: { ...median.values, detail: `${all}; ${String(median.values.detail)}` } };
}

/** The section's rows for the rendezvous at scale: 1 process, then 4. */
export async function measureRendezvousAtScale(options: SectionOptions): Promise<BenchRow[]> {
  const workers = options.quick ? 256 : 1024;
  const runs = options.quick ? 1 : 3;
  const layouts: ScaleCase[] = [
    { workers, processes: 1 },
    { workers, processes: 4 },
  ];
  const shortage = descriptorShortage(workers);
  if (shortage !== undefined) {
    return layouts.map((scale) => ({ section: SECTION, name: scaleRowName(scale), status: 'skipped', values: { world: workers }, note: shortage }));
  }
  const rows: BenchRow[] = [];
  for (const scale of layouts) rows.push(await medianOf(options, scale, runs));
  return rows;
}
