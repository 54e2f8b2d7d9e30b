/**
 * Datasets a worker reads samples from: a batch's samples are `await dataset.get(index)` for its
 * indices. Three kinds: a synthetic range, a JSON Lines file with random access through an offset
 * index, and a user module (TypeScript or JavaScript) exporting `length` and `get`.
 *
 * This is the imperative shell (files, dynamic imports); the sampler never sees a dataset, only
 * its length.
 */
import { createHash } from 'node:crypto';
import { readSync } from 'node:fs';
import { stat, open, type FileHandle } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { TextDecoder } from 'node:util';
import { DistSamplerError } from '../shared/errors.ts';
import { MAX_FINGERPRINT_CHARS, type DatasetIdentity } from '../shared/protocol.ts';
import { assertLength } from '../shared/sampler.ts';
import { loaderForUserModule } from '../shared/runtimeLoader.ts';

export interface Dataset<T = unknown> {
  /** Number of samples; indices are [0, length). */
  readonly length: number;
  get(index: number): T | Promise<T>;
  close?(): Promise<void> | void;
  /** One line for logs and reports, e.g. `jsonl /data/train.jsonl (1000 lines)`. */
  readonly description: string;
  /**
   * What the data is, so a worker that loaded other data than its coordinator is refused (4004):
   * `sha256:<hex>` of a JSON Lines file's bytes, a module's exported `fingerprint`, `range` for the
   * synthetic range (whose length the coordinator checks). Absent: only the length is checked.
   */
  readonly fingerprint?: string;
}

/** The synthetic range's fingerprint: any length (the length is checked on its own). */
export const RANGE_FINGERPRINT = 'range';

/** What a hello (or the coordinator's config) says of the synthetic range: only its length identifies it. */
export const RANGE_IDENTITY: DatasetIdentity = { fingerprint: RANGE_FINGERPRINT, description: RANGE_FINGERPRINT };

/**
 * What a hello (or a coordinator's config) says of a dataset: its fingerprint, and its description
 * with file names for paths (a refusal's close reason holds 123 bytes). Undefined without a fingerprint.
 */
export function datasetIdentity(dataset: Dataset): DatasetIdentity | undefined {
  if (dataset.fingerprint === undefined) return undefined;
  const description = dataset.description.replace(/\S*\/([^/\s]+)/g, '$1').slice(0, 200);
  return { fingerprint: dataset.fingerprint, description };
}

// ---------------------------------------------------------------------------------------------
// Errors: one class per condition, each with a stable `code`.

export class DatasetNotFoundError extends DistSamplerError {
  readonly path: string;
  constructor(path: string, what: string, detail = 'no such file') {
    super('ERR_DATASET_NOT_FOUND', `${what} not found: ${path} (${detail})`);
    this.path = path;
  }
}

export class UnsupportedDatasetError extends DistSamplerError {
  constructor(path: string) {
    super(
      'ERR_DATASET_UNSUPPORTED',
      `Unsupported dataset ${path}: expected a JSON Lines file (${JSONL_EXTENSIONS.join(', ')}) ` +
        `or a module exporting length and get (${MODULE_EXTENSIONS.join(', ')})`,
    );
  }
}

export class DatasetLengthRequiredError extends DistSamplerError {
  constructor() {
    super('ERR_DATASET_LENGTH_REQUIRED', 'A dataset length is required when no dataset file is given');
  }
}

export class DatasetLengthMismatchError extends DistSamplerError {
  constructor(description: string, expected: number, actual: number) {
    super(
      'ERR_DATASET_LENGTH_MISMATCH',
      `Dataset length mismatch: expected ${expected} samples but ${description} has ${actual}`,
    );
  }
}

export class DatasetIndexError extends DistSamplerError {
  constructor(index: unknown, length: number) {
    super(
      'ERR_DATASET_INDEX',
      `Dataset index ${String(index)} is out of range: it should be an integer in [0, ${length})`,
    );
  }
}

