/**
 * torch.randperm's forward branch (n < RANDPERM_FORWARD_LIMIT) in WebAssembly: MT19937 and the
 * Fisher-Yates swaps, the same draws and swaps as shared/randperm.ts's randpermForward.
 *
 * Why WebAssembly (bench `shard`, issue 14): the permutation is derived once per epoch, often in a
 * fresh process, where the JavaScript loop starts in V8's interpreter and baseline tiers; and its
 * floating-point modulo and bounds-checked typed arrays keep even the optimised loop well behind
 * C (the first shard of a fresh process took about 2x the C reference's time at N = 1e7). This
 * module compiles in a millisecond or two; V8's baseline wasm code runs the first chunks and the
 * optimised code, compiled in the background, the rest (hence the chunked calls below). Its
 * batched swaps (see shuffleBody) keep many cache misses in flight, which the plain C loop does
 * not, so it ends up faster than the C reference. The same trick gained nothing in JavaScript.
 *
 * The module is written instruction by instruction with shared/wasmEncoder.ts: no wasm toolchain
 * is needed to build or check it. Memory layout (bytes):
 *   [0, 2496)        MT19937 state, 624 words
 *   [2496, 2500)     index of the next state word to temper (624: twist first)
 *   [2500, 2504)     what the touches read (kept so they are not optimised away)
 *   [4096, 5120)     the current batch's targets, byte offsets into the table
 *   [8192, 8192 + 4n) the table r[0, n), then a few words of slack
 */
import { MT19937, MT_STATE_WORDS } from './mt19937.ts';
import { encodeModule, FunctionBody, Op } from './wasmEncoder.ts';

const STATE_AT = 0;
const INDEX_AT = MT_STATE_WORDS * 4;
const TARGETS_AT = 4096;
const TABLE_AT = 8192;
/** Swaps whose targets are drawn (and their cache lines fetched) before any of them is made. */
const BATCH = 256;
const PAGE_BYTES = 65536;
/** wasm32 addresses: 2^16 pages of 64 KiB. */
const MAX_PAGES = 65536;

// MT19937's twist, as in shared/mt19937.ts.
const MT_M = 397;
const UPPER = 0x80000000 | 0;
const LOWER = 0x7fffffff;
const MATRIX_A = 0x9908b0df | 0;

/** Swaps per call into the module: small enough that optimised code takes over early, large enough that calls cost nothing. */
const CHUNK = 1 << 16;

// Function indices, in encodeModule's order.
const FN_TWIST = 0;

/** twist(): the next block of 624 state words, in place. */
function twistBody(): FunctionBody {
  const [i, y, next, ahead] = [0, 1, 2, 3];
  const f = new FunctionBody(4);
  f.i32(0).set(i);
  f.loop();
  // next = (i + 1) mod 624; ahead = (i + 397) mod 624, without a division
  f.get(i).i32(1).emit(Op.i32Add).tee(next).i32(0).get(next).i32(MT_STATE_WORDS).emit(Op.i32Ne, Op.select).set(next);
  f.get(i).i32(MT_M).emit(Op.i32Add).tee(ahead).i32(MT_STATE_WORDS).emit(Op.i32Sub).get(ahead).get(ahead).i32(MT_STATE_WORDS).emit(Op.i32GeU, Op.select).set(ahead);
  // y = (mt[i] & UPPER) | (mt[next] & LOWER)
  f.get(i).i32(2).emit(Op.i32Shl).load(STATE_AT).i32(UPPER).emit(Op.i32And);
  f.get(next).i32(2).emit(Op.i32Shl).load(STATE_AT).i32(LOWER).emit(Op.i32And);
  f.emit(Op.i32Or).set(y);
  // mt[i] = mt[ahead] ^ (y >>> 1) ^ (-(y & 1) & MATRIX_A)
  f.get(i).i32(2).emit(Op.i32Shl);
  f.get(ahead).i32(2).emit(Op.i32Shl).load(STATE_AT);
  f.get(y).i32(1).emit(Op.i32ShrU, Op.i32Xor);
  f.i32(0).get(y).i32(1).emit(Op.i32And, Op.i32Sub).i32(MATRIX_A).emit(Op.i32And, Op.i32Xor);
  f.store(STATE_AT);
  f.get(i).i32(1).emit(Op.i32Add).tee(i).i32(MT_STATE_WORDS).emit(Op.i32LtU).brIf(0);
  f.end();
  return f;
}

