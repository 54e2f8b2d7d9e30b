/**
 * The WebAssembly forward randperm (shared/randpermWasm.ts) against the JavaScript one and
 * PyTorch's golden vectors; the JavaScript fallback where WebAssembly is missing or refuses the
 * module; and the little binary encoder the module is written with.
 */
import { afterEach, describe, expect, test, vi } from 'vitest';
import { MT19937 } from '../shared/mt19937.ts';
import { randperm, randpermForThisThread, randpermForward, WASM_FROM } from '../shared/randperm.ts';
import { randpermForwardWasm, randpermModuleBytes } from '../shared/randpermWasm.ts';
import { sleb, uleb } from '../shared/wasmEncoder.ts';
import { goldenRandperm } from './support/goldenRandperm.ts';
import { testRng } from './support/testRng.ts';


/** The WebAssembly global as these tests use it (not declared by this project's TypeScript libraries). */
interface WasmGlobal {
  readonly Module: unknown;
  readonly Instance: unknown;
  validate(bytes: Uint8Array): boolean;
}
const realWasm = (globalThis as { WebAssembly?: WasmGlobal }).WebAssembly;

function wasmOrFail(n: number, rng: MT19937): Uint32Array {
  const table = randpermForwardWasm(n, rng);
  if (table === null) throw new Error('WebAssembly unavailable in this runtime');
  return table;
}

/** Index of the first difference, -1 when equal (a full toEqual on millions of entries is slow). */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return k;
  return -1;
}

/** The next `count` draws: the generator's state after a randperm, compared whole. */
function draws(rng: MT19937, count: number): number[] {
  return Array.from({ length: count }, () => rng.nextUint32());
}

describe('randpermForwardWasm', () => {
  test('reproduces PyTorch\'s golden randperm vectors', () => {
    for (const vector of goldenRandperm) expect(Array.from(wasmOrFail(vector.n, new MT19937(vector.seed))), `n=${vector.n}`).toEqual(vector.perm);
  });

  test('equals the JavaScript forward branch around every boundary (batch 256, chunk 2^16, MT block 624), and leaves the generator in the same state', () => {
    const rand = testRng(11);
    const sizes = [0, 1, 2, 3, 7, 8, 9, 255, 256, 257, 623, 624, 625, 1249, 65535, 65536, 65537, 65536 * 2 + 300, 1_000_003];
    for (const n of sizes) {
      const seed = Math.floor(rand() * 2 ** 32);
      const [ours, theirs] = [new MT19937(seed), new MT19937(seed)];
      const table = wasmOrFail(n, ours);
      expect(table.length).toBe(n);
      expect(firstDifference(table, randpermForward(n, theirs, new Uint32Array(n))), `n=${n} seed=${seed}`).toBe(-1);
      expect(draws(ours, 1300), `generator after n=${n}`).toEqual(draws(theirs, 1300));
    }
  });

  test('continues a generator already partway through its block, as the JavaScript one does', () => {
    const [ours, theirs] = [new MT19937(5), new MT19937(5)];
    expect(draws(ours, 1000)).toEqual(draws(theirs, 1000));
    const n = 70_001;
    expect(firstDifference(wasmOrFail(n, ours), randpermForward(n, theirs, new Uint32Array(n)))).toBe(-1);
    expect(draws(ours, 700)).toEqual(draws(theirs, 700));
  });

  test('each table is its own: a second derivation does not disturb the first', () => {
    const first = wasmOrFail(100_000, new MT19937(1));
    const copy = first.slice();
    wasmOrFail(100_000, new MT19937(2));
    expect(firstDifference(first, copy)).toBe(-1);
  });
});

