/**
 * The `tailsplit` bench section: a dead rank's tail shared by measured rate against equal parts.
 * `distsampler run --workers 4 --straggler 3:4 --kill 0@0:0.2` (rank 3 four times slower, rank 0
 * SIGKILLed at a fifth of its shard), once with --tail-split equal and once with rate, a few times
 * each; the epoch's time is the report's durationMs, the median of the repeats is printed.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunReport } from '../coordinator/report.ts';
import { runChild } from './childProcess.ts';
import { formatCell, type BenchRow, type Column, type SectionOptions } from './sections.ts';

const SECTION = 'tailsplit';
const TSX_LOADER = import.meta.resolve('tsx');
const RUN_TIMEOUT_MS = 120_000;
/** 4 ranks x 2000 samples at 0.5 ms a sample: 1 s a rank, 4 s for the straggler. */
const RUN_FLAGS = ['--workers', '4', '--epochs', '1', '--length', '8000', '--batch-size', '20', '--step-ms', '0.5', '--straggler', '3:4', '--kill', '0@0:0.2', '--seed', '0'];

export const columns: readonly Column[] = [
  { header: 'split', align: 'left', get: (row) => String(row.values.split ?? row.name) },
  { header: 'status', align: 'left', get: (row) => row.status },
  { header: 'epoch ms (median)', get: (row) => formatCell(row.values.epochMs ?? null) },
  { header: 'runs', get: (row) => formatCell(row.values.runs ?? null) },
  { header: 'straggler got', get: (row) => formatCell(row.values.stragglerTook ?? null) },
  { header: 'vs equal', get: (row) => formatCell(row.values.ratioToEqual ?? null) },
];

export const legend: readonly string[] = [
  `run ${RUN_FLAGS.join(' ')} --tail-split SPLIT`,
  'epoch ms: the report\'s duration of epoch 0 (median of the runs); straggler got: positions of rank 0\'s tail reassigned to rank 3',
  'vs equal: epoch time with this split / with equal parts (below 1: the split by rate finishes sooner)',
];

export async function runSection(options: SectionOptions): Promise<BenchRow[]> {
  const runs = options.quick ? 1 : 3;
  const rows: BenchRow[] = [];
  let equalMs: number | undefined;
  for (const split of ['equal', 'rate'] as const) {
    const times: number[] = [];
    let stragglerTook = 0;
    for (let i = 0; i < runs; i++) {
      options.log(`${split}: run ${i + 1}/${runs}`);
      const dir = mkdtempSync(join(tmpdir(), 'distsampler-bench-tailsplit-'));
      try {
        const reportPath = join(dir, 'report.json');
        const cli = join(options.repoRoot, 'bin', 'distsampler.ts');
        const out = await runChild(process.execPath, ['--import', TSX_LOADER, cli, 'run', ...RUN_FLAGS, '--tail-split', split, '--report', reportPath], options.repoRoot, RUN_TIMEOUT_MS);
        if (out.code !== 0) return [...rows, { section: SECTION, name: split, status: 'error', values: { split }, note: `run exited ${out.code ?? out.signal}: ${out.stderr.slice(-500)}` }];
        const report = JSON.parse(readFileSync(reportPath, 'utf8')) as RunReport;
        const epoch = report.epochs[0];
        times.push(epoch.durationMs);
        stragglerTook = tailTakenBy(epoch.events, 3);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
    const epochMs = median(times);
    if (split === 'equal') equalMs = epochMs;
    rows.push({
      section: SECTION,
      name: split,
      status: 'ok',
      values: { split, epochMs: Math.round(epochMs), runs, stragglerTook, ratioToEqual: equalMs === undefined ? null : Number((epochMs / equalMs).toFixed(2)) },
    });
  }
  return rows;
}

/** Positions reassigned to `rank`, from the epoch's `reassign` events ("origin O offsets [a, b) from rank R"). */
function tailTakenBy(events: RunReport['epochs'][number]['events'], rank: number): number {
  let taken = 0;
  for (const event of events) {
    if (event.type !== 'reassign' || event.rank !== rank) continue;
    const m = /offsets \[(\d+), (\d+)\)/.exec(event.detail);
    if (m) taken += Number(m[2]) - Number(m[1]);
  }
  return taken;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}
