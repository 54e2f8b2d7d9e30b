/**
 * The journal file at the process boundary. Finding 5: one coordinator per journal, refused at
 * once, and a holder killed with SIGKILL does not leave it stuck. Finding 4: a write that fails
 * (EFBIG under `ulimit -f`, ENOSPC) is one JournalWriteError and leaves a journal that reads.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Journal, JournalLockedError, JournalWriteError, readJournal, type JournalRecord } from '../coordinator/journal.ts';
import type { RunConfig } from '../shared/protocol.ts';

const dir = mkdtempSync(join(tmpdir(), 'distsampler-journal-file-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const JOURNAL_MODULE = fileURLToPath(new URL('../coordinator/journal.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');
const config: RunConfig = { length: 400, seed: '3', shuffle: true, dropLast: false, engine: 'torch', batchSize: 10, epochs: 2 };
const range = { min: 1, max: 1 };
const member = (i: number): JournalRecord => ({ k: 'member', rank: 0, workerId: `worker-${i}` });

const children = new Set<ChildProcess>();
afterEach(() => {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
});

/** Runs `script` (ESM, `JOURNAL` is the journal module) in a node child, optionally under `ulimit -f blocks`. */
function child(script: string, ulimitBlocks?: number): { proc: ChildProcess; line: Promise<string>; exited: Promise<void> } {
  const file = join(mkdtempSync(join(dir, 'child-')), 'script.mjs');
  writeFileSync(file, `import * as JOURNAL from ${JSON.stringify(JOURNAL_MODULE)};\n${script}\n`);
  const node = [process.execPath, '--import', TSX, file];
  const proc =
    ulimitBlocks === undefined
      ? spawn(node[0], node.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] })
      : spawn('sh', ['-c', `ulimit -f ${ulimitBlocks} && exec "$@"`, 'sh', ...node], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(proc);
  let out = '';
  const line = new Promise<string>((resolve, reject) => {
    proc.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl));
    });
    proc.once('exit', (code, signal) => reject(new Error(`child exited (${code ?? signal}) before printing a line`)));
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return { proc, line, exited };
}

