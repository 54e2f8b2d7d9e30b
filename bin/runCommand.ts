/** `distsampler run`: a coordinator and W local worker processes, like `torchrun --standalone`. */
import { existsSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { createServer } from 'node:net';
import { resumable, type WorldSizeRange } from '../coordinator/journal.ts';
import { Launcher } from './launcher.ts';
import { epochOfPass, evalDueAfter, isEvalPass } from '../shared/evalPass.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { typeScriptLoaderMissing, userExecArgv } from '../shared/runtimeLoader.ts';
import { attachProgressView, type ProgressView } from './progressView.ts';
import { formatSummary } from './summaryTable.ts';
import { parseCoordinatorKill, parseKill, parseProgressPoint, parseStepMs } from './faultFlags.ts';
import { checkPlanFlags, coordinatorSettings, durationFlagWords, RUN_CONFIG_FLAGS, RUN_CONFIG_HELP, worldSizeFlag } from './runConfigFlags.ts';
import { journalPlan, livePageNotice, refuseReportOverJournal, refuseSameReportPaths, resumeKnobs, writeReports } from './coordinatorCommand.ts';
import { choiceFlag, intFlag, ON_STEP_ERROR, parseFlags, plural, readableFile, shellCommand, splitScript, UsageError, type FlagOptions } from './usage.ts';
import { checkHostingFlags, nodePlan, nodeWorldSize, refuseCoordinatorFlags, type NodePlan } from './nodeFlags.ts';
import { wsUrl } from './endpoints.ts';

const HELP = `usage: distsampler run [--workers W] [flags] [SCRIPT [SCRIPT_ARGS...]]

Starts a coordinator and W worker processes, shows live per-rank progress on stderr, prints a
per-epoch audit table and exits 0 only if every epoch's audit holds: no planned position missing
and, without faults, every rank's digest equal to PyTorch's plan.

Each worker is SCRIPT, as under torchrun (a .ts file through tsx, .js/.mjs through node; everything
after it is its own arguments; \`--\` may come before it), calling initProcessGroup() itself; or,
without SCRIPT, \`distsampler worker\` running --step's module. Every worker gets torchrun's
environment: MASTER_ADDR, MASTER_PORT, RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK
(the node rank), DISTSAMPLER_RESTART_COUNT, DISTSAMPLER_TOKEN (with --tls-cert also DISTSAMPLER_TLS=1 and
DISTSAMPLER_CA, the certificate: they join over wss://). Their output lines are prefixed [rankN]: .
A .ts script or --step module needs tsx in your project (npm install -D tsx), or Node 22.6+
stripping types (NODE_OPTIONS=--experimental-strip-types); a .js/.mjs one runs under plain node.

  --workers W                number of worker processes (default 4); each worker's WORLD_SIZE,
                             so it must be within --world-size
  --nproc-per-node W         the same, as torchrun names it
  --world-size MIN:MAX       elastic bounds for the group (default W:W)
  --step FILE                a .ts/.js module exporting async step(batch, ctx) (default: no-op),
                             imported by the workers only; ctx.pg is the process group
  --on-step-error report|die
                             report (default): a step that throws is reported and its worker goes
                             on (the coordinator retries the batch, and quarantines a sample that
                             fails every attempt); die: the worker fails, as a crash does
  --no-prefix                leave the workers' output lines as they are, without [rankN]:
  --max-restarts N           start a worker that died on its own again, at most N times per rank
                             (default 0; 3 with --on-failure wait); past that it is a crash loop,
                             reported, and the failure policy takes its positions
  --resume FILE              continue a stopped run from its journal, with --workers W workers
                             (any number): the remaining positions are spread over them
  With --on-failure wait (or --max-restarts N), run starts a replacement worker (same RANK) for
  one that died, as torchrun restarts its workers.

Several nodes (as torchrun; one launcher per node, all with the same --token or DISTSAMPLER_TOKEN):
  --nnodes N|MIN:MAX         launchers in the group (default 1); the group holds nodes times
                             --nproc-per-node workers (MIN:MAX: elastic, as --world-size)
  --node-rank K              this launcher's node (default 0): its workers get GROUP_RANK K and
                             RANK K*W+LOCAL_RANK (the coordinator keeps ranks contiguous)
  --rdzv-endpoint HOST:PORT  the coordinator's address. Node rank 0 starts the coordinator there
                             (PORT 0: the OS picks one, printed for the others; --host binds
                             elsewhere, e.g. 0.0.0.0); the other nodes start only their workers
  --no-coordinator           start only workers, for a standalone \`distsampler coordinator\` at
                             --rdzv-endpoint (any node rank)
  --ca FILE                  on a node without the coordinator: the TLS coordinator's CA (its
                             workers join over wss://; default DISTSAMPLER_CA)
  A launcher without the coordinator takes only worker flags (--dataset, --eval-dataset, --step,
  --on-step-error, --step-ms, --straggler, --max-restarts, --no-prefix, SCRIPT); the run config,
  faults and report belong to the coordinator's launcher, which prints the audit. It exits 0 when
  its workers did.

Simulation (faults are injected by this launcher; everything replays from the seed):
  --kill RANK@EPOCH:FRACTION SIGKILL that rank's worker when it has done FRACTION of its shard
                             in EPOCH (repeatable)
  --kill-coordinator EPOCH:FRACTION
                             SIGKILL the coordinator when FRACTION of EPOCH is acknowledged, and
                             restart it from its journal (repeatable)
  --join EPOCH:FRACTION      start one more worker (no RANK: it takes the lowest free rank) when
                             FRACTION of EPOCH is acknowledged; an elastic group admits it at the
                             next epoch, so MAX of --world-size needs room for it (repeatable)
  --straggler RANK:FACTOR    that rank's simulated work is FACTOR times slower (repeatable)
  --step-ms MEAN[:JITTER]    simulated work per sample in ms, jitter seeded by --seed

${RUN_CONFIG_HELP}
run keeps a journal by default (in the temp folder, deleted after a successful run and after
one that stopped before any epoch began); an interrupted or failed run that began an epoch
prints the command that resumes it.
`;

/** The exit code of a worker refused for its input (a bad flag, evalStep results that break the contract). */
const WORKER_USAGE_EXIT = 2;

/** Flags `run` hands to its coordinator process unchanged (the duration knobs too, see durationFlagWords). */
const PASSED_TO_COORDINATOR = ['epochs', 'length', 'dataset', 'batch-size', 'ack-ms', 'seed', 'engine', 'sampler', 'eval-every', 'eval-dataset', 'host', 'tls-cert', 'tls-key', 'on-failure', 'tail-split', 'max-attempts', 'max-failed'] as const;

const RUN_FLAGS = {
  ...RUN_CONFIG_FLAGS,
  workers: { type: 'string' },
  'nproc-per-node': { type: 'string' },
  'world-size': { type: 'string' },
  step: { type: 'string' },
  'on-step-error': { type: 'string' },
  resume: { type: 'string' },
  kill: { type: 'string', multiple: true },
  'kill-coordinator': { type: 'string', multiple: true },
  join: { type: 'string', multiple: true },
  straggler: { type: 'string', multiple: true },
  'step-ms': { type: 'string' },
  'no-prefix': { type: 'boolean' },
  'max-restarts': { type: 'string' },
  nnodes: { type: 'string' },
  'node-rank': { type: 'string' },
  'rdzv-endpoint': { type: 'string' },
  'no-coordinator': { type: 'boolean' },
  ca: { type: 'string' },
} as const satisfies FlagOptions;

type RunValues = ReturnType<typeof parseFlags<typeof RUN_FLAGS>>['values'];

export async function run(argv: string[]): Promise<number> {
  const { flags, script, scriptArgs } = splitScript(argv, RUN_FLAGS);
  const { values } = parseFlags(flags, RUN_FLAGS);
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const workers = workerCount(values.workers, values['nproc-per-node']);
  const node = nodePlan(values);
  if (!node.hostsCoordinator) return runNodeWorkers(values, node, workers, script, scriptArgs);
  checkHostingFlags(values, node);
  const multiNode = node.nodes.max > 1;
  // The coordinator binds the endpoint's port, and its host unless --host says where else (0.0.0.0).
  const hosting = node.endpoint ? { ...values, host: values.host ?? node.endpoint.host, port: String(node.endpoint.port) } : values;
  const settings = await coordinatorSettings(hosting);
  if (multiNode && !settings.token) {
    throw new UsageError(`--nnodes ${values.nnodes}: the other nodes' workers must present the coordinator's token; give every launcher the same --token (or DISTSAMPLER_TOKEN)`);
  }
  if (values.ca !== undefined && !settings.tls) throw new UsageError('--ca is for workers joining a TLS coordinator elsewhere; this launcher starts its coordinator without --tls-cert');
  // Several nodes: the group is nodes times workers per node; one node: --world-size, or W.
  const worldSize = multiNode ? nodeWorldSize(node, workers) : worldSizeFlag('world-size', values['world-size'], workers);
  const range = typeof worldSize === 'number' ? { min: worldSize, max: worldSize } : worldSize;
  if (values.resume !== undefined && !existsSync(values.resume)) throw new UsageError(`--resume: ${values.resume} does not exist`);
  // The coordinator child would refuse these journals only after the launch: refuse them now.
  const { restore, resume } = journalPlan(settings.journalPath, values.resume);
  // A restarted journal keeps its group and its config; a fresh run or a resume takes the flags'.
  const restarted = restore !== undefined && !resume;
  if (!multiNode) checkWorkers(workers, restarted ? restore.worldSize : range, restarted ? `the world size journaled in ${settings.journalPath}` : '--world-size');
  if (!restarted) checkPlanFlags(settings.config, range);
  const runConfig = restore?.config ?? settings.config;
  const kills = (values.kill ?? []).map(parseKill);
  for (const [i, k] of kills.entries()) {
    if (k.rank >= workers && multiNode) throw new UsageError(`--kill ${values.kill![i]}: rank ${k.rank} is not on this node (node rank 0 starts ranks 0..${workers - 1}); a launcher kills only its own workers`);
    if (k.rank >= workers) throw new UsageError(`--kill ${values.kill![i]}: rank ${k.rank} does not exist (${workers === 1 ? 'there is only rank 0' : `ranks are 0..${workers - 1}`})`);
    checkFaultEpoch('kill', values.kill![i], k.epoch, runConfig);
  }
  const coordinatorKills = (values['kill-coordinator'] ?? []).map(parseCoordinatorKill);
  for (const [i, k] of coordinatorKills.entries()) checkFaultEpoch('kill-coordinator', values['kill-coordinator']![i], k.epoch, runConfig);
  const joins = (values.join ?? []).map((raw) => parseProgressPoint('join', raw));
  for (const [i, j] of joins.entries()) checkFaultEpoch('join', values.join![i], j.epoch, runConfig);
  if (joins.length > 0 && range.max - workers < joins.length) {
    throw new UsageError(`--join: ${plural(joins.length, 'worker')} to join a group of ${workers} needs --world-size MIN:MAX with MAX >= ${workers + joins.length} (it is ${range.min === range.max ? range.max : `${range.min}:${range.max}`})`);
  }
  parseStepMs(values['step-ms'], values.straggler ?? []);
  if (script !== undefined) checkScript(script, values);
  // Imported by the workers only (its top-level code is theirs): here only that it is there.
  if (values.step !== undefined) moduleFile('step', values.step);
  const maxRestarts = intFlag('max-restarts', values['max-restarts'], settings.onFailure === 'wait' ? 3 : 0, 0, 1000);

  const coordinatorArgs: string[] = ['--world-size', range.min === range.max ? String(range.max) : `${range.min}:${range.max}`];
  for (const flag of PASSED_TO_COORDINATOR) {
    const value = hosting[flag];
    if (value !== undefined) coordinatorArgs.push(`--${flag}=${value}`);
  }
  coordinatorArgs.push(...durationFlagWords(values));
  if (values['no-shuffle']) coordinatorArgs.push('--no-shuffle');
  if (values['drop-last']) coordinatorArgs.push('--drop-last');
  if (values['no-pad']) coordinatorArgs.push('--no-pad');
  const workerArgs = workerCommandArgs(values, settings.deadAfterMs);

  const journalPath = values.resume ?? settings.journalPath ?? join(tmpdir(), `distsampler-${process.pid}-${Date.now()}.journal`);
  // Ours: made by this run, or by an earlier `run` whose printed resume command this is.
  const ownJournal = (values.resume === undefined && settings.journalPath === undefined) || isRunTempJournal(journalPath);
  refuseReportOverJournal(settings.reportPath, journalPath, "the run's journal", 'a resume');
  refuseReportOverJournal(settings.reportHtmlPath, journalPath, "the run's journal", 'a resume', 'report-html');
  refuseSameReportPaths(settings.reportPath, settings.reportHtmlPath);
  if (settings.port !== 0) await requireFreePort(settings.host, settings.port);
  // The same workers again: their data, their step and their simulated work (the config is journaled).
  // The coordinator's knobs too; the run config is in the journal, the token is never printed.
  const scriptWords = script === undefined ? [] : ['--', script, ...scriptArgs];
  const resumeCommand = shellCommand(['npx', 'distsampler', 'run', '--resume', journalPath, '--workers', String(workers), ...workerArgs.filter((a) => !a.startsWith('--reconnect-timeout-ms')), ...resumeKnobs(hosting), ...scriptWords]);
  let view: ProgressView | undefined;
  const note = (line: string) => (view ? view.log(line) : process.stderr.write(`${line}\n`));
  // torchrun's --tee prefix: `[rank2]: ...`.
  const prefixed = (source: string, line: string) => (values['no-prefix'] ? line : `[${source}]: ${line}`);
  const launcher = new Launcher({
    workers,
    ...(multiNode ? { node: { rank: 0, worldSize: range.max } } : {}),
    // The other nodes need the address: the port may be the OS's pick (--rdzv-endpoint HOST:0).
    // Said again after a coordinator restart; the live page's address comes with it.
    onListening: ({ host, port }: { host: string; port: number }) => {
      const secure = settings.tls !== undefined;
      note(node.endpoint ? rdzvNotice(node, host, port, secure) : `listening on ${wsUrl(host, port, secure)}`);
      note(livePageNotice(host, port, secure, settings.token ? 'given' : { own: launcher.token }));
    },
    coordinatorArgs,
    workerArgs,
    ...(script === undefined ? {} : { script: { path: resolve(script), args: scriptArgs } }),
    maxRestarts,
    journalPath,
    resume: values.resume !== undefined,
    port: settings.port,
    token: settings.token,
    // The workers' CA: a self-signed certificate is its own (a chain file that ends in its root holds it too).
    ...(settings.tls ? { tlsCa: resolve(values.ca ?? settings.tls.certPath) } : {}),
    kills,
    coordinatorKills,
    joins,
    replaceDead: settings.onFailure === 'wait',
    onOutput: (source, line, stream) => (stream === 'stdout' ? process.stdout.write(`${prefixed(source, line)}\n`) : note(prefixed(source, line))),
    onNote: note,
  });
  view = attachProgressView(launcher.events);
  // A run that stopped offers to resume what it journaled; with no epoch begun there is
  // nothing to resume, and a journal of our own in the temp folder would only pile up.
  const afterFailure = () => {
    if (resumable(journalPath)) note(`resume with: ${resumeCommand}`);
    else if (ownJournal) removeJournal(journalPath);
  };
  /** Set once Ctrl-C (or SIGTERM) arrived: from then on this is the only way out (exit 130, or 143). */
  let interrupted: Promise<never> | undefined;
  const interrupt = (exitCode: number) => {
    // A second Ctrl-C (or SIGTERM) ends this process on the spot; the hint went out with the first.
    if (interrupted) process.exit(exitCode);
    // Still listening while the journal is read (tens of ms): a second signal meanwhile waits for
    // this handler instead of killing the process before the hint. Notice and hint are one write,
    // so whoever sees the first line has the hint too (two writes let the reader act in between).
    const hinted = resumable(journalPath);
    note(`\ninterrupted: stopping every worker and the coordinator${hinted ? `\nresume with: ${resumeCommand}` : ''}`);
    interrupted = launcher.stop().then((): never => {
      if (!hinted) afterFailure();
      process.exit(exitCode);
    });
  };
  // 128 + the signal's number, as shells report it.
  const onSigint = () => interrupt(130);
  const onSigterm = () => interrupt(143);
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  try {
    const result = await launcher.run().catch(async (err: unknown) => {
      // The run ending because of the interrupt is the interrupt's to report.
      if (interrupted) return interrupted;
      view?.detach();
      view = undefined;
      afterFailure();
      throw err;
    });
    if (interrupted) return interrupted;
    view.detach();
    view = undefined;
    const { report, workers: exits, coordinatorRestarts } = result;
    process.stdout.write(formatSummary(report) + '\n');
    const killed = exits.filter((w) => w.killedByLauncher).length;
    // bench/soak.ts and the fault tests parse this line as it is: keep its "(s)".
    if (killed || coordinatorRestarts) process.stdout.write(`faults injected: ${killed} worker kill(s), ${coordinatorRestarts} coordinator restart(s)\n`);
    const failed = exits.filter((w) => w.exit !== 0 && !w.killedByLauncher && !w.neverJoined);
    if (failed.length) note(`workers that exited non-zero: ${failed.map((w) => `rank ${w.rank} pid ${w.pid} (${w.exit ?? 'killed'})`).join(', ')}`);
    const unjoined = exits.filter((w) => w.neverJoined);
    if (unjoined.length) note(`stopped before they joined (the run had ended): ${unjoined.map((w) => `rank ${w.rank} pid ${w.pid}`).join(', ')}`);
    // After the table, so a report (or its page) that cannot be written does not hide the audit.
    const written = await writeReports('run', settings, report);
    // A run that went through every pass and failed only for its quarantined samples has nothing
    // to resume: trying them again would fail again.
    const settled = !report.error && report.epochs.every((e) => e.missing === 0) && report.eval.every((e) => e.pass.missing === 0);
    if ((report.ok || settled) && ownJournal) removeJournal(journalPath);
    else if (!report.ok && !settled) afterFailure();
    return runExitCode(report.ok && written, exits);
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
  }
}

/**
 * A launcher that only starts its workers (node rank K > 0, or --no-coordinator): the coordinator
 * is elsewhere, so this launcher sees no report. It waits for its workers (restarting them under
 * --max-restarts) and exits 0 only if each local rank's last worker did.
 */
async function runNodeWorkers(values: RunValues, node: NodePlan, workers: number, script: string | undefined, scriptArgs: string[]): Promise<number> {
  refuseCoordinatorFlags(values, node);
  const endpoint = node.endpoint!;
  // An empty DISTSAMPLER_TOKEN is none (the coordinator's own reading).
  const token = values.token || process.env.DISTSAMPLER_TOKEN || undefined;
  if (token === undefined) throw new UsageError(`node rank ${node.rank} needs the coordinator's token: --token T or DISTSAMPLER_TOKEN, as given to the launcher that hosts it`);
  if (script !== undefined) checkScript(script, values);
  if (values.step !== undefined) moduleFile('step', values.step);
  for (const flag of ['dataset', 'eval-dataset'] as const) {
    const path = values[flag];
    if (path !== undefined && !statSync(path, { throwIfNoEntry: false })?.isFile()) throw new UsageError(`--${flag}: ${path}: no such file`);
  }
  parseStepMs(values['step-ms'], values.straggler ?? []);
  const maxRestarts = intFlag('max-restarts', values['max-restarts'], 0, 0, 1000);
  const ca = values.ca ?? (process.env.DISTSAMPLER_CA || undefined);
  if (ca !== undefined) readableFile('--ca', ca);
  const first = node.rank * workers;
  const ranks = workers === 1 ? `rank ${first}` : `ranks ${first}..${first + workers - 1}`;
  const note = (line: string) => process.stderr.write(`${line}\n`);
  const prefixed = (source: string, line: string) => (values['no-prefix'] ? line : `[${source}]: ${line}`);
  const launcher = new Launcher({
    workers,
    node: { rank: node.rank, worldSize: nodeWorldSize(node, workers).max },
    coordinatorArgs: [],
    workerArgs: workerCommandArgs(values, undefined),
    ...(script === undefined ? {} : { script: { path: resolve(script), args: scriptArgs } }),
    maxRestarts,
    token,
    ...(ca === undefined ? {} : { tlsCa: resolve(ca) }),
    onOutput: (source, line, stream) => (stream === 'stdout' ? process.stdout.write(`${prefixed(source, line)}\n`) : note(prefixed(source, line))),
    onNote: note,
  });
  note(`node rank ${node.rank}: starting ${plural(workers, 'worker')} (${ranks}) for the coordinator at ${wsUrl(endpoint.host, endpoint.port, ca !== undefined)}`);
  let interrupted: number | undefined;
  const interrupt = (exitCode: number) => {
    if (interrupted !== undefined) process.exit(exitCode);
    interrupted = exitCode;
    note('\ninterrupted: stopping this node\'s workers');
    void launcher.stop();
  };
  const onSigint = () => interrupt(130);
  const onSigterm = () => interrupt(143);
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  try {
    const exits = await launcher.runWorkers(endpoint);
    if (interrupted !== undefined) return interrupted;
    const failed = exits.filter((w) => w.exit !== 0);
    if (failed.length === 0) {
      note(`node rank ${node.rank}: ${plural(workers, 'worker')} (${ranks}) exited 0; the run's audit is with the coordinator (node rank 0's launcher prints it)`);
      return 0;
    }
    note(`node rank ${node.rank}: workers that exited non-zero: ${failed.map((w) => `rank ${w.rank} pid ${w.pid} (${w.exit ?? 'killed'})`).join(', ')}`);
    return runExitCode(false, exits);
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
  }
}

/** What the other nodes' launchers need to join: said once the coordinator listens (and after a restart). */
function rdzvNotice(node: NodePlan, host: string, port: number, secure: boolean): string {
  // A wildcard bind is reached through the endpoint's own host.
  const reach = host === '0.0.0.0' || host === '::' ? (node.endpoint?.host ?? host) : host;
  const endpoint = `${reach.includes(':') ? `[${reach}]` : reach}:${port}`;
  const others = node.nodes.max > 1 ? `; the other nodes join with --rdzv-endpoint ${endpoint} --node-rank K (and the same --token)` : '';
  return `listening on ${wsUrl(host, port, secure)} for ${node.nodes.min === node.nodes.max ? plural(node.nodes.max, 'node') : `${node.nodes.min}..${node.nodes.max} nodes`}${others}`;
}

/** The `distsampler worker` flags run gives its own workers (a script takes none of them). */
function workerCommandArgs(values: RunValues, deadAfterMs: number | undefined): string[] {
  const args: string[] = [];
  if (values.dataset) args.push('--dataset', values.dataset);
  if (values['eval-dataset']) args.push('--eval-dataset', values['eval-dataset']);
  if (values.step) args.push('--step', values.step);
  if (values['on-step-error'] !== undefined) args.push(`--on-step-error=${choiceFlag('on-step-error', values['on-step-error'], ON_STEP_ERROR, 'report')}`);
  if (values['step-ms']) args.push(`--step-ms=${values['step-ms']}`);
  for (const s of values.straggler ?? []) args.push(`--straggler=${s}`);
  // Long enough to outlast a coordinator restart (and, on another node, the coordinator starting).
  args.push(`--reconnect-timeout-ms=${Math.max(30_000, 3 * (deadAfterMs ?? 0))}`);
  return args;
}

/**
 * 0 for a run whose audit held (and whose report was written). A failed run exits 2 when a worker
 * was refused for its input (evalStep results that break the contract, exit 2): the run failed for
 * the user's step module, not for a fault, and says so as a bad flag does; otherwise 1.
 */
export function runExitCode(ok: boolean, exits: ReadonlyArray<{ exit: number | string | null; killedByLauncher: boolean }>): number {
  if (ok) return 0;
  return exits.some((w) => w.exit === WORKER_USAGE_EXIT && !w.killedByLauncher) ? WORKER_USAGE_EXIT : 1;
}

/** --workers, or torchrun's name for it, --nproc-per-node (both only if they agree). */
function workerCount(workers: string | undefined, nprocPerNode: string | undefined): number {
  const count = intFlag('workers', workers, 4, 1, 1024);
  if (nprocPerNode === undefined) return count;
  const nproc = intFlag('nproc-per-node', nprocPerNode, 4, 1, 1024);
  if (workers !== undefined && nproc !== count) throw new UsageError(`--workers ${count} and --nproc-per-node ${nproc} disagree: give one of them`);
  return nproc;
}

/** The extensions `run` starts a script or imports a step module with (tsx for TypeScript). */
const MODULE_EXTENSIONS = ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs'];

/** A module file a worker will load: it must be there and be one `run` knows how to start. */
function moduleFile(flag: string, path: string): void {
  const what = flag === 'script' ? `the script ${path}` : `--${flag}: ${path}`;
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) throw new UsageError(`${what}: no such file`);
  if (!stat.isFile()) throw new UsageError(`${what}: not a file`);
  if (!MODULE_EXTENSIONS.includes(extname(path))) throw new UsageError(`${what}: expected a ${MODULE_EXTENSIONS.join(', ')} file`);
  // TypeScript needs a loader: tsx from the user's project (or this package's, from its sources), or Node's type stripping.
  if (!userExecArgv(path, [dirname(resolve(path)), process.cwd()])) throw new UsageError(typeScriptLoaderMissing(what));
}

