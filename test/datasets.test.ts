import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidLengthError } from '../shared/errors.ts';
import {
  DatasetIndexError,
  DatasetLengthMismatchError,
  DatasetLengthRequiredError,
  DatasetModuleGetError,
  DatasetModuleLengthError,
  DatasetModuleLoadError,
  DatasetNotFoundError,
  JsonLinesBlankLineError,
  JsonLinesDataset,
  JsonLinesParseError,
  loadDatasetModule,
  openDataset,
  rangeDataset,
  UnsupportedDatasetError,
  type Dataset,
} from '../worker/datasets.ts';
import {
  loadStepModule,
  noopStep,
  StepModuleExportError,
  StepModuleLoadError,
  StepModuleNotFoundError,
  type Batch,
  type StepContext,
} from '../worker/stepModule.ts';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'datasets');
const fixture = (name: string): string => join(fixtures, name);

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'distsampler-datasets-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let fileCounter = 0;
async function writeTemp(content: string | Buffer, ext = '.jsonl'): Promise<string> {
  fileCounter += 1;
  const path = join(dir, `file-${fileCounter}${ext}`);
  await writeFile(path, content);
  return path;
}

/** Opens, runs `body`, and always closes. */
async function withJsonl<R>(
  path: string,
  body: (dataset: JsonLinesDataset) => Promise<R>,
  chunkSize?: number,
): Promise<R> {
  const dataset = await JsonLinesDataset.open(path, chunkSize === undefined ? {} : { chunkSize });
  try {
    return await body(dataset);
  } finally {
    await dataset.close();
  }
}

async function readAll(dataset: Dataset): Promise<unknown[]> {
  const out: unknown[] = [];
  for (let i = 0; i < dataset.length; i++) out.push(await dataset.get(i));
  return out;
}

/** Deterministic shuffle (LCG) so failures reproduce. */
function shuffled(n: number, seed: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  let state = seed >>> 0;
  for (let i = n - 1; i > 0; i--) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const j = state % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof Error) return error;
    throw new Error(`rejected with a non-Error: ${String(error)}`, { cause: error });
  }
  throw new Error('expected a rejection');
}

describe('rangeDataset', () => {
  it('range dataset: sample i is i, with a description and index checks', async () => {
    const dataset = rangeDataset(5);
    expect(dataset.length).toBe(5);
    expect(dataset.description).toBe('range(5)');
    expect(await readAll(dataset)).toEqual([0, 1, 2, 3, 4]);
    expect(() => dataset.get(5)).toThrow(DatasetIndexError);
    expect(() => dataset.get(-1)).toThrow(DatasetIndexError);
    expect(() => dataset.get(1.5)).toThrow(DatasetIndexError);
    expect(rangeDataset(0).length).toBe(0);
  });

  it('range dataset rejects a length that is not a non-negative safe integer', () => {
    expect(() => rangeDataset(-1)).toThrow(InvalidLengthError);
    expect(() => rangeDataset(2.5)).toThrow(InvalidLengthError);
    expect(() => rangeDataset(Number.MAX_SAFE_INTEGER + 1)).toThrow(InvalidLengthError);
  });
});

