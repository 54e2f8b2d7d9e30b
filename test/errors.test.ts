/**
 * The product's errors: one root (DistSamplerError) with a stable `code`, a `name` equal to the
 * class name and a standard `cause`; every code the coordinator sends on the wire turned into
 * exactly one class by the worker's one table.
 */
import { ElasticNestedError } from '../worker/elastic.ts';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LaunchError } from '../bin/launcher.ts';
import { MalformedBridgedEventError } from '../bin/bridgedEvents.ts';
import { UsageError } from '../bin/usage.ts';
import { Overflow } from '../coordinator/collectiveReductions.ts';
import { JournalError, JournalLockedError, JournalPlanError, JournalWriteError } from '../coordinator/journalErrors.ts';
import { StoreFullError as StoreRestoreFullError, StoreSnapshotError } from '../coordinator/kvStore.ts';
import { CoordinatorConfigError } from '../coordinator/options.ts';
import {
  DistSamplerError,
  InvalidEpochError,
  InvalidLengthError,
  InvalidRankError,
  InvalidSeedError,
  InvalidWorldSizeError,
  PositionOutOfRangeError,
  UnknownEngineError,
} from '../shared/errors.ts';
import {
  AbortCodeSchema,
  CloseCode,
  CloseErrorCode,
  CloseErrorCodeSchema,
  CollectiveErrorCodeSchema,
  encode,
  parseServerMessage,
  ProtocolError,
  StoreErrorCodeSchema,
  UNLISTED_CLOSE_ERROR_CODE,
  type CloseCodeName,
  type ServerMessage,
} from '../shared/protocol.ts';
import { retryable } from '../worker/connection.ts';
import {
  DatasetClosedError,
  DatasetIndexError,
  DatasetLengthMismatchError,
  DatasetLengthRequiredError,
  DatasetModuleGetError,
  DatasetModuleFingerprintError,
  DatasetModuleLengthError,
  DatasetModuleLoadError,
  DatasetNotFoundError,
  JsonLinesBlankLineError,
  JsonLinesChangedError,
  JsonLinesParseError,
  UnsupportedDatasetError,
} from '../worker/datasets.ts';
import * as workerErrors from '../worker/errors.ts';
import { errorFromClose, errorFromFrame, WIRE_ERRORS, type ErrorFrame } from '../worker/errors.ts';
import { StepModuleEvalExportError, StepModuleExportError, StepModuleLoadError, StepModuleNotFoundError } from '../worker/stepModule.ts';
import { EvalBatchNotCurrentError, EvalPassWithoutConfigError, EvalResultCountError, EvalResultError, EvalResultNotSerializableError, EvalResultsMissingError, EvalResultsRepeatedError, EvalResultTooDeepError, EvalResultTooLargeError, NotAnEvalPassError } from '../worker/evalErrors.ts';
import {
  DataloaderOptionsError,
  LoaderBatchError,
  LoaderCloneError,
  LoaderInitError,
  LoaderLengthMismatchError,
  LoaderModuleExportError,
  LoaderModuleLoadError,
  LoaderModuleNotFoundError,
  LoaderNotTransferableError,
  LoaderThreadExitError,
} from '../worker/loaderErrors.ts';
import { MissingResultsError, ResultCountError, ResultNotSerializableError, ResultPartsError } from '../shared/resultMerge.ts';
import { CollectiveBadReplyError, CollectiveValueTooLargeError } from '../worker/transferErrors.ts';
import { OpenPcdetDropLastError, OpenPcdetEngineError, OpenPcdetPaddingError, OpenPcdetSeedError, ShortPartError, UnknownSamplerError, UnpaddedDropLastError } from '../shared/samplerErrors.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PRODUCT_DIRS = ['shared', 'coordinator', 'worker', 'bin'];
const BUILTIN_ERRORS = new Set(['Error', 'RangeError', 'TypeError', 'SyntaxError', 'AggregateError', 'EvalError', 'ReferenceError', 'URIError']);

interface ClassDecl {
  readonly file: string;
  readonly name: string;
  readonly parent: string;
  readonly exported: boolean;
}

