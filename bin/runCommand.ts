/** `distsampler run`: coordinator plus W local worker processes, like `torchrun --standalone`. */
import { writeFile } from 'node:fs/promises';
import { Launcher } from '../coordinator/launcher.ts';
import { attachProgressView } from '../coordinator/progressView.ts';
import { formatSummary } from '../coordinator/report.ts';
import { coordinatorSettings, RUN_CONFIG_FLAGS, RUN_CONFIG_HELP } from './runConfigFlags.ts';
import { intFlag, parseFlags } from './usage.ts';

const HELP = `usage: distsampler run [--workers W] [flags]

Starts a coordinator and W worker processes (env MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK,
LOCAL_RANK, DISTSAMPLER_TOKEN), shows live per-rank progress on stderr, prints a per-epoch
audit table and exits 0 only if every epoch's audit holds (nothing missing; without faults
every rank's digest equals PyTorch's plan).

  --workers W                number of worker processes (default 4)
  --step FILE                a .ts/.js module exporting async step(batch, ctx) (default: no-op)

${RUN_CONFIG_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { ...RUN_CONFIG_FLAGS, workers: { type: 'string' }, step: { type: 'string' } });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const workers = intFlag('workers', values.workers, 4, 1, 1024);
  const settings = await coordinatorSettings(values);
  const workerArgs: string[] = [];
  if (settings.datasetPath) workerArgs.push('--dataset', settings.datasetPath);
  if (values.step) workerArgs.push('--step', values.step);
  let detach: (() => void) | undefined;
  const launcher = new Launcher({
    worldSize: workers,
    config: settings.config,
    host: settings.host,
    port: settings.port,
    token: settings.token,
    heartbeatMs: settings.heartbeatMs,
    deadAfterMs: settings.deadAfterMs,
    rendezvousTimeoutMs: settings.rendezvousTimeoutMs,
    onFailure: settings.onFailure,
    waitTimeoutMs: settings.waitTimeoutMs,
    workerArgs,
    onCoordinator: (c) => (detach = attachProgressView(c)),
    onWorkerOutput: (rank, line) => process.stderr.write(`[rank ${rank}] ${line}\n`),
  });
  const interrupt = () => {
    process.stderr.write('\ninterrupted: stopping every worker\n');
    void launcher.stop('interrupted').then(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  try {
    const { report, exitCodes } = await launcher.run();
    detach?.();
    if (settings.reportPath) await writeFile(settings.reportPath, JSON.stringify(report, null, 2) + '\n');
    process.stdout.write(formatSummary(report) + '\n');
    const failed = exitCodes.map((code, rank) => ({ code, rank })).filter((e) => e.code !== 0);
    if (failed.length) process.stderr.write(`workers that exited non-zero: ${failed.map((f) => `rank ${f.rank} (${f.code ?? 'killed'})`).join(', ')}\n`);
    return report.ok ? 0 : 1;
  } finally {
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
  }
}
