/** `distsampler coordinator`: a standalone coordinator for workers started elsewhere. */
import { PlanSource } from '../worker/planSource.ts';
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { Coordinator, CoordinatorConfigError, isLoopback, type CoordinatorOptions } from '../coordinator/coordinator.ts';
import { forwardEvents, type BridgedEvent } from './eventBridge.ts';
import { describeTornTail, journalPlan as planFromJournal, JournalLockedError, JournalPlanError, resumable, type JournalPlan } from '../coordinator/journal.ts';
import { attachProgressView } from './progressView.ts';
import type { RunReport } from '../coordinator/report.ts';
import { renderReportHtml } from './reportHtml.ts';
import { formatSummary } from './summaryTable.ts';
import { coordinatorSettings, durationFlagWords, RUN_CONFIG_FLAGS, RUN_CONFIG_HELP, worldSizeFlag, type RunConfigValues } from './runConfigFlags.ts';
import { wsUrl } from './endpoints.ts';
import { livePageUrl } from '../coordinator/observers.ts';
import { exitWithParent, parseFlags, plural, shellCommand, UsageError } from './usage.ts';

const HELP = `usage: distsampler coordinator --world-size W|MIN:MAX [flags]

Serves a group of workers started elsewhere (\`distsampler worker\` with MASTER_ADDR and
MASTER_PORT, or initProcessGroup in your own program). Prints "listening on ws://host:port"
(wss:// with --tls-cert), then progress on stderr and the audit table on stdout; exits 0 only if every epoch's audit holds.

  --world-size W|MIN:MAX     number of ranks, or an elastic range (torchrun's --nnodes form):
                             the rendezvous completes at MAX, or at MIN after --settle-ms;
                             workers arriving mid-epoch wait as standby for the next epoch
  --resume FILE              continue the run stopped in journal FILE with a new group of workers
                             (of any size): the remaining positions are spread over it
  --ipc                      report events to a parent process (used by \`distsampler run\`)

${RUN_CONFIG_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { ...RUN_CONFIG_FLAGS, 'world-size': { type: 'string' }, resume: { type: 'string' }, ipc: { type: 'boolean' } });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const settings = await coordinatorSettings(values);
  const { restore, resume, journalPath } = journalPlan(settings.journalPath, values.resume);
  if (values['world-size'] === undefined && !(restore && !resume)) throw new UsageError('--world-size is required');
  const worldSize = worldSizeFlag('world-size', values['world-size'], 1);
  requireTokenOffLoopback(settings.host, settings.token);
  refuseReportOverJournal(settings.reportPath, journalPath, 'the journal', 'a restart or resume');
  refuseReportOverJournal(settings.reportHtmlPath, journalPath, 'the journal', 'a restart or resume', 'report-html');
  refuseSameReportPaths(settings.reportPath, settings.reportHtmlPath);
  const ipc = values.ipc && process.send ? (m: BridgedEvent) => void process.send!(m) : undefined;
  const release = exitWithParent({ leaveCtrlCToParent: values.ipc === true });

  const coordinator = createCoordinator({
    worldSize,
    config: settings.config,
    // The audit's large permutations are derived in a worker thread, ahead of their epoch.
    plans: (config) => new PlanSource(config),
    host: settings.host,
    port: settings.port,
    token: settings.token,
    tls: settings.tls,
    heartbeatMs: settings.heartbeatMs,
    deadAfterMs: settings.deadAfterMs,
    rendezvousTimeoutMs: settings.rendezvousTimeoutMs,
    settleMs: settings.settleMs,
    lingerMs: settings.lingerMs,
    onFailure: settings.onFailure,
    tailSplit: settings.tailSplit,
    maxAttempts: settings.maxAttempts,
    maxFailed: settings.maxFailed,
    waitTimeoutMs: settings.waitTimeoutMs,
    helloTimeoutMs: settings.helloTimeoutMs,
    reportTimeoutMs: settings.reportTimeoutMs,
    rejoinTimeoutMs: settings.rejoinTimeoutMs,
    journalFlushMs: settings.journalFlushMs,
    journalPath,
    restore,
    resume,
  });
  // Opening the journal to continue it cut what a crash tore: say so (under `run`, it forwards this line).
  if (restore?.tornTail && journalPath !== undefined) process.stderr.write(`${describeTornTail(journalPath, restore.tornTail)}\n`);
  if (ipc) forwardEvents(coordinator, ipc);
  const view = ipc ? undefined : attachProgressView(coordinator);
  let interrupted = false;
  const stop = () => {
    interrupted = true;
    void coordinator.close('interrupted');
  };
  // Under `run` (--ipc) a Ctrl-C is the launcher's to handle; it stops this process with SIGTERM.
  if (!ipc) process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const { host, port, secure } = await coordinator.listen().catch(async (err: NodeJS.ErrnoException) => {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    view?.detach();
    await coordinator.close('could not listen');
    // A journal this attempt just created holds nothing worth keeping.
    if (journalPath !== undefined && !restore) rmSync(journalPath, { force: true });
    release();
    if (err.code === 'EADDRINUSE') throw new UsageError(`--port ${settings.port}: the port is already in use on ${settings.host}`);
    if (err.code === 'EADDRNOTAVAIL') throw new UsageError(`--host ${settings.host}: not an address of this machine`);
    throw err;
  });
  // Under `run` (--ipc) this line reaches the launcher's stderr like any other.
  const warning = plaintextTokenWarning(host, secure);
  if (warning !== undefined && view) view.log(warning);
  else if (warning !== undefined) process.stderr.write(`${warning}\n`);
  if (!ipc) {
    const size = typeof worldSize === 'number' ? plural(worldSize, 'worker') : `${worldSize.min}..${worldSize.max} workers`;
    view?.log(`listening on ${wsUrl(host, port, secure)} for ${restore && !resume ? 'the journaled group' : size}`);
    view?.log(livePageNotice(host, port, secure, settings.token ? 'given' : 'none'));
    if (restore) view?.log(`continuing the run journaled in ${journalPath} (its config wins over flags)`);
  }
  const report = await coordinator.done;
  view?.detach();
  // The table first: a report that cannot be written must not hide the audit.
  if (!ipc) process.stdout.write(formatSummary(report) + '\n');
  const written = await writeReports('coordinator', settings, report);
  // Workers may still use collectives and the store after the last epoch; they leave with destroy().
  await coordinator.drained;
  release();
  await coordinator.close();
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  // The journal could not be written (disk full, ...): the run stopped there, resumable elsewhere.
  if (coordinator.journalFailure !== undefined) process.stderr.write(`distsampler coordinator: the run stopped: ${coordinator.journalFailure}\n`);
  if ((interrupted || coordinator.journalFailure !== undefined) && !report.ok) {
    // Its workers were told to stop: a new group takes over what the journal holds.
    if (!ipc && journalPath !== undefined && resumable(journalPath)) {
      const size = coordinator.range.min === coordinator.range.max ? `${coordinator.range.max}` : `${coordinator.range.min}:${coordinator.range.max}`;
      // The journal holds the run config; the coordinator's own knobs come from the flags given.
      const words = ['npx', 'distsampler', 'coordinator', '--resume', journalPath, '--world-size', size, ...resumeKnobs(values)];
      process.stderr.write(`resume with: ${shellCommand(words)}\n`);
      const token = settings.token === undefined ? '' : ', with the same --token or DISTSAMPLER_TOKEN';
      process.stderr.write(`(then start that many workers${token}; any --world-size will do: the new group takes over what is left)\n`);
    }
    return interrupted ? 130 : 1;
  }
  return report.ok && written ? 0 : 1;
}

/**
 * The live page's address, said next to "listening on". A token given (--token or
 * DISTSAMPLER_TOKEN) is never printed: the page takes it as `?token=`. The token `run` made for
 * itself (its coordinator is on loopback, so only this machine can reach it) is, in the address
 * to open, as Jupyter prints its own: nobody else could know it.
 */
export function livePageNotice(host: string, port: number, secure: boolean, token: 'none' | 'given' | { readonly own: string }): string {
  const url = livePageUrl(host, port, secure);
  if (token === 'none') return `live page: ${url}`;
  if (token === 'given') return `live page: ${url}?token=... (with the --token or DISTSAMPLER_TOKEN given)`;
  return `live page: ${url}?token=${encodeURIComponent(token.own)}`;
}

/** Flags a resumed coordinator should get again (the run config itself is in the journal; the token is not printed). */
const RESUME_KEEPS = ['host', 'port', 'tls-cert', 'tls-key', 'report', 'report-html', 'on-failure', 'tail-split', 'max-attempts', 'max-failed'] as const;

/** Those of RESUME_KEEPS and the duration knobs that were given, as words of a resume command. */
export function resumeKnobs(values: RunConfigValues): string[] {
  const kept = RESUME_KEEPS.flatMap((flag) => (values[flag] === undefined ? [] : [`--${flag}`, values[flag]]));
  return [...kept, ...durationFlagWords(values)];
}

/** The report (or its page, `flag` report-html) is written over its path at the end: it must not be the journal a resume reads. */
export function refuseReportOverJournal(reportPath: string | undefined, journalPath: string | undefined, journal: string, needs: string, flag = 'report'): void {
  if (reportPath !== undefined && journalPath !== undefined && resolve(reportPath) === resolve(journalPath)) {
    throw new UsageError(`--${flag} ${reportPath} is ${journal}: the report would overwrite what ${needs} needs`);
  }
}

/** --report and --report-html both write at the end: one would overwrite the other. */
export function refuseSameReportPaths(reportPath: string | undefined, reportHtmlPath: string | undefined): void {
  if (reportPath !== undefined && reportHtmlPath !== undefined && resolve(reportPath) === resolve(reportHtmlPath)) {
    throw new UsageError(`--report-html ${reportHtmlPath} is the --report file: give each its own`);
  }
}

// Lives with the journal now; re-exported for the importers that still look for it here.
export { resumable };

/** Writes the JSON report; on failure says why on stderr and returns false. */
export function writeReport(command: string, path: string, report: RunReport): Promise<boolean> {
  return writeOutput(command, 'report', path, reportJson(report));
}

/** A pair of numbers (a timeline's `[atMs, acknowledged]`) as JSON.stringify indents it: four lines. */
const INDENTED_PAIR = /\[\n\s*(-?[\d.eE+-]+),\n\s*(-?[\d.eE+-]+)\n\s*\]/g;

/** The report as indented JSON, each pair of numbers on one line: a timeline's points would take four each. */
function reportJson(report: RunReport): string {
  return JSON.stringify(report, null, 2).replace(INDENTED_PAIR, '[$1, $2]') + '\n';
}

/** Writes the timeline page (bin/reportHtml.ts); on failure says why on stderr and returns false. */
export function writeReportHtml(command: string, path: string, report: RunReport): Promise<boolean> {
  return writeOutput(command, 'report-html', path, renderReportHtml(report));
}

/** Each report the flags asked for (--report, --report-html), both tried: true when every one was written. */
export async function writeReports(command: string, paths: { reportPath?: string; reportHtmlPath?: string }, report: RunReport): Promise<boolean> {
  const json = paths.reportPath === undefined || (await writeReport(command, paths.reportPath, report));
  const html = paths.reportHtmlPath === undefined || (await writeReportHtml(command, paths.reportHtmlPath, report));
  return json && html;
}

async function writeOutput(command: string, flag: string, path: string, text: string): Promise<boolean> {
  try {
    await writeFile(path, text);
    return true;
  } catch (err) {
    process.stderr.write(`distsampler ${command}: --${flag}: cannot write ${path}: ${err instanceof Error ? err.message : String(err)}\n`);
    return false;
  }
}

/**
 * The coordinator refuses a non-loopback bind without a token (CoordinatorConfigError); the
 * same rule here makes it a usage error that names the flags.
 */
function requireTokenOffLoopback(host: string, token: string | undefined): void {
  if (!isLoopback(host) && !token) throw new UsageError(`--host ${host} is not loopback: give --token (or DISTSAMPLER_TOKEN), or bind --host 127.0.0.1`);
}

/**
 * Off loopback, a coordinator without TLS lets anyone on the network path read the token at the
 * upgrade (and join with it): allowed, as torch allows it, but said once on stderr.
 */
export function plaintextTokenWarning(host: string, secure: boolean): string | undefined {
  if (secure || isLoopback(host)) return undefined;
  return `distsampler coordinator: warning: --host ${host} is not loopback and the token travels in clear over ws://; serve TLS with --tls-cert/--tls-key`;
}

/** Whatever else the coordinator refuses in its options is bad input too: exit 2, not a crash. */
function createCoordinator(options: CoordinatorOptions): Coordinator {
  try {
    return new Coordinator(options);
  } catch (err) {
    if (err instanceof CoordinatorConfigError) throw new UsageError(err.message);
    // Another coordinator holds the journal: refused before anything is written.
    if (err instanceof JournalLockedError) throw new UsageError(err.message);
    throw err;
  }
}

/** What the journal flags mean (decided by the journal module); a journal that cannot serve them is bad input: exit 2. */
export function journalPlan(journal: string | undefined, resumeFrom: string | undefined): JournalPlan {
  try {
    return planFromJournal(journal, resumeFrom);
  } catch (err) {
    if (err instanceof JournalPlanError) throw new UsageError(err.message);
    throw err;
  }
}
