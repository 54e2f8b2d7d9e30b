/**
 * `npm run bench -- [section ...] [--json FILE] [--quick] [--full]`
 *
 * Runs the named sections (or every default one), prints a table per section to stdout,
 * progress to stderr, and with --json writes every row to FILE.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatSection, type BenchRow, type SectionEntry, type SectionModule } from './sections.ts';

/** The registry: one line per section. */
const SECTIONS: readonly SectionEntry[] = [
  {
    name: 'shard',
    summary: 'derive one rank\'s shard (W=8, rank 3) at N=1e6..1e9, torch and feistel engines, beside real PyTorch',
    runByDefault: true,
    load: () => import('./shard.ts'),
  },
  { name: 'group', summary: 'process group with real processes: rendezvous, barrier vs gloo, epoch rollover, e2e overhead', runByDefault: true, load: () => import('./group.ts') },
  { name: 'dataloader', summary: 'buildDataloader: JSONL dataset with a CPU-heavy parse (~0.2 ms a sample), workers: 0 vs 2', runByDefault: true, load: () => import('./dataloader.ts') },
  { name: 'gather', summary: "gatherResults: 100,000 results of ~1 KB from 4 ranks to rank 0; time and the coordinator's peak RSS", runByDefault: true, load: () => import('./gather.ts') },
  { name: 'tailsplit', summary: "a dead rank's tail shared by measured rate vs in equal parts: run --straggler 3:4 --kill 0@0:0.2, epoch time", runByDefault: true, load: () => import('./tailSplit.ts') },
  { name: 'soak', summary: 'bounded soak (~150 s, --quick 30 s): distsampler run under seeded random worker and coordinator SIGKILLs', runByDefault: false, load: () => import('./soak.ts') },
];

interface BenchArgs {
  readonly sections: readonly SectionEntry[];
  readonly jsonFile: string | undefined;
  readonly quick: boolean;
  readonly full: boolean;
}

class UsageError extends Error {}

function usage(): string {
  const lines = [
    'usage: npm run bench -- [section ...] [--json FILE] [--quick] [--full]',
    '',
    'sections (default: those marked *):',
    ...SECTIONS.map((section) => `  ${section.runByDefault ? '*' : ' '} ${section.name.padEnd(8)} ${section.summary}`),
    '',
    '  --json FILE  also write every row as JSON to FILE, and the headline figures under `keys`',
    '  --quick      smoke check: smallest sizes only',
    '  --full       also the slow, memory-hungry cases',
  ];
  return lines.join('\n');
}

function parseArgs(argv: readonly string[]): BenchArgs | 'help' {
  const named: SectionEntry[] = [];
  let jsonFile: string | undefined;
  let quick = false;
  let full = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') return 'help';
    if (arg === '--quick') quick = true;
    else if (arg === '--full') full = true;
    else if (arg === '--json' || arg.startsWith('--json=')) {
      const value = arg === '--json' ? argv[++i] : arg.slice('--json='.length);
      if (value === undefined || value === '' || value.startsWith('--')) throw new UsageError('--json needs a file name');
      jsonFile = value;
    } else if (arg.startsWith('-')) throw new UsageError(`unknown option ${arg}`);
    else {
      const section = SECTIONS.find((entry) => entry.name === arg);
      if (!section) throw new UsageError(`unknown section ${arg} (known: ${SECTIONS.map((entry) => entry.name).join(', ')})`);
      if (!named.includes(section)) named.push(section);
    }
  }
  if (quick && full) throw new UsageError('--quick and --full contradict each other');
  const sections = named.length > 0 ? named : SECTIONS.filter((section) => section.runByDefault);
  return { sections, jsonFile, quick, full };
}

function formatKey(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(Math.abs(value) >= 100 ? 0 : 3);
}

async function main(argv: readonly string[]): Promise<number> {
  let args: BenchArgs | 'help';
  try {
    args = parseArgs(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`bench: ${error.message}\n\n${usage()}\n`);
    return 2;
  }
  if (args === 'help') {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }

  const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const startedAt = new Date();
  const machine = {
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    totalMemBytes: totalmem(),
    loadAverageAtStart: loadavg()[0],
  };
  // Timings on a shared machine are only as good as its idleness: say how busy it was.
  process.stdout.write(
    `bench: node ${machine.node}, ${machine.cpus} CPUs (${machine.cpuModel}), ${(machine.totalMemBytes / 2 ** 30).toFixed(0)} GB, ` +
      `load average ${machine.loadAverageAtStart.toFixed(2)} at start\n`,
  );
  const rows: BenchRow[] = [];
  const keys: Record<string, number> = {};
  let failed = false;
  for (const section of args.sections) {
    const log = (line: string): void => {
      process.stderr.write(`[${section.name}] ${line}\n`);
    };
    let sectionRows: BenchRow[];
    let module: SectionModule | undefined;
    try {
      module = await section.load();
      sectionRows = await module.runSection({ quick: args.quick, full: args.full, repoRoot, log });
    } catch (error) {
      // One broken section must not hide the others' results.
      failed = true;
      const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
      sectionRows = [{ section: section.name, name: section.name, status: 'error', values: {}, note: message }];
    }
    rows.push(...sectionRows);
    if (module?.keys) Object.assign(keys, module.keys(sectionRows));
    process.stdout.write(`\n${formatSection(section.name, module ?? {}, sectionRows)}\n`);
  }

  const keyNames = Object.keys(keys);
  if (keyNames.length > 0) {
    const width = Math.max(...keyNames.map((name) => name.length));
    process.stdout.write(`\nheadline figures (--json keys):\n${keyNames.map((name) => `  ${name.padEnd(width)}  ${formatKey(keys[name])}`).join('\n')}\n`);
  }

  if (args.jsonFile !== undefined) {
    const report = {
      startedAt: startedAt.toISOString(),
      argv,
      machine: { ...machine, loadAverageAtEnd: loadavg()[0] },
      keys,
      rows,
    };
    writeFileSync(args.jsonFile, `${JSON.stringify(report, null, 2)}\n`);
    process.stderr.write(`bench: wrote ${rows.length} rows to ${args.jsonFile}\n`);
  }
  return failed || rows.some((row) => row.status === 'error') ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