function classesIn(sources: ReadonlyMap<string, string>): ClassDecl[] {
  const found: ClassDecl[] = [];
  for (const [file, text] of sources) {
    for (const m of text.matchAll(/^(export\s+)?(?:abstract\s+)?class\s+(\w+)\s+extends\s+(\w+)/gm)) {
      found.push({ file, name: m[2], parent: m[3], exported: m[1] !== undefined });
    }
  }
  return found;
}

/** Each class with its ancestors, nearest first, as far as the sources and the builtins go. */
function chainOf(c: ClassDecl, parentOf: ReadonlyMap<string, string>): string[] {
  const chain = [c.name];
  for (let at: string | undefined = c.parent; at !== undefined && !chain.includes(at); at = parentOf.get(at)) chain.push(at);
  return chain;
}

/** The classes that are errors: their chain ends at a builtin error. */
function errorClasses(sources: ReadonlyMap<string, string>): { decl: ClassDecl; chain: string[] }[] {
  const classes = classesIn(sources);
  const parentOf = new Map(classes.map((c) => [c.name, c.parent]));
  return classes.map((decl) => ({ decl, chain: chainOf(decl, parentOf) })).filter(({ chain }) => BUILTIN_ERRORS.has(chain[chain.length - 1]));
}

/** Error classes that do not descend from DistSamplerError, or that set their own `name`. */
function errorClassProblems(sources: ReadonlyMap<string, string>): string[] {
  const problems = errorClasses(sources)
    .filter(({ decl, chain }) => decl.name !== 'DistSamplerError' && !chain.includes('DistSamplerError'))
    .map(({ decl, chain }) => `${decl.file}: ${chain.join(' -> ')}`);
  for (const [file, text] of sources) {
    if (file !== 'shared/errors.ts' && /this\.name\s*=/.test(text)) problems.push(`${file}: sets this.name (DistSamplerError names every class after itself)`);
  }
  return problems;
}

function productSources(): Map<string, string> {
  const sources = new Map<string, string>();
  for (const dir of PRODUCT_DIRS) {
    for (const entry of readdirSync(join(ROOT, dir), { recursive: true, encoding: 'utf8' })) {
      if (entry.endsWith('.ts')) sources.set(`${dir}/${entry}`, readFileSync(join(ROOT, dir, entry), 'utf8'));
    }
  }
  return sources;
}

