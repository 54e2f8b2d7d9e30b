/**
 * The `gather` section: evaluation results gathered to rank 0 over the wire (pg.gatherResults),
 * 100,000 results of about 1 KB from 4 ranks (--quick: 10,000). The 4 process groups run in this
 * process; the coordinator runs in a child (bench/gatherCoordinator.ts) so that its peak RSS
 * (VmHWM from /proc) is its own: it relays each rank's chunks under credit instead of assembling
 * the gather, so its peak should stay near its idle size, not grow with the ~100 MB gathered.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { ShardPlan } from '../shared/sampler.ts';
import { initProcessGroup, type ProcessGroup } from '../worker/processGroup.ts';
import type { BenchRow, SectionOptions } from './sections.ts';

const SECTION = 'gather';
const WORLD_SIZE = 4;
const RESULT_BYTES = 1000;
const TIMEOUT_MS = 120_000;

export const legend: readonly string[] = [
  'ms: from every rank calling gatherResults to rank 0 holding the merged results (serialise, relay, parse, merge).',
  'payloadMB: the JSON gathered (every rank\'s results and indices). coordIdleMB / coordPeakMB: the coordinator',
  'process\'s RSS after the rendezvous and its peak (VmHWM) after the gather; it relays chunks under credit',
  '(16 chunks of <= 64 KiB in flight per sender), so its peak stays far below the payload.',
];

export async function runSection(options: SectionOptions): Promise<BenchRow[]> {
  const results = options.quick ? 10_000 : 100_000;
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/gatherCoordinator.ts', String(WORLD_SIZE), String(results)], {
    cwd: options.repoRoot,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let pgs: ProcessGroup[] = [];
  try {
    const port = await listeningPort(child);
    options.log(`coordinator pid ${child.pid} on port ${port}`);
    pgs = await Promise.all(Array.from({ length: WORLD_SIZE }, (_, rank) => initProcessGroup({ initMethod: `ws://127.0.0.1:${port}`, rank })));
    const plan = new ShardPlan({ length: results, worldSize: WORLD_SIZE, shuffle: false, seed: 0, epoch: 0 });
    const pad = 'x'.repeat(RESULT_BYTES - 60);
    const perRank = pgs.map((pg) => Array.from(plan.shard(pg.rank), (index) => ({ index, score: index / results, label: `class-${index % 10}`, pad })));
    const payload = perRank.reduce((n, part) => n + Buffer.byteLength(JSON.stringify(part)), 0);
    const idle = procStatusKb(child.pid!, 'VmRSS');
    options.log(`gathering ${results} results (${(payload / 1e6).toFixed(1)} MB) to rank 0`);
    const started = performance.now();
    const outcomes = await Promise.all(pgs.map((pg) => pg.gatherResults(perRank[pg.rank], { plan, dst: 0, timeoutMs: TIMEOUT_MS })));
    const ms = performance.now() - started;
    const merged = outcomes[0];
    if (!merged || merged.results.length !== results) throw new Error(`rank 0 got ${merged?.results.length} results, not ${results}`);
    const peak = procStatusKb(child.pid!, 'VmHWM');
    return [
      {
        section: SECTION,
        name: `${results.toLocaleString('en-US')} x ~1 KB, ${WORLD_SIZE} ranks -> rank 0`,
        status: 'ok',
        values: {
          ms,
          payloadMB: payload / 1e6,
          MBps: payload / 1e6 / (ms / 1000),
          coordIdleMB: idle / 1024,
          coordPeakMB: peak / 1024,
          duplicatesDropped: merged.duplicatesDropped,
        },
      },
    ];
  } finally {
    await Promise.all(pgs.map((pg) => pg.destroy()));
    child.stdin?.end();
    await new Promise((resolve) => (child.exitCode !== null ? resolve(undefined) : child.once('exit', resolve)));
  }
}

/** The port the child prints, or its failure. */
function listeningPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the coordinator did not start within 30 s')), 30_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const match = /^listening (\d+)$/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.once('exit', (code) => reject(new Error(`the coordinator exited with ${code} before listening`)));
  });
}

/** A kB figure from /proc/<pid>/status (VmRSS now, VmHWM the peak). */
function procStatusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]);
}