describe('randpermForThisThread', () => {
  test('gives randperm()\'s table on both sides of WASM_FROM', () => {
    for (const n of [WASM_FROM - 1, WASM_FROM, 3 * WASM_FROM + 5]) {
      expect(firstDifference(randpermForThisThread(n, new MT19937(n)), randperm(n, new MT19937(n))), `n=${n}`).toBe(-1);
    }
  });

  test('runs the forward branch in WebAssembly from WASM_FROM on (the table is a view into module memory)', () => {
    const table = randpermForThisThread(WASM_FROM, new MT19937(3));
    expect(table.byteOffset).toBeGreaterThan(0);
    expect(randpermForThisThread(WASM_FROM - 1, new MT19937(3)).byteOffset).toBe(0);
  });
});

describe('the JavaScript fallback', () => {
  afterEach(() => {
    vi.unstubAllGlobals();
    vi.resetModules();
  });

  /** shared/randperm.ts imported afresh, so its module compiles (or fails to) under the stub. */
  async function freshRandperm(): Promise<typeof import('../shared/randperm.ts') & typeof import('../shared/randpermWasm.ts')> {
    vi.resetModules();
    return { ...(await import('../shared/randperm.ts')), ...(await import('../shared/randpermWasm.ts')) };
  }

  test('without WebAssembly (as under node --jitless): randpermForwardWasm says so, randpermForThisThread gives the same table in JavaScript', async () => {
    vi.stubGlobal('WebAssembly', undefined);
    const fresh = await freshRandperm();
    const n = WASM_FROM + 77;
    expect(fresh.randpermForwardWasm(n, new MT19937(8))).toBeNull();
    const table = fresh.randpermForThisThread(n, new MT19937(8));
    expect(table.byteOffset).toBe(0);
    expect(firstDifference(table, randperm(n, new MT19937(8)))).toBe(-1);
  });

  test('when WebAssembly refuses the module or the memory', async () => {
    const refusing = {
      Module: class {
        constructor() {
          throw new Error('CompileError');
        }
      },
    };
    vi.stubGlobal('WebAssembly', refusing);
    let fresh = await freshRandperm();
    expect(fresh.randpermForwardWasm(WASM_FROM, new MT19937(4))).toBeNull();
    expect(firstDifference(fresh.randpermForThisThread(WASM_FROM, new MT19937(4)), randperm(WASM_FROM, new MT19937(4)))).toBe(-1);

    vi.unstubAllGlobals();
    let memoriesAsked = 0;
    vi.stubGlobal('WebAssembly', {
      Module: realWasm?.Module,
      Instance: realWasm?.Instance,
      Memory: class {
        constructor() {
          memoriesAsked++;
          throw new RangeError('could not allocate memory');
        }
      },
    });
    fresh = await freshRandperm();
    expect(fresh.randpermForwardWasm(WASM_FROM, new MT19937(4))).toBeNull();
    // The module compiled; the memory is what failed.
    expect(memoriesAsked).toBe(1);
    expect(firstDifference(fresh.randpermForThisThread(WASM_FROM, new MT19937(4)), randperm(WASM_FROM, new MT19937(4)))).toBe(-1);
  });
});

describe('wasmEncoder', () => {
  test('LEB128 as the WebAssembly spec writes it', () => {
    expect(uleb(0)).toEqual([0]);
    expect(uleb(127)).toEqual([0x7f]);
    expect(uleb(128)).toEqual([0x80, 0x01]);
    expect(uleb(624)).toEqual([0xf0, 0x04]);
    expect(uleb(0xffffffff)).toEqual([0xff, 0xff, 0xff, 0xff, 0x0f]);
    expect(sleb(0)).toEqual([0]);
    expect(sleb(63)).toEqual([0x3f]);
    expect(sleb(64)).toEqual([0xc0, 0x00]);
    expect(sleb(-1)).toEqual([0x7f]);
    expect(sleb(-64)).toEqual([0x40]);
    expect(sleb(-65)).toEqual([0xbf, 0x7f]);
    expect(sleb(0x9908b0df | 0)).toEqual([0xdf, 0xe1, 0xa2, 0xc8, 0x79]);
  });

  test('the randperm module is valid WebAssembly', () => {
    expect(realWasm?.validate(randpermModuleBytes())).toBe(true);
  });
});