/** One instance of every exported error class, built as the product builds it. */
const INSTANCES: readonly DistSamplerError[] = [
  new EvalResultError('ERR_EVAL_RESULT_SOMETHING', 'm', 0, -1),
  new EvalResultCountError(1, -1, 3, 4),
  new EvalResultNotSerializableError(1, -1, 7, 'a BigInt'),
  new EvalResultTooLargeError(1, -1, 7, 70_000),
  new EvalResultTooDeepError(1, -1, 7, 2000),
  new EvalResultsMissingError(1, -1, [4, 5]),
  new NotAnEvalPassError(3),
  new EvalBatchNotCurrentError(1, -1),
  new EvalResultsRepeatedError(1, -1),
  new EvalPassWithoutConfigError(-1),
  new StepModuleEvalExportError('p', 'evalStep of type number'),
  new DistSamplerError('ERR_SOMETHING', 'something'),
  new InvalidRankError(3, 2),
  new InvalidWorldSizeError(0),
  new InvalidLengthError(-1),
  new InvalidSeedError('x'),
  new InvalidEpochError(1.5),
  new UnknownEngineError('nope', ['torch']),
  new PositionOutOfRangeError('offset', 9, 3),
  new ProtocolError(CloseCode.RankTaken, 'rank 0 is taken'),
  new CoordinatorConfigError('heartbeatMs out of bounds'),
  new Overflow('sum overflowed'),
  new JournalError('j:1: not a journal record'),
  new JournalLockedError('j', { pid: 1, host: 'h', token: 't', since: 's' }),
  new JournalWriteError('j', 'write', new Error('EFBIG: file too large')),
  new JournalPlanError('finished'),
  new StoreRestoreFullError(3, 2),
  new StoreSnapshotError('k'),
  new DatasetNotFoundError('p', 'dataset'),
  new UnsupportedDatasetError('p'),
  new DatasetLengthRequiredError(),
  new DatasetLengthMismatchError('d', 1, 2),
  new DatasetIndexError(5, 2),
  new DatasetClosedError('d'),
  new JsonLinesParseError('f', 1, 'bad'),
  new JsonLinesBlankLineError('f', 1),
  new JsonLinesChangedError('f', 1),
  new DatasetModuleLoadError('p', new Error('x')),
  new DatasetModuleFingerprintError('p', 'a number'),
  new DatasetModuleLengthError('p', 'none'),
  new DatasetModuleGetError('p', 'undefined'),
  new StepModuleNotFoundError('p'),
  new StepModuleLoadError('p', new Error('x')),
  new StepModuleExportError('p', 'undefined'),
  new LaunchError('no coordinator'),
  new MalformedBridgedEventError('bad'),
  new UsageError('--x: bad'),
  new workerErrors.InitError('ERR_INIT_SOMETHING', 'init'),
  new workerErrors.InitEnvError('env'),
  new workerErrors.InitMethodError('method'),
  new workerErrors.InitOptionsError('options'),
  new workerErrors.InitTimeoutError('timeout'),
  new workerErrors.UnauthorizedError('401'),
  new workerErrors.InitHttpError('500'),
  new workerErrors.InitConnectError('refused'),
  new workerErrors.InitProtocolError('no welcome'),
  new workerErrors.InitTlsError('self-signed certificate'),
  new workerErrors.GroupAbortedError('why'),
  new workerErrors.RendezvousTimeoutError('why'),
  new workerErrors.CollectiveError('ERR_COLLECTIVE_SOMETHING', 'm', 0),
  new workerErrors.CollectiveTimeoutError('m', 0, [1]),
  new workerErrors.CollectiveMismatchError('m', 0),
  new workerErrors.CollectiveInvalidError('m', 0),
  new workerErrors.CollectiveMemberLostError('m', 0, [1]),
  new workerErrors.GroupChangedError('m', 0, [1], { fromGeneration: 0, generation: 1, worldSize: 3, rank: 1, reason: 'rank 2 died' }),
  new ElasticNestedError(),
  new workerErrors.CollectiveDuplicateError('m', 0),
  new workerErrors.CollectiveNotMemberError('m', 0),
  new workerErrors.CollectiveTooLargeError('m', 0),
  new workerErrors.CollectiveClosedError('m', 0),
  new workerErrors.CollectiveNoReplyError('m', 0),
  new workerErrors.StoreError('ERR_STORE_SOMETHING', 'm', 0),
  new workerErrors.StoreTimeoutError('m', 0),
  new workerErrors.StoreNotANumberError('m', 0),
  new workerErrors.StoreOverflowError('m', 0),
  new workerErrors.StoreFullError('m', 0),
  new workerErrors.StoreTooManyWaitersError('m', 0),
  new workerErrors.StoreInvalidError('m', 0),
  new workerErrors.StoreClosedError('m', 0),
  new workerErrors.StoreNoReplyError('m', 0),
  new workerErrors.StoreBadReplyError('m', 0),
  new workerErrors.RunFinishedError('r'),
  new workerErrors.MalformedFrameError('r'),
  new workerErrors.VersionMismatchError('r'),
  new workerErrors.RankTakenError('r'),
  new workerErrors.GroupFullError('r'),
  new workerErrors.ConfigMismatchError('r'),
  new workerErrors.ForeignAckError('r'),
  new workerErrors.OutOfOrderError('r'),
  new workerErrors.FrameTooLargeError('r'),
  new workerErrors.HeartbeatTimeoutError('r'),
  new workerErrors.CoordinatorShutdownError('r'),
  new workerErrors.HelloTimeoutError('r'),
  new workerErrors.ConnectionLostError(1006, 'gone'),
  new workerErrors.EpochNotConsumedError(0),
  new workerErrors.UnexpectedFrameError('welcome'),
  new workerErrors.PermutationThreadError(1),
  new workerErrors.StepFailedNotCurrentError(1, -1, 'stale'),
  new UnknownSamplerError('numpy', ['torch', 'openpcdet']),
  new OpenPcdetPaddingError(1, 3, 3),
  new OpenPcdetSeedError(5),
  new OpenPcdetDropLastError(),
  new OpenPcdetEngineError('feistel'),
  new UnpaddedDropLastError(),
  new ShortPartError(1, 1, 2),
  new DataloaderOptionsError('bad'),
  new LoaderNotTransferableError('collate', 'pass a module path'),
  new LoaderModuleNotFoundError('dataset', '/x.ts', 'no such file'),
  new LoaderModuleLoadError('dataset', '/x.ts', new Error('boom')),
  new LoaderModuleExportError('collate', '/x.ts', 'collate', 'a function', 'undefined'),
  new LoaderBatchError(3, 7, 1, new Error('boom')),
  new LoaderInitError(0, new Error('boom')),
  new LoaderThreadExitError(1, 'exit code 1'),
  new LoaderCloneError('a function'),
  new LoaderLengthMismatchError(10, 12),
  new ResultCountError(1, 3, 4),
  new ResultNotSerializableError(2, 'a BigInt'),
  new MissingResultsError([3, 4], 10),
  new ResultPartsError('two parts for rank 1'),
  new CollectiveValueTooLargeError('too large', 3, 300_000_000),
  new CollectiveBadReplyError('not JSON', 4),
];