export class DatasetClosedError extends DistSamplerError {
  constructor(description: string) {
    super('ERR_DATASET_CLOSED', `Dataset is closed: ${description}`);
  }
}

/** A line that is not valid JSON (or not valid UTF-8); names the file and the 1-based line. */
export class JsonLinesParseError extends DistSamplerError {
  readonly file: string;
  readonly line: number;
  constructor(file: string, line: number, detail: string) {
    super('ERR_JSONL_PARSE', `${file}:${line}: line ${line} is not valid JSON (${detail})`);
    this.file = file;
    this.line = line;
  }
}

/** A blank line before the last non-blank line; trailing blank lines are ignored. */
export class JsonLinesBlankLineError extends DistSamplerError {
  readonly file: string;
  readonly line: number;
  constructor(file: string, line: number) {
    super(
      'ERR_JSONL_BLANK_LINE',
      `${file}:${line}: line ${line} is blank; blank lines are only allowed at the end of a JSON Lines file`,
    );
    this.file = file;
    this.line = line;
  }
}

/** The file shrank after it was indexed. */
export class JsonLinesChangedError extends DistSamplerError {
  constructor(file: string, line: number) {
    super('ERR_JSONL_CHANGED', `${file}:${line}: the file changed after it was indexed (short read)`);
  }
}

export class DatasetModuleLoadError extends DistSamplerError {
  constructor(path: string, cause: unknown) {
    super('ERR_DATASET_MODULE_LOAD', `Could not load dataset module ${path}: ${errorMessage(cause)}`, { cause });
  }
}

/** A dataset module's `fingerprint` export is not a short non-empty string. */
export class DatasetModuleFingerprintError extends DistSamplerError {
  constructor(path: string, found: string) {
    super('ERR_DATASET_MODULE_FINGERPRINT', `Dataset module ${path} exports a fingerprint that is not a string of 1 to ${MAX_FINGERPRINT_CHARS} characters (found ${found})`);
  }
}

export class DatasetModuleLengthError extends DistSamplerError {
  constructor(path: string, detail: string) {
    super(
      'ERR_DATASET_MODULE_LENGTH',
      `Dataset module ${path} has no valid length: ${detail}; export \`length\` as a non-negative safe ` +
        'integer or a (possibly async) function returning one',
    );
  }
}

