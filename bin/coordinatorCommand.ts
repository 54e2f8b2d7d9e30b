/** `distsampler coordinator`: a standalone coordinator for workers started elsewhere. */
import { writeFile } from 'node:fs/promises';
import { Coordinator } from '../coordinator/coordinator.ts';
import { attachProgressView } from '../coordinator/progressView.ts';
import { formatSummary } from '../coordinator/report.ts';
import { coordinatorSettings, RUN_CONFIG_FLAGS, RUN_CONFIG_HELP } from './runConfigFlags.ts';
import { intFlag, parseFlags, UsageError } from './usage.ts';

const HELP = `usage: distsampler coordinator --world-size W [flags]

Serves a group of W workers started elsewhere (\`distsampler worker\` with MASTER_ADDR and
MASTER_PORT, or initProcessGroup in your own program). Prints "listening on ws://host:port",
then progress on stderr and the audit table on stdout; exits 0 only if every epoch's audit holds.

  --world-size W             number of ranks (required)

${RUN_CONFIG_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { ...RUN_CONFIG_FLAGS, 'world-size': { type: 'string' } });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values['world-size'] === undefined) throw new UsageError('--world-size is required');
  const worldSize = intFlag('world-size', values['world-size'], 1, 1, 100_000);
  const settings = await coordinatorSettings(values);
  const coordinator = new Coordinator({
    worldSize,
    config: settings.config,
    host: settings.host,
    port: settings.port,
    token: settings.token,
    heartbeatMs: settings.heartbeatMs,
    deadAfterMs: settings.deadAfterMs,
    rendezvousTimeoutMs: settings.rendezvousTimeoutMs,
    onFailure: settings.onFailure,
    waitTimeoutMs: settings.waitTimeoutMs,
  });
  const detach = attachProgressView(coordinator);
  const { host, port } = await coordinator.listen();
  process.stderr.write(`listening on ws://${host}:${port} for ${worldSize} workers\n`);
  const stop = () => void coordinator.close('interrupted');
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const report = await coordinator.done;
  await coordinator.close();
  detach();
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  if (settings.reportPath) await writeFile(settings.reportPath, JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(formatSummary(report) + '\n');
  return report.ok ? 0 : 1;
}