describe('one error root', () => {
  it('every error class in the product descends from DistSamplerError and none names itself', () => {
    expect(errorClassProblems(productSources())).toEqual([]);
  });

  it('the scan catches a class outside the root, even through an intermediate', () => {
    const planted = new Map([
      ['worker/a.ts', 'export class Good extends DistSamplerError {}\nexport class Bad extends Error {}\nclass Worse extends Bad {}\n'],
      ['bin/b.ts', 'export class Named extends DistSamplerError {\n  constructor() { super("ERR_X", "x"); this.name = "Other"; }\n}\n'],
    ]);
    expect(errorClassProblems(planted)).toEqual(['worker/a.ts: Bad -> Error', 'worker/a.ts: Worse -> Bad -> Error', 'bin/b.ts: sets this.name (DistSamplerError names every class after itself)']);
  });

  it('every exported error class is listed here, so each is checked below', () => {
    const exported = errorClasses(productSources())
      .filter(({ decl }) => decl.exported)
      .map(({ decl }) => decl.name);
    expect(INSTANCES.map((e) => e.constructor.name).sort()).toEqual(exported.sort());
  });

  it.each(INSTANCES.map((e) => [e.constructor.name, e] as const))('%s is a DistSamplerError with a stable code and its own name', (name, error) => {
    expect(error).toBeInstanceOf(DistSamplerError);
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe(name);
    expect(error.code).toMatch(/^ERR_[A-Z0-9_]+$/);
    expect(String(error)).toBe(`${name}: ${error.message}`);
  });

  it('carries a cause as Error does, and only when given one', () => {
    const cause = new Error('EFBIG: file too large');
    expect(new DistSamplerError('ERR_X', 'x', { cause }).cause).toBe(cause);
    expect('cause' in new DistSamplerError('ERR_X', 'x')).toBe(false);
    expect(new JournalWriteError('j', 'write', cause).cause).toBe(cause);
    expect(new DatasetModuleLoadError('p', cause).cause).toBe(cause);
    expect(new StepModuleLoadError('p', cause).cause).toBe(cause);
    expect(new workerErrors.InitConnectError('refused', { cause }).cause).toBe(cause);
    expect(new UsageError('bad', { cause }).cause).toBe(cause);
    expect(new LaunchError('no', { cause }).cause).toBe(cause);
  });
});

const FAMILIES = {
  abort: AbortCodeSchema.options,
  collectiveError: CollectiveErrorCodeSchema.options,
  storeError: StoreErrorCodeSchema.options,
  close: CloseErrorCodeSchema.options,
} as const;

/** The frame that carries `code`, parsed as a worker parses it. */
function frameFor(family: 'abort' | 'collectiveError' | 'storeError', code: string): ErrorFrame {
  const raw =
    family === 'abort'
      ? { t: 'abort', reason: 'why', code }
      : family === 'collectiveError'
        ? { t: 'collectiveError', seq: 4, code, message: 'failed', missing: [1] }
        : { t: 'storeError', req: 7, code, message: 'failed' };
  const parsed = parseServerMessage(JSON.stringify(raw));
  if (!parsed.ok) throw new Error(parsed.reason);
  return parsed.message as ErrorFrame;
}