describe('JsonLinesDataset', () => {
  const records: unknown[] = [
    { id: 0, text: 'hello' },
    [1, 2, 3],
    'a plain string',
    42,
    null,
    { nested: { deep: [true, false] }, empty: '' },
    { id: 6, text: 'with \\n escaped newline and "quotes"' },
    -0.5,
  ];
  const body = records.map((r) => JSON.stringify(r)).join('\n') + '\n';

  it('reads every line in random order, matching the lines written', async () => {
    const path = await writeTemp(body);
    await withJsonl(path, async (dataset) => {
      expect(dataset.length).toBe(records.length);
      expect(dataset.description).toBe(`jsonl ${path} (${records.length} lines)`);
      for (const i of shuffled(records.length, 7)) expect(await dataset.get(i)).toEqual(records[i]);
      // Concurrent positional reads on one handle.
      const all = await Promise.all(shuffled(records.length, 11).map(async (i) => [i, await dataset.get(i)] as const));
      for (const [i, value] of all) expect(value).toEqual(records[i]);
    });
  });

  it('indexes correctly whatever the chunk size (lines and terminators split across chunks)', async () => {
    const path = await writeTemp(body.replaceAll('\n', '\r\n'));
    for (const chunkSize of [1, 2, 3, 7, 64]) {
      await withJsonl(path, async (dataset) => expect(await readAll(dataset)).toEqual(records), chunkSize);
    }
  });

  it('handles CRLF line endings', async () => {
    const path = await writeTemp('{"a":1}\r\n{"b":"two"}\r\n[3]\r\n');
    await withJsonl(path, async (dataset) => {
      expect(dataset.length).toBe(3);
      expect(await dataset.get(1)).toEqual({ b: 'two' });
      expect(await readAll(dataset)).toEqual([{ a: 1 }, { b: 'two' }, [3]]);
    });
  });

  it('handles UTF-8 multibyte content, also split across chunk boundaries', async () => {
    const lines = [{ t: 'héllo wörld' }, { t: '日本語のテキスト' }, { t: 'emoji 🎉🧪 and ZWJ 👩‍💻' }, 'ß∑Ω'];
    const path = await writeTemp(lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    for (const chunkSize of [1, 5, 1 << 20]) {
      await withJsonl(
        path,
        async (dataset) => {
          expect(dataset.length).toBe(lines.length);
          for (const i of shuffled(lines.length, 3)) expect(await dataset.get(i)).toEqual(lines[i]);
        },
        chunkSize,
      );
    }
  });

  it('reads a file without a trailing newline, including its last line', async () => {
    const path = await writeTemp('{"a":1}\n{"b":2}');
    await withJsonl(path, async (dataset) => {
      expect(dataset.length).toBe(2);
      expect(await dataset.get(1)).toEqual({ b: 2 });
      expect(await dataset.get(0)).toEqual({ a: 1 });
    });
    const crlf = await writeTemp('{"a":1}\r\n{"b":2}');
    await withJsonl(crlf, async (dataset) => expect(await readAll(dataset)).toEqual([{ a: 1 }, { b: 2 }]));
    const single = await writeTemp('"only"');
    await withJsonl(single, async (dataset) => expect(await readAll(dataset)).toEqual(['only']));
  });

  it('skips trailing empty lines and treats an empty file as zero lines', async () => {
    const trailing = await writeTemp('1\n2\n\n\r\n  \n');
    await withJsonl(trailing, async (dataset) => expect(await readAll(dataset)).toEqual([1, 2]));
    const empty = await writeTemp('');
    await withJsonl(empty, async (dataset) => expect(dataset.length).toBe(0));
  });

  it('a bad line throws an error naming the file and its 1-based line number', async () => {
    const path = await writeTemp('{"ok":1}\n{"ok":2}\n{not json}\n{"ok":4}\n');
    await withJsonl(path, async (dataset) => {
      expect(dataset.length).toBe(4);
      expect(await dataset.get(3)).toEqual({ ok: 4 }); // other lines still readable
      const error = await rejection(Promise.resolve(dataset.get(2)));
      expect(error).toBeInstanceOf(JsonLinesParseError);
      expect(error).toMatchObject({ code: 'ERR_JSONL_PARSE', name: 'JsonLinesParseError', file: path, line: 3 });
      expect(error.message).toContain(`${path}:3`);
      expect(error.message).toContain('line 3');
    });
  });

  it('a line that is not valid UTF-8 is a parse error naming its line', async () => {
    const path = await writeTemp(Buffer.concat([Buffer.from('"a"\n"'), Buffer.from([0xff, 0xfe]), Buffer.from('"\n')]));
    await withJsonl(path, async (dataset) => {
      const error = await rejection(Promise.resolve(dataset.get(1)));
      expect(error).toMatchObject({ code: 'ERR_JSONL_PARSE', line: 2 });
      expect(error.message).toContain('invalid UTF-8');
    });
  });

  it('a blank line in the middle is rejected at open, naming the line', async () => {
    for (const [content, line] of [
      ['1\n2\n\n3\n', 3],
      ['1\r\n\r\n2\r\n', 2],
      ['\n1\n', 1],
      ['1\n   \t\n2', 2],
    ] as const) {
      const path = await writeTemp(content);
      const error = await rejection(JsonLinesDataset.open(path));
      expect(error).toBeInstanceOf(JsonLinesBlankLineError);
      expect(error).toMatchObject({ code: 'ERR_JSONL_BLANK_LINE', name: 'JsonLinesBlankLineError', file: path, line });
      expect(error.message).toContain(`line ${line}`);
    }
  });

  it('a missing file or a directory is a not-found error', async () => {
    const missing = join(dir, 'does-not-exist.jsonl');
    const error = await rejection(JsonLinesDataset.open(missing));
    expect(error).toBeInstanceOf(DatasetNotFoundError);
    expect(error).toMatchObject({ code: 'ERR_DATASET_NOT_FOUND', path: missing });
    const folder = join(dir, 'folder.jsonl');
    await mkdir(folder);
    expect(await rejection(JsonLinesDataset.open(folder))).toMatchObject({ code: 'ERR_DATASET_NOT_FOUND' });
  });

  it('rejects out-of-range indices and reads after close', async () => {
    const path = await writeTemp('1\n2\n');
    const dataset = await JsonLinesDataset.open(path);
    await expect(dataset.get(2)).rejects.toBeInstanceOf(DatasetIndexError);
    await expect(dataset.get(-1)).rejects.toBeInstanceOf(DatasetIndexError);
    await dataset.close();
    await dataset.close(); // idempotent
    await expect(dataset.get(0)).rejects.toMatchObject({ code: 'ERR_DATASET_CLOSED' });
  });

  it('indexes a 100k-line file and reads it at random positions', async () => {
    const n = 100_000;
    const line = (i: number): string => JSON.stringify({ i, name: `row-${i}`, tags: ['é', i % 7], v: i * 0.25 });
    const parts: string[] = [];
    for (let i = 0; i < n; i++) parts.push(line(i));
    const path = await writeTemp(parts.join('\n') + '\n');

    const dataset = await JsonLinesDataset.open(path);
    try {
      expect(dataset.length).toBe(n);
      const picks = shuffled(n, 12345).slice(0, 2_000);
      const values = await Promise.all(picks.map((i) => dataset.get(i)));
      picks.forEach((i, k) => expect(values[k]).toEqual(JSON.parse(line(i))));
      expect(await dataset.get(0)).toEqual(JSON.parse(line(0)));
      expect(await dataset.get(n - 1)).toEqual(JSON.parse(line(n - 1)));
    } finally {
      await dataset.close();
    }
  });
});

describe('dataset modules', () => {
  it('a .ts dataset module with named exports (numeric length, sync get)', async () => {
    const dataset = await loadDatasetModule(fixture('namedDataset.ts'));
    expect(dataset.length).toBe(5);
    expect(dataset.description).toBe(`module ${fixture('namedDataset.ts')} (5 samples)`);
    expect(await dataset.get(3)).toEqual({ index: 3, square: 9 });
    expect(dataset.close).toBeUndefined();
    expect(() => dataset.get(5)).toThrow(DatasetIndexError);
  });

  it('a .ts dataset module with a default export object (async length, async get using this, close)', async () => {
    const dataset = await loadDatasetModule(fixture('defaultDataset.ts'));
    expect(dataset.length).toBe(3);
    expect(await readAll(dataset)).toEqual(['item-0', 'item-1', 'item-2']);
    const key = Symbol.for('distsampler.test.datasetClosed');
    const store = globalThis as { [key: symbol]: unknown };
    const before = typeof store[key] === 'number' ? store[key] : 0;
    await dataset.close?.();
    expect(store[key]).toBe(before + 1);
  });

  it('a .mjs dataset module with length as a function', async () => {
    const dataset = await loadDatasetModule(fixture('jsDataset.mjs'));
    expect(dataset.length).toBe(4);
    expect(await dataset.get(2)).toBe('js-2');
  });

  it('a missing dataset module is a not-found error', async () => {
    const path = fixture('nope.ts');
    const error = await rejection(loadDatasetModule(path));
    expect(error).toBeInstanceOf(DatasetNotFoundError);
    expect(error).toMatchObject({ code: 'ERR_DATASET_NOT_FOUND', name: 'DatasetNotFoundError', path });
    expect(error.message).toContain(path);
  });

  it('a dataset module that throws on import is a load error carrying the cause', async () => {
    const error = await rejection(loadDatasetModule(fixture('throwingModule.ts')));
    expect(error).toBeInstanceOf(DatasetModuleLoadError);
    expect(error).toMatchObject({ code: 'ERR_DATASET_MODULE_LOAD', name: 'DatasetModuleLoadError' });
    expect(error.message).toContain('fixture exploded at import');
    expect(error.cause).toBeInstanceOf(Error);
  });

  it('a dataset module without a valid length is rejected (missing, negative, non-integer from a function)', async () => {
    for (const [name, detail] of [
      ['noLengthDataset.ts', 'length is missing'],
      ['badLengthDataset.ts', 'length is -1'],
      ['badLengthFnDataset.ts', 'length() returned 2.5'],
    ] as const) {
      const error = await rejection(loadDatasetModule(fixture(name)));
      expect(error).toBeInstanceOf(DatasetModuleLengthError);
      expect(error).toMatchObject({ code: 'ERR_DATASET_MODULE_LENGTH', name: 'DatasetModuleLengthError' });
      expect(error.message).toContain(detail);
      expect(error.message).toContain(name);
    }
  });

  it('a dataset module without get is rejected', async () => {
    const error = await rejection(loadDatasetModule(fixture('noGetDataset.ts')));
    expect(error).toBeInstanceOf(DatasetModuleGetError);
    expect(error).toMatchObject({ code: 'ERR_DATASET_MODULE_GET', name: 'DatasetModuleGetError' });
    expect(error.message).toContain('length');
  });
});

describe('openDataset', () => {
  it('no dataset gives a range dataset of the given length; no length either is an error', async () => {
    const dataset = await openDataset({ length: 3 });
    expect(dataset.description).toBe('range(3)');
    expect(await readAll(dataset)).toEqual([0, 1, 2]);
    const error = await rejection(openDataset({}));
    expect(error).toBeInstanceOf(DatasetLengthRequiredError);
    expect(error).toMatchObject({ code: 'ERR_DATASET_LENGTH_REQUIRED' });
  });

  it('dispatches .jsonl and .ndjson to JsonLinesDataset and .ts/.mjs to modules', async () => {
    for (const ext of ['.jsonl', '.ndjson', '.JSONL']) {
      const path = await writeTemp('{"x":1}\n{"x":2}\n', ext);
      const dataset = await openDataset({ dataset: path });
      expect(dataset).toBeInstanceOf(JsonLinesDataset);
      expect(await dataset.get(1)).toEqual({ x: 2 });
      await dataset.close?.();
    }
    const module = await openDataset({ dataset: fixture('namedDataset.ts'), length: 5 });
    expect(module.length).toBe(5);
    expect((await openDataset({ dataset: fixture('jsDataset.mjs') })).length).toBe(4);
  });

  it('an unknown extension is an error listing what is accepted', async () => {
    const error = await rejection(openDataset({ dataset: 'data.csv', length: 3 }));
    expect(error).toBeInstanceOf(UnsupportedDatasetError);
    expect(error).toMatchObject({ code: 'ERR_DATASET_UNSUPPORTED' });
    for (const ext of ['.jsonl', '.ndjson', '.ts', '.mts', '.js', '.mjs']) expect(error.message).toContain(ext);
  });

  it('a given length that differs from the dataset length is an error', async () => {
    const error = await rejection(openDataset({ dataset: fixture('namedDataset.ts'), length: 6 }));
    expect(error).toBeInstanceOf(DatasetLengthMismatchError);
    expect(error.message).toContain('expected 6 samples');
  });
});

describe('step modules', () => {
  const key = Symbol.for('distsampler.test.stepCalls');
  const store = globalThis as { [key]?: string[] };
  const batch: Batch = { epoch: 2, positions: [1, 5], indices: [7, 3], samples: ['a', 'b'] };
  const ctx: StepContext = { rank: 1, worldSize: 4, epoch: 2 };

  it('noopStep does nothing', async () => {
    await expect(Promise.resolve(noopStep(batch, ctx))).resolves.toBeUndefined();
  });

  it('loads a named step export', async () => {
    store[key] = [];
    const step = await loadStepModule(fixture('namedStep.ts'));
    await step(batch, ctx);
    expect(store[key]).toEqual(['named:1/4:2:7,3']);
  });

  it('loads a default-export step function (async)', async () => {
    store[key] = [];
    const step = await loadStepModule(fixture('defaultStep.ts'));
    await step(batch, ctx);
    expect(store[key]).toEqual(['default:1:2']);
  });

  it('loads a default export object with a step method, bound to the object', async () => {
    store[key] = [];
    const step = await loadStepModule(fixture('defaultObjectStep.ts'));
    await step(batch, ctx);
    expect(store[key]).toEqual(['object:2:1,5']);
  });

  it('a missing step module is a not-found error', async () => {
    const path = fixture('missingStep.ts');
    const error = await rejection(loadStepModule(path));
    expect(error).toBeInstanceOf(StepModuleNotFoundError);
    expect(error).toMatchObject({ code: 'ERR_STEP_MODULE_NOT_FOUND', name: 'StepModuleNotFoundError', path });
  });

  it('a step module that throws on import is a load error', async () => {
    const error = await rejection(loadStepModule(fixture('throwingModule.ts')));
    expect(error).toBeInstanceOf(StepModuleLoadError);
    expect(error).toMatchObject({ code: 'ERR_STEP_MODULE_LOAD', name: 'StepModuleLoadError' });
  });

  it('a module without step, or with a step that is not a function, is rejected', async () => {
    for (const [name, found] of [
      ['noStep.ts', 'notAStep'],
      ['badStep.ts', 'step of type string'],
    ] as const) {
      const error = await rejection(loadStepModule(fixture(name)));
      expect(error).toBeInstanceOf(StepModuleExportError);
      expect(error).toMatchObject({ code: 'ERR_STEP_MODULE_NO_STEP', name: 'StepModuleExportError' });
      expect(error.message).toContain(found);
    }
  });
});