/** A script is each worker itself: the worker command's own flags mean nothing to it. */
function checkScript(script: string, values: { step?: string; 'on-step-error'?: string; 'step-ms'?: string; straggler?: string[] }): void {
  moduleFile('script', script);
  for (const flag of ['step', 'on-step-error', 'step-ms', 'straggler'] as const) {
    if (values[flag] !== undefined) throw new UsageError(`--${flag} is for run's own workers (distsampler worker), not for a script: ${script} reads its data and does its work itself`);
  }
}

/** WORLD_SIZE is the number of workers: the coordinator refuses it outside MIN..MAX at the rendezvous. */
function checkWorkers(workers: number, range: WorldSizeRange, source: string): void {
  const size = range.min === range.max ? `${range.max}` : `${range.min}:${range.max}`;
  if (workers < range.min) throw new UsageError(`--workers ${workers} does not fit ${source} ${size}: the group needs at least ${plural(range.min, 'worker')}`);
  if (workers > range.max) throw new UsageError(`--workers ${workers} does not fit ${source} ${size}: the group takes at most ${plural(range.max, 'worker')}`);
}

/** A fault planned for a pass the run never reaches would silently never fire. */
function checkFaultEpoch(flag: string, raw: string, pass: number, config: RunConfig): void {
  const { epochs } = config;
  if (isEvalPass(pass)) {
    const after = epochOfPass(pass);
    if (after < epochs && evalDueAfter(config, after)) return;
    const when = config.eval ? `--eval-every ${config.eval.every} evaluates after epochs ${evaluatedEpochs(config)}` : 'the run does not evaluate (no --eval-every)';
    throw new UsageError(`--${flag} ${raw}: no evaluation pass follows epoch ${after}: ${when}`);
  }
  const epoch = pass;
  if (epoch < epochs) return;
  const has = epochs === 0 ? 'has no epochs' : epochs === 1 ? 'has only epoch 0' : `has epochs 0..${epochs - 1}`;
  throw new UsageError(`--${flag} ${raw}: epoch ${epoch} never runs, the run ${has} (--epochs ${epochs})`);
}

/** The epochs an evaluation pass follows, for a message: "1, 3, 5" (none: "none"). */
function evaluatedEpochs(config: RunConfig): string {
  const after = Array.from({ length: config.epochs }, (_, e) => e).filter((e) => evalDueAfter(config, e));
  return after.length ? after.join(', ') : 'none';
}

/** The name `run` gives its own journal in the temp folder. */
function isRunTempJournal(path: string): boolean {
  return dirname(resolve(path)) === resolve(tmpdir()) && /^distsampler-\d+-\d+\.journal$/.test(basename(path));
}

/** The coordinator child would only fail after the launch on a busy --port: find out now. */
function requireFreePort(host: string, port: number): Promise<void> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' ? new UsageError(`--port ${port}: the port is already in use on ${host}`) : new UsageError(`--host ${host} --port ${port}: ${err.message}`)),
    );
    probe.listen(port, host, () => probe.close(() => resolvePort()));
  });
}


/** The journal and the temp file a compaction may have left beside it. */
function removeJournal(path: string): void {
  rmSync(path, { force: true });
  rmSync(`${path}.tmp`, { force: true });
}