describe('one coordinator per journal', () => {
  it('refuses a second opener at once, naming the file and the holder, and writes nothing', () => {
    const path = join(dir, 'held.journal');
    const holder = Journal.create(path, config, range);
    holder.write(member(1));
    const before = readFileSync(path);
    for (const open of [() => Journal.create(path, config, range), () => Journal.append(path)]) {
      const err = catchError(open);
      expect(err).toBeInstanceOf(JournalLockedError);
      expect(err).toMatchObject({ name: 'JournalLockedError', code: 'ERR_JOURNAL_LOCKED', path, holder: { pid: process.pid } });
      expect((err as Error).message).toContain(`journal ${path} is in use by another coordinator (pid ${process.pid} on ${hostname()}`);
    }
    expect(readFileSync(path)).toEqual(before);
    holder.write(member(2)); // the holder goes on
    holder.close();
    expect(readJournal(path).members.get(0)).toBe('worker-2');
  });

  it('releases the lock on close', () => {
    const path = join(dir, 'released.journal');
    Journal.create(path, config, range).close();
    expect(existsSync(`${path}.lock`)).toBe(false);
    const again = Journal.append(path);
    again.write(member(3));
    again.close();
    expect(readJournal(path).members.get(0)).toBe('worker-3');
  });

  it('takes over the lock of a holder killed with SIGKILL, and refuses while it lives', async () => {
    const path = join(dir, 'killed-holder.journal');
    const holder = child(`const j = JOURNAL.Journal.create(${JSON.stringify(path)}, ${JSON.stringify(config)}, { min: 1, max: 1 });
j.write({ k: 'member', rank: 0, workerId: 'child' });
console.log('holding');
setInterval(() => {}, 1 << 30);`);
    expect(await holder.line).toBe('holding');
    const refused = catchError(() => Journal.append(path));
    expect(refused).toBeInstanceOf(JournalLockedError);
    expect((refused as JournalLockedError).holder.pid).toBe(holder.proc.pid);

    holder.proc.kill('SIGKILL');
    await holder.exited;
    expect(existsSync(`${path}.lock`)).toBe(true); // SIGKILL left it behind
    const restarted = Journal.append(path);
    restarted.write(member(4));
    restarted.close();
    expect(readJournal(path).members.get(0)).toBe('worker-4');
    expect(readdirSync(dir).filter((f) => f.startsWith('killed-holder.journal.lock'))).toEqual([]);
  });

  it('sees through pid reuse: a lock naming a live pid with another start time, or this pid with a token not held here, is stale', () => {
    const path = join(dir, 'reused.journal');
    Journal.create(path, config, range).close();
    const stale = (pid: number, started: string) => writeFileSync(`${path}.lock`, JSON.stringify({ pid, host: hostname(), started, token: 'old', since: '2020-01-01T00:00:00.000Z' }));
    stale(process.pid, 'whatever');
    Journal.append(path).close();
    if (existsSync(`/proc/${process.ppid}/stat`)) {
      stale(process.ppid, '1'); // the parent lives, but it started long after clock tick 1
      Journal.append(path).close();
    }
    writeFileSync(`${path}.lock`, 'not a lock'); // unreadable: no holder to wait for
    Journal.append(path).close();
  });

  it('counts a lock taken on another host as held (its pid cannot be checked from here)', () => {
    const path = join(dir, 'elsewhere.journal');
    Journal.create(path, config, range).close();
    writeFileSync(`${path}.lock`, JSON.stringify({ pid: 1, host: `not-${hostname()}`, token: 't', since: '2020-01-01T00:00:00.000Z' }));
    expect(() => Journal.append(path)).toThrow(/in use by another coordinator \(pid 1 on not-/);
    rmSync(`${path}.lock`);
  });
});

describe('a journal write that fails', () => {
  it('is one JournalWriteError under ulimit -f (EFBIG), and the journal still reads to the last record written whole', async () => {
    const path = join(dir, 'efbig.journal');
    const run = child(`let written = 0;
const j = JOURNAL.Journal.create(${JSON.stringify(path)}, ${JSON.stringify(config)}, { min: 1, max: 1 });
const record = (i) => ({ k: 'member', rank: 0, workerId: 'worker-' + i + '-' + 'x'.repeat(100) });
let failure;
try { for (;;) { j.write(record(written + 1)); written++; } } catch (err) { failure = err; }
let again;
try { j.write(record(0)); } catch (err) { again = err; }
console.log(JSON.stringify({ written, name: failure.name, code: failure.code, path: failure.path, message: failure.message, cause: failure.cause?.code, sameAgain: again === failure }));
j.close();`, 8);
    const result = JSON.parse(await run.line) as Record<string, unknown>;
    await run.exited;
    expect(result).toMatchObject({ name: 'JournalWriteError', code: 'ERR_JOURNAL_WRITE', path, cause: 'EFBIG', sameAgain: true });
    expect(result.message).toBe(`journal ${path}: write failed: EFBIG: file too large`);
    const state = readJournal(path);
    expect(state.tornTail).toBeUndefined(); // cut back to the last whole record
    expect(state.members.get(0)).toMatch(new RegExp(`^worker-${result.written}-`));
  });

  it('leaves a journal that reads even when the partial line stays (it is a torn tail)', async () => {
    // The same failure, with the file left as the OS left it: no cut back after the failure.
    const path = join(dir, 'efbig-torn.journal');
    const run = child(`import { openSync, writeSync } from 'node:fs';
const j = JOURNAL.Journal.create(${JSON.stringify(path)}, ${JSON.stringify(config)}, { min: 1, max: 1 });
j.close();
const fd = openSync(${JSON.stringify(path)}, 'a');
let i = 0;
try { for (;;) writeSync(fd, JSON.stringify({ k: 'member', rank: 0, workerId: 'w' + i++ + 'x'.repeat(99) }) + '\\n'); } catch (err) { console.log(err.code); }`, 8);
    expect(await run.line).toBe('EFBIG');
    expect(readFileSync(path).at(-1)).not.toBe(0x0a); // the limit fell inside a line
    const state = readJournal(path);
    expect(state.tornTail).toBeDefined();
    const restarted = Journal.append(path); // cuts it
    restarted.close();
    expect(readJournal(path).tornTail).toBeUndefined();
  });

  const devFull = existsSync('/dev/full');
  it.skipIf(!devFull)('is one JournalWriteError when the disk is full at create (ENOSPC, /dev/full), and leaves no lock or temp file', () => {
    const path = join(dir, 'enospc-create.journal');
    symlinkSync('/dev/full', `${path}.tmp`); // the temp file create writes first is the full device
    const err = catchError(() => Journal.create(path, config, range));
    expect(err).toBeInstanceOf(JournalWriteError);
    expect(err).toMatchObject({ code: 'ERR_JOURNAL_WRITE', path, message: `journal ${path}: create failed: ENOSPC: no space left on device` });
    expect((err as Error).cause).toMatchObject({ code: 'ENOSPC' });
    expect(existsSync(`${path}.lock`)).toBe(false);
    expect(existsSync(`${path}.tmp`)).toBe(false);
    Journal.create(path, config, range).close(); // nothing stuck
  });

  it.skipIf(!devFull)('is one JournalWriteError when a compaction meets a full disk, and the journal is as it was', () => {
    const path = join(dir, 'enospc-compact.journal');
    const j = Journal.create(path, config, range);
    j.write(member(5));
    const before = readFileSync(path);
    symlinkSync('/dev/full', `${path}.tmp`);
    const err = catchError(() => j.compact(readJournal(path)));
    expect(err).toMatchObject({ name: 'JournalWriteError', code: 'ERR_JOURNAL_WRITE', message: `journal ${path}: compact failed: ENOSPC: no space left on device` });
    expect(readFileSync(path)).toEqual(before);
    j.write(member(6)); // the journal itself is whole and takes records
    j.close();
    expect(readJournal(path).members.get(0)).toBe('worker-6');
  });
});

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected it to throw');
}