/** Words iota writes per loop turn: Liftoff (the first code to run) pays its loop overhead once per turn. */
const IOTA_UNROLL = 8;

/**
 * iota(from, to): r[k] = k for k in [from, to), IOTA_UNROLL words at a time: the last turn may
 * write up to IOTA_UNROLL - 1 words past `to`, with the values they will hold anyway (or into
 * the slack past the table).
 */
function iotaBody(): FunctionBody {
  const [k, to, at] = [0, 1, 2];
  const f = new FunctionBody(1);
  f.block();
  f.get(k).get(to).emit(Op.i32GeU).brIf(0);
  f.loop();
  f.get(k).i32(2).emit(Op.i32Shl).set(at);
  for (let j = 0; j < IOTA_UNROLL; j++) f.get(at).get(k).i32(j).emit(Op.i32Add).store(TABLE_AT + 4 * j);
  f.get(k).i32(IOTA_UNROLL).emit(Op.i32Add).tee(k).get(to).emit(Op.i32LtU).brIf(0);
  f.end();
  f.end();
  return f;
}

/**
 * shuffle(n, from, to): for i in [from, to): z = next() % (n - i); swap r[i], r[i + z].
 * At large n the cost is cache misses on r[i + z], one per swap, and the CPU overlaps only as
 * many as its reorder buffer holds instructions for. So each batch runs in three passes: draw
 * every target; load each target's word in a loop of a few instructions (many misses in flight,
 * as a prefetch would have them: WebAssembly has no prefetch); then make the swaps, in order,
 * from cache.
 */
function shuffleBody(): FunctionBody {
  const [n, i, to] = [0, 1, 2];
  const [index, y, k, at, other, saved, end, touched, targetsEnd] = [3, 4, 5, 6, 7, 8, 9, 10, 11];
  const f = new FunctionBody(9);
  f.i32(INDEX_AT).load().set(index);
  f.block();
  f.get(i).get(to).emit(Op.i32GeU).brIf(0);
  f.loop(); // batches
  // end = min(i + BATCH, to)
  f.get(i).i32(BATCH).emit(Op.i32Add).tee(end).get(to).get(end).get(to).emit(Op.i32LtU, Op.select).set(end);

  // 1. targets[k - i] = 4 * (k + next() % (n - k)), a byte offset into the table
  f.get(i).set(k);
  f.loop();
  f.get(index).i32(MT_STATE_WORDS).emit(Op.i32GeU).if().call(FN_TWIST).i32(0).set(index).end();
  f.get(index).i32(2).emit(Op.i32Shl).load(STATE_AT).set(y);
  f.get(index).i32(1).emit(Op.i32Add).set(index);
  f.get(y).get(y).i32(11).emit(Op.i32ShrU, Op.i32Xor).set(y);
  f.get(y).get(y).i32(7).emit(Op.i32Shl).i32(0x9d2c5680 | 0).emit(Op.i32And, Op.i32Xor).set(y);
  f.get(y).get(y).i32(15).emit(Op.i32Shl).i32(0xefc60000 | 0).emit(Op.i32And, Op.i32Xor).set(y);
  f.get(y).get(y).i32(18).emit(Op.i32ShrU, Op.i32Xor).set(y);
  f.get(k).get(i).emit(Op.i32Sub).i32(2).emit(Op.i32Shl);
  f.get(y).get(n).get(k).emit(Op.i32Sub, Op.i32RemU).get(k).emit(Op.i32Add).i32(2).emit(Op.i32Shl);
  f.store(TARGETS_AT);
  f.get(k).i32(1).emit(Op.i32Add).tee(k).get(end).emit(Op.i32LtU).brIf(0);
  f.end();

  // 2. touch every target's word (k: a byte offset into targets, the loop as short as it gets)
  f.i32(0).set(k);
  f.get(end).get(i).emit(Op.i32Sub).i32(2).emit(Op.i32Shl).set(targetsEnd);
  f.loop();
  f.get(touched).get(k).load(TARGETS_AT).load(TABLE_AT).emit(Op.i32Xor).set(touched);
  f.get(k).i32(4).emit(Op.i32Add).tee(k).get(targetsEnd).emit(Op.i32LtU).brIf(0);
  f.end();

  // 3. swap r[k], r[target], in order
  f.get(i).set(k);
  f.loop();
  f.get(k).get(i).emit(Op.i32Sub).i32(2).emit(Op.i32Shl).load(TARGETS_AT).set(other);
  f.get(k).i32(2).emit(Op.i32Shl).tee(at).load(TABLE_AT).set(saved);
  f.get(at).get(other).load(TABLE_AT).store(TABLE_AT);
  f.get(other).get(saved).store(TABLE_AT);
  f.get(k).i32(1).emit(Op.i32Add).tee(k).get(end).emit(Op.i32LtU).brIf(0);
  f.end();

  f.get(end).tee(i).get(to).emit(Op.i32LtU).brIf(0);
  f.end();
  f.end();
  f.i32(INDEX_AT).get(index).store();
  // The touches exist for their cache misses: storing what they read keeps them from being optimised away.
  f.i32(INDEX_AT + 4).get(touched).store();
  return f;
}