describe('wire error codes', () => {
  it.each(Object.keys(FAMILIES) as (keyof typeof FAMILIES)[])('%s: the table has exactly the enum codes, each its own class', (family) => {
    const table: Readonly<Record<string, unknown>> = WIRE_ERRORS[family];
    expect(Object.keys(table).sort()).toEqual([...FAMILIES[family]].sort());
    expect(new Set(Object.values(table)).size).toBe(FAMILIES[family].length);
  });

  it('a code maps to the same class wherever it arrives (an abort frame or its close)', () => {
    const classOf = new Map<string, unknown>();
    for (const family of Object.keys(FAMILIES) as (keyof typeof FAMILIES)[]) {
      for (const [code, cls] of Object.entries(WIRE_ERRORS[family])) {
        expect(classOf.get(code) ?? cls, code).toBe(cls);
        classOf.set(code, cls);
      }
    }
  });

  it.each(
    (['abort', 'collectiveError', 'storeError'] as const).flatMap((family) => FAMILIES[family].map((code) => [family, code] as const)),
  )('a %s frame with %s becomes its class, with that code', (family, code) => {
    const error = errorFromFrame(frameFor(family, code));
    const table: Readonly<Record<string, new (...args: never[]) => DistSamplerError>> = WIRE_ERRORS[family];
    expect(error).toBeInstanceOf(table[code]);
    expect(error.constructor).toBe(table[code]);
    expect(error).toBeInstanceOf(DistSamplerError);
    expect(error.code).toBe(code);
    expect(error.name).toBe(table[code].name);
  });

  it('keeps what each frame says: the reason, the message, the seq and missing ranks, the req', () => {
    expect(errorFromFrame(frameFor('abort', 'ERR_ABORTED')).message).toBe('the group was aborted: why');
    expect(errorFromFrame(frameFor('abort', 'ERR_RENDEZVOUS_TIMEOUT'))).toBeInstanceOf(workerErrors.GroupAbortedError);
    expect(errorFromFrame(frameFor('collectiveError', 'ERR_COLLECTIVE_MEMBER_LOST'))).toMatchObject({ message: 'failed', seq: 4, missing: [1] });
    expect(errorFromFrame(frameFor('storeError', 'ERR_STORE_FULL'))).toMatchObject({ message: 'failed', req: 7 });
  });

  it('frames with a code outside their enum are refused', () => {
    expect(parseServerMessage(encode({ t: 'abort', reason: 'x', code: 'ERR_NOPE' } as unknown as ServerMessage)).ok).toBe(false);
    expect(parseServerMessage(JSON.stringify({ t: 'collectiveError', seq: 0, code: 'ERR_STORE_FULL', message: 'm', missing: [] })).ok).toBe(false);
    expect(parseServerMessage(JSON.stringify({ t: 'storeError', req: 0, code: 'ERR_COLLECTIVE_CLOSED', message: 'm' })).ok).toBe(false);
  });

  it.each(Object.keys(CloseCode) as CloseCodeName[])('a close with %s becomes its class, with its code', (name) => {
    const error = errorFromClose(CloseCode[name], 'the reason');
    const cls = WIRE_ERRORS.close[CloseErrorCode[name]];
    expect(error.constructor).toBe(cls);
    expect(error.code).toBe(CloseErrorCode[name]);
    expect(error.message).toContain('the reason');
    if (error instanceof ProtocolError) expect(error.closeCode).toBe(CloseCode[name]);
    expect(retryable(error)).toBe(false);
  });

  it('a refusal keeps its words, and a close outside CloseCode is a plain, retryable ProtocolError', () => {
    expect(errorFromClose(CloseCode.RankTaken, 'rank 0 is taken').message).toBe('the coordinator refused this worker (4002 RankTaken): rank 0 is taken');
    expect(errorFromClose(CloseCode.GroupFull, '').message).toBe('the coordinator refused this worker (4003 GroupFull): no reason given');
    const dropped = errorFromClose(1006, '');
    expect(dropped.constructor).toBe(ProtocolError);
    expect(dropped).toMatchObject({ name: 'ProtocolError', code: UNLISTED_CLOSE_ERROR_CODE, closeCode: 1006 });
    expect(retryable(dropped)).toBe(true);
  });
});
