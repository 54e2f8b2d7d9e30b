/** `distsampler run`: a coordinator and W local worker processes, like `torchrun --standalone`. */
import { existsSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Launcher } from '../coordinator/launcher.ts';
import { loadStepModule } from '../worker/stepModule.ts';
import { attachProgressView, type ProgressView } from '../coordinator/progressView.ts';
import { formatSummary } from '../coordinator/report.ts';
import { parseCoordinatorKill, parseKill, parseStepMs } from './faultFlags.ts';
import { coordinatorSettings, RUN_CONFIG_FLAGS, RUN_CONFIG_HELP, worldSizeFlag } from './runConfigFlags.ts';
import { intFlag, parseFlags, UsageError } from './usage.ts';

const HELP = `usage: distsampler run [--workers W] [flags]

Starts a coordinator and W worker processes (env MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK,
LOCAL_RANK, DISTSAMPLER_TOKEN), shows live per-rank progress on stderr, prints a per-epoch
audit table and exits 0 only if every epoch's audit holds: no planned position missing and,
without faults, every rank's digest equal to PyTorch's plan.

  --workers W                number of worker processes (default 4)
  --world-size MIN:MAX       elastic bounds for the group (default W:W)
  --step FILE                a .ts/.js module exporting async step(batch, ctx) (default: no-op)
  --resume FILE              continue a stopped run from its journal, with --workers W workers
                             (any number): the remaining positions are spread over them
  With --on-failure wait, run starts a replacement worker (same RANK) for one that died,
  as torchrun restarts its workers.

Simulation (faults are injected by this launcher; everything replays from the seed):
  --kill RANK@EPOCH:FRACTION SIGKILL that rank's worker when it has done FRACTION of its shard
                             in EPOCH (repeatable)
  --kill-coordinator EPOCH:FRACTION
                             SIGKILL the coordinator when FRACTION of EPOCH is acknowledged, and
                             restart it from its journal (repeatable)
  --straggler RANK:FACTOR    that rank's simulated work is FACTOR times slower (repeatable)
  --step-ms MEAN[:JITTER]    simulated work per sample in ms, jitter seeded by --seed

${RUN_CONFIG_HELP}
run keeps a journal by default (in the temp folder, deleted after a successful run); an
interrupted or failed run prints the command that resumes it.
`;

/** Flags `run` hands to its coordinator process unchanged. */
const PASSED_TO_COORDINATOR = [
  'epochs', 'length', 'dataset', 'batch-size', 'seed', 'engine', 'host', 'heartbeat-ms', 'dead-after-ms',
  'rendezvous-timeout-ms', 'on-failure', 'wait-timeout-ms', 'settle-ms', 'linger-ms',
] as const;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    ...RUN_CONFIG_FLAGS,
    workers: { type: 'string' },
    'world-size': { type: 'string' },
    step: { type: 'string' },
    resume: { type: 'string' },
    kill: { type: 'string', multiple: true },
    'kill-coordinator': { type: 'string', multiple: true },
    straggler: { type: 'string', multiple: true },
    'step-ms': { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const workers = intFlag('workers', values.workers, 4, 1, 1024);
  const settings = await coordinatorSettings(values);
  const worldSize = worldSizeFlag('world-size', values['world-size'], workers);
  const range = typeof worldSize === 'number' ? { min: worldSize, max: worldSize } : worldSize;
  if (workers > range.max) throw new UsageError(`--workers ${workers} is more than the world size allows (${range.max})`);
  const kills = (values.kill ?? []).map(parseKill);
  for (const k of kills) if (k.rank >= workers) throw new UsageError(`--kill ${k.rank}@...: there are only ranks 0..${workers - 1}`);
  const coordinatorKills = (values['kill-coordinator'] ?? []).map(parseCoordinatorKill);
  parseStepMs(values['step-ms'], values.straggler ?? []);
  if (values.resume !== undefined && !existsSync(values.resume)) throw new UsageError(`--resume: ${values.resume} does not exist`);
  // Every worker would fail to load a bad step module, and the group would never form: say so now.
  if (values.step !== undefined) {
    await loadStepModule(values.step).catch((err: unknown) => {
      throw new UsageError(`--step: ${err instanceof Error ? err.message : String(err)}`);
    });
  }

  const coordinatorArgs: string[] = ['--world-size', range.min === range.max ? String(range.max) : `${range.min}:${range.max}`];
  for (const flag of PASSED_TO_COORDINATOR) {
    const value = values[flag];
    if (value !== undefined) coordinatorArgs.push(`--${flag}=${value}`);
  }
  if (values['no-shuffle']) coordinatorArgs.push('--no-shuffle');
  if (values['drop-last']) coordinatorArgs.push('--drop-last');
  const workerArgs: string[] = [];
  if (settings.datasetPath) workerArgs.push('--dataset', settings.datasetPath);
  if (values.step) workerArgs.push('--step', values.step);
  if (values['step-ms']) workerArgs.push(`--step-ms=${values['step-ms']}`);
  for (const s of values.straggler ?? []) workerArgs.push(`--straggler=${s}`);
  workerArgs.push(`--reconnect-timeout-ms=${Math.max(30_000, 3 * settings.deadAfterMs)}`);

  const ownJournal = values.resume === undefined && settings.journalPath === undefined;
  const journalPath = values.resume ?? settings.journalPath ?? join(tmpdir(), `distsampler-${process.pid}-${Date.now()}.journal`);
  let view: ProgressView | undefined;
  const note = (line: string) => (view ? view.log(line) : process.stderr.write(`${line}\n`));
  const launcher = new Launcher({
    workers,
    coordinatorArgs,
    workerArgs,
    journalPath,
    resume: values.resume !== undefined,
    port: settings.port,
    token: settings.token,
    kills,
    coordinatorKills,
    replaceDead: settings.onFailure === 'wait',
    onOutput: (source, line) => note(`[${source}] ${line}`),
    onNote: note,
  });
  view = attachProgressView(launcher.events);
  const resumeHint = `resume with: npm run cli -- run --resume ${journalPath} --workers ${workers}`;
  const interrupt = () => {
    note('\ninterrupted: stopping every worker and the coordinator');
    void launcher.stop().then(() => {
      note(resumeHint);
      process.exit(130);
    });
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  try {
    const { report, workers: exits, coordinatorRestarts } = await launcher.run();
    view.detach();
    view = undefined;
    if (settings.reportPath) await writeFile(settings.reportPath, JSON.stringify(report, null, 2) + '\n');
    process.stdout.write(formatSummary(report) + '\n');
    const killed = exits.filter((w) => w.killedByLauncher).length;
    if (killed || coordinatorRestarts) process.stdout.write(`faults injected: ${killed} worker kill(s), ${coordinatorRestarts} coordinator restart(s)\n`);
    const failed = exits.filter((w) => w.exit !== 0 && !w.killedByLauncher);
    if (failed.length) note(`workers that exited non-zero: ${failed.map((w) => `rank ${w.rank} pid ${w.pid} (${w.exit ?? 'killed'})`).join(', ')}`);
    if (report.ok && ownJournal) rmSync(journalPath, { force: true });
    else if (!report.ok) note(resumeHint);
    return report.ok ? 0 : 1;
  } finally {
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
  }
}