/** The module's bytes (under a kilobyte), built on first use. */
export function randpermModuleBytes(): Uint8Array {
  return encodeModule([
    { params: 0, body: twistBody() },
    { exportName: 'iota', params: 2, body: iotaBody() },
    { exportName: 'shuffle', params: 3, body: shuffleBody() },
  ]);
}

/**
 * The part of the WebAssembly JavaScript API used here: this project's TypeScript libraries
 * (ES2022 and Node's) do not declare it, and the global may be missing (node --jitless).
 */
interface WasmApi {
  readonly Module: new (bytes: Uint8Array) => WasmModule;
  readonly Memory: new (descriptor: { initial: number; maximum: number }) => { readonly buffer: ArrayBuffer };
  readonly Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => { readonly exports: Record<string, unknown> };
}
type WasmModule = object;

interface RandpermExports {
  iota(from: number, to: number): void;
  shuffle(n: number, from: number, to: number): void;
}

function isRandpermExports(exports: Record<string, unknown>): exports is Record<string, unknown> & RandpermExports {
  return typeof exports.iota === 'function' && typeof exports.shuffle === 'function';
}

interface CompiledRandperm {
  readonly api: WasmApi;
  readonly module: WasmModule;
}

let compiled: CompiledRandperm | null | undefined;

/** The module, compiled on first use (about a millisecond), or null where WebAssembly is missing or refuses it. */
function compiledRandperm(): CompiledRandperm | null {
  if (compiled === undefined) {
    const api = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
    try {
      compiled = api ? { api, module: new api.Module(randpermModuleBytes()) } : null;
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

function pagesFor(n: number): number {
  return Math.ceil((TABLE_AT + 4 * (n + IOTA_UNROLL)) / PAGE_BYTES);
}

/**
 * torch.randperm(n)'s forward branch (n < RANDPERM_FORWARD_LIMIT), continuing `rng`'s stream and
 * leaving it advanced as randpermForward does. The table is a view into the module's own memory:
 * its buffer cannot be transferred to another thread. Returns null where WebAssembly is missing
 * or the memory cannot be had; the caller then runs the JavaScript version.
 */
export function randpermForwardWasm(n: number, rng: MT19937): Uint32Array | null {
  const wasm = compiledRandperm();
  if (wasm === null || pagesFor(n) > MAX_PAGES) return null;
  let memory: { readonly buffer: ArrayBuffer };
  let exports: RandpermExports;
  try {
    // One memory per table, never grown: the view returned below stays valid.
    memory = new wasm.api.Memory({ initial: pagesFor(n), maximum: pagesFor(n) });
    const instance = new wasm.api.Instance(wasm.module, { env: { memory } });
    if (!isRandpermExports(instance.exports)) return null;
    exports = instance.exports;
  } catch {
    return null;
  }
  const state = new Uint32Array(memory.buffer, STATE_AT, MT_STATE_WORDS + 1);
  state[MT_STATE_WORDS] = rng.saveState(state);
  // In chunks: the optimised code, compiled in the background, runs the later ones.
  for (let from = 0; from < n; from += CHUNK) exports.iota(from, Math.min(n, from + CHUNK));
  for (let from = 0; from < n - 1; from += CHUNK) exports.shuffle(n, from, Math.min(n - 1, from + CHUNK));
  rng.restoreState(state, state[MT_STATE_WORDS]);
  return new Uint32Array(memory.buffer, TABLE_AT, n);
}