export class DatasetModuleGetError extends DistSamplerError {
  constructor(path: string, found: string) {
    super(
      'ERR_DATASET_MODULE_GET',
      `Dataset module ${path} does not export a get(index) function (found ${found}); ` +
        'export `get` and `length` as named exports or on a default export object',
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Range dataset.

/** Synthetic dataset: sample i is i. */
export function rangeDataset(length: number): Dataset<number> {
  const n = assertLength(length);
  return {
    length: n,
    description: `range(${n})`,
    fingerprint: RANGE_FINGERPRINT,
    get(index: number): number {
      checkIndex(index, n);
      return index;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// JSON Lines.

export const JSONL_EXTENSIONS: readonly string[] = ['.jsonl', '.ndjson'];
export const MODULE_EXTENSIONS: readonly string[] = ['.ts', '.mts', '.js', '.mjs'];

export interface JsonLinesOptions {
  /** Bytes read per chunk while indexing; default 1 MiB. Small values exist for tests. */
  readonly chunkSize?: number;
}

const DEFAULT_CHUNK_SIZE = 1 << 20;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const TAB = 0x09;

/**
 * A JSON Lines file with random access. `open` streams the file once and records where each line
 * starts; `get(i)` then reads exactly that line's bytes at its position and parses them.
 *
 * Index layout: `bounds[i]` is the byte offset where line i starts, for i < length, and line i
 * ends (exclusive, before its '\n') at `bounds[i + 1] - 1`. `bounds[length]` is a sentinel: one
 * past the last line's '\n', or fileSize + 1 when the last line has no newline. This works
 * because blank lines are only allowed after the last line, so lines are contiguous.
 */
export class JsonLinesDataset implements Dataset<unknown> {
  readonly path: string;
  readonly length: number;
  readonly description: string;
  /** `sha256:<hex>` of the file's bytes, taken while its lines were indexed. */
  readonly fingerprint: string;
  readonly #handle: FileHandle;
  readonly #bounds: Float64Array;
  readonly #decoder = new TextDecoder('utf-8', { fatal: true });
  #closed = false;

  private constructor(path: string, handle: FileHandle, bounds: Float64Array, length: number, sha256: string) {
    this.path = path;
    this.fingerprint = `sha256:${sha256}`;
    this.#handle = handle;
    this.#bounds = bounds;
    this.length = length;
    this.description = `jsonl ${path} (${length} lines)`;
  }

  static async open(path: string, options: JsonLinesOptions = {}): Promise<JsonLinesDataset> {
    const abs = resolve(path);
    const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) {
      throw new RangeError(`chunkSize should be a positive integer, got ${chunkSize}`);
    }
    let handle: FileHandle;
    try {
      handle = await open(abs, 'r');
    } catch (error) {
      throw notFoundOr(error, abs, 'JSON Lines dataset');
    }
    try {
      // open() succeeds on a directory on Linux; only regular files are datasets.
      if (!(await handle.stat()).isFile()) throw new DatasetNotFoundError(abs, 'JSON Lines dataset', 'not a file');
      const { bounds, length, sha256 } = await indexLines(handle, abs, chunkSize);
      return new JsonLinesDataset(abs, handle, bounds, length, sha256);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /** Byte range [start, end) of line `index`, without its line terminator (CR stripped later). */
  lineRange(index: number): { readonly start: number; readonly end: number } {
    checkIndex(index, this.length);
    return { start: this.#bounds[index], end: this.#bounds[index + 1] - 1 };
  }

  async get(index: number): Promise<unknown> {
    if (this.#closed) throw new DatasetClosedError(this.description);
    const { start, end } = this.lineRange(index);
    const line = index + 1;
    const size = end - start;
    const buffer = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      const bytesRead = readSync(this.#handle.fd, buffer, filled, size - filled, start + filled);
      if (bytesRead === 0) throw new JsonLinesChangedError(this.path, line);
      filled += bytesRead;
    }
    const contentEnd = size > 0 && buffer[size - 1] === CR ? size - 1 : size;
    let text: string;
    try {
      text = this.#decoder.decode(buffer.subarray(0, contentEnd));
    } catch {
      throw new JsonLinesParseError(this.path, line, 'invalid UTF-8');
    }
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      throw new JsonLinesParseError(this.path, line, errorMessage(error));
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#handle.close();
  }
}

/** A Float64Array that doubles when full: 8 bytes per line, no boxed numbers. */
class OffsetList {
  #data = new Float64Array(1024);
  #size = 0;

  get size(): number {
    return this.#size;
  }

  push(value: number): void {
    if (this.#size === this.#data.length) {
      const next = new Float64Array(this.#data.length * 2);
      next.set(this.#data);
      this.#data = next;
    }
    this.#data[this.#size++] = value;
  }

  /** The filled prefix (a view; no copy). */
  view(): Float64Array {
    return this.#data.subarray(0, this.#size);
  }
}

async function indexLines(
  handle: FileHandle,
  path: string,
  chunkSize: number,
): Promise<{ bounds: Float64Array; length: number; sha256: string }> {
  const bounds = new OffsetList();
  // The file is read once: its digest comes with the index (the dataset's fingerprint).
  const hash = createHash('sha256');
  const chunk = Buffer.allocUnsafe(chunkSize);
  let position = 0; // file offset of chunk[0]
  let lineStart = 0; // file offset where the current physical line starts
  let lineNumber = 1; // 1-based physical line number of the current line
  let lineHasContent = false; // any byte other than JSON whitespace seen on the current line
  let firstBlankLine = 0; // first blank line not yet followed by a non-blank one (0: none)
  let sentinel = 0; // one past the '\n' of the last non-blank line

  const endLine = (terminatorOffset: number): void => {
    if (lineHasContent) {
      if (firstBlankLine !== 0) throw new JsonLinesBlankLineError(path, firstBlankLine);
      bounds.push(lineStart);
      sentinel = terminatorOffset + 1;
    } else if (firstBlankLine === 0) {
      firstBlankLine = lineNumber;
    }
    lineNumber += 1;
    lineStart = terminatorOffset + 1;
    lineHasContent = false;
  };

  for (;;) {
    const { bytesRead } = await handle.read(chunk, 0, chunkSize, position);
    if (bytesRead === 0) break;
    hash.update(chunk.subarray(0, bytesRead));
    let i = 0;
    while (i < bytesRead) {
      let newline = chunk.indexOf(LF, i);
      if (newline >= bytesRead) newline = -1; // stale bytes past this read
      const segmentEnd = newline === -1 ? bytesRead : newline;
      if (!lineHasContent) {
        // Usually stops at the first byte ('{', '[', '"', ...); whitespace-only lines scan fully.
        for (let j = i; j < segmentEnd; j++) {
          const byte = chunk[j];
          if (byte !== SPACE && byte !== TAB && byte !== CR) {
            lineHasContent = true;
            break;
          }
        }
      }
      if (newline === -1) break;
      endLine(position + newline);
      i = newline + 1;
    }
    position += bytesRead;
  }

  // The final segment after the last '\n' (empty when the file ends with a newline).
  if (lineHasContent) {
    if (firstBlankLine !== 0) throw new JsonLinesBlankLineError(path, firstBlankLine);
    bounds.push(lineStart);
    sentinel = position + 1;
  }
  const length = bounds.size;
  bounds.push(sentinel);
  return { bounds: bounds.view(), length, sha256: hash.digest('hex') };
}

// ---------------------------------------------------------------------------------------------
// User modules.

/** Error constructors for the two ways importing a user module can fail. */
export interface ModuleImportErrors {
  notFound(path: string, detail: string): Error;
  load(path: string, cause: unknown): Error;
}

/**
 * Resolves `path` against the working directory, checks it is a file, and imports it. Under tsx
 * (or vitest) a `.ts` file imports directly; compiled, through the project's tsx (registered once,
 * shared/runtimeLoader.ts), and without it fails to load saying so. Returns the module namespace.
 */
export async function importUserModule(
  path: string,
  errors: ModuleImportErrors,
): Promise<{ readonly abs: string; readonly namespace: Record<string, unknown> }> {
  const abs = resolve(path);
  let isFile: boolean;
  try {
    isFile = (await stat(abs)).isFile();
  } catch (error) {
    const code = isObjectLike(error) ? error.code : undefined;
    throw errors.notFound(abs, code === 'ENOENT' || code === 'ENOTDIR' ? 'no such file' : errorMessage(error));
  }
  if (!isFile) throw errors.notFound(abs, 'not a file');
  let namespace: Record<string, unknown>;
  try {
    await loaderForUserModule(abs, [dirname(abs), process.cwd()]);
    namespace = (await import(pathToFileURL(abs).href)) as Record<string, unknown>;
  } catch (error) {
    throw errors.load(abs, error);
  }
  return { abs, namespace };
}

type Method = (this: unknown, ...args: unknown[]) => unknown;

function isObjectLike(value: unknown): value is Record<string, unknown> {
  return (typeof value === 'object' && value !== null) || typeof value === 'function';
}

/**
 * Imports a module exporting `length` (a number, or a function returning one, possibly async) and
 * `get(i)` (sync or async), as named exports or on a default export object. `close()` is used
 * when present. `length` is read once, here.
 */
export async function loadDatasetModule(path: string): Promise<Dataset> {
  const { abs, namespace } = await importUserModule(path, {
    notFound: (p, detail) => new DatasetNotFoundError(p, 'Dataset module', detail),
    load: (p, cause) => new DatasetModuleLoadError(p, cause),
  });

  // Named exports win when present; otherwise a default export object. A default export that is a
  // function is not accepted: its `length` would be its arity.
  const fallback = namespace.default;
  const useDefault =
    !('get' in namespace) && !('length' in namespace) && typeof fallback === 'object' && fallback !== null;
  const source = (useDefault ? fallback : namespace) as Record<string, unknown>;
  if (typeof source.get !== 'function') {
    const found =
      source.get !== undefined
        ? `get of type ${typeof source.get}`
        : typeof fallback === 'function' && !useDefault
          ? 'a default export function, not an object'
          : `exports: ${Object.keys(source).join(', ') || 'none'}`;
    throw new DatasetModuleGetError(abs, found);
  }
  const get = source.get as Method;
  const close = typeof source.close === 'function' ? (source.close as Method) : undefined;
  const thisArg: unknown = source === namespace ? undefined : source;

  let length: unknown = source.length;
  if (length === undefined) throw new DatasetModuleLengthError(abs, 'length is missing');
  if (typeof length === 'function') {
    try {
      length = await (length as Method).call(thisArg);
    } catch (error) {
      throw new DatasetModuleLengthError(abs, `length() threw: ${errorMessage(error)}`);
    }
    if (!isLength(length)) throw new DatasetModuleLengthError(abs, `length() returned ${describe(length)}`);
  } else if (!isLength(length)) {
    throw new DatasetModuleLengthError(abs, `length is ${describe(length)}`);
  }
  const n = length;
  const description = `module ${abs} (${n} samples)`;
  const fingerprint = source.fingerprint;
  if (fingerprint !== undefined && (typeof fingerprint !== 'string' || fingerprint.length === 0 || fingerprint.length > MAX_FINGERPRINT_CHARS)) {
    throw new DatasetModuleFingerprintError(abs, describe(fingerprint));
  }

  const dataset: Dataset = {
    length: n,
    description,
    ...(fingerprint === undefined ? {} : { fingerprint }),
    get(index: number): unknown {
      checkIndex(index, n);
      return get.call(thisArg, index);
    },
  };
  if (close !== undefined) {
    return {
      ...dataset,
      async close(): Promise<void> {
        await close.call(thisArg);
      },
    };
  }
  return dataset;
}

// ---------------------------------------------------------------------------------------------
// Dispatch.

export interface DatasetSpec {
  /** Required without `dataset`; with one, checked against the dataset's own length. */
  readonly length?: number;
  /** A .jsonl/.ndjson file, or a .ts/.mts/.js/.mjs module. */
  readonly dataset?: string;
}

export async function openDataset(spec: DatasetSpec): Promise<Dataset> {
  if (spec.dataset === undefined) {
    if (spec.length === undefined) throw new DatasetLengthRequiredError();
    return rangeDataset(spec.length);
  }
  const ext = extname(spec.dataset).toLowerCase();
  let dataset: Dataset;
  if (JSONL_EXTENSIONS.includes(ext)) dataset = await JsonLinesDataset.open(spec.dataset);
  else if (MODULE_EXTENSIONS.includes(ext)) dataset = await loadDatasetModule(spec.dataset);
  else throw new UnsupportedDatasetError(spec.dataset);

  if (spec.length !== undefined && spec.length !== dataset.length) {
    await dataset.close?.();
    throw new DatasetLengthMismatchError(dataset.description, spec.length, dataset.length);
  }
  return dataset;
}

// ---------------------------------------------------------------------------------------------
// Helpers.

function checkIndex(index: number, length: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= length) throw new DatasetIndexError(index, length);
}

function isLength(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value === null) return 'null';
  return typeof value;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function notFoundOr(error: unknown, path: string, what: string): Error {
  const code = isObjectLike(error) ? error.code : undefined;
  if (code === 'ENOENT' || code === 'ENOTDIR') return new DatasetNotFoundError(path, what);
  if (code === 'EISDIR') return new DatasetNotFoundError(path, what, 'not a file');
  return error instanceof Error ? error : new Error(String(error));
}
