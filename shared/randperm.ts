/**
 * torch.randperm(n, generator=g) on CPU, bit for bit (aten/src/ATen/native/TensorFactories.cpp).
 */
import { MT19937 } from './mt19937.ts';
import { randpermForwardWasm } from './randpermWasm.ts';

/** Below this, torch keeps the old forward Fisher-Yates with 32-bit draws. */
export const RANDPERM_FORWARD_LIMIT = Math.floor(0xffffffff / 20); // 214748364

export type IndexTable = Uint32Array | Float64Array;

/** A typed array able to hold every index of [0, n). */
export function allocateIndexTable(n: number): IndexTable {
  return n <= 0x1_0000_0000 ? new Uint32Array(n) : new Float64Array(n);
}

/**
 * torch.randperm(n) into `out` (by default a new table owning its buffer, which can be
 * transferred to another thread), in JavaScript.
 */
export function randperm(n: number, rng: MT19937, out: IndexTable = allocateIndexTable(n)): IndexTable {
  return n < RANDPERM_FORWARD_LIMIT ? randpermForward(n, rng, out) : randpermInsideOut(n, rng, out);
}

/** From this n on the forward branch runs in WebAssembly: below, a fresh memory per table costs more than it saves. */
export const WASM_FROM = 1 << 16;

/**
 * torch.randperm(n), the same table as randperm(), as fast as this runtime allows: the forward
 * branch in WebAssembly (shared/randpermWasm.ts says why: about 2x faster than this file's
 * JavaScript in a fresh process), JavaScript where WebAssembly is missing, for small n and for the
 * inside-out branch. The table may be a view into WebAssembly memory, whose buffer cannot be
 * transferred: for a table to post to another thread, use randperm().
 */
export function randpermForThisThread(n: number, rng: MT19937): IndexTable {
  const table = n >= WASM_FROM && n < RANDPERM_FORWARD_LIMIT ? randpermForwardWasm(n, rng) : null;
  return table ?? randperm(n, rng);
}

const BLOCK = 4096;

/** for i in [0, n-1): z = random() % (n - i); swap r[i], r[i + z] */
export function randpermForward(n: number, rng: MT19937, out: IndexTable): IndexTable {
  for (let i = 0; i < n; i++) out[i] = i;
  // Draws and targets are computed a block ahead, so the swap loop is tight and the
  // CPU can overlap its cache misses (the swaps dominate for large n).
  const draws = new Uint32Array(BLOCK);
  const targets = new Float64Array(BLOCK);
  for (let i = 0; i < n - 1; ) {
    const count = Math.min(BLOCK, n - 1 - i);
    rng.fill(draws, count);
    for (let k = 0; k < count; k++) {
      const y = draws[k];
      const m = n - (i + k);
      // y % m through a float quotient: exact for y, m < 2^32, and far cheaper than fmod.
      targets[k] = i + k + (y - Math.floor(y / m) * m);
    }
    for (let k = 0; k < count; k++) {
      const a = i + k;
      const b = targets[k];
      const saved = out[a];
      out[a] = out[b];
      out[b] = saved;
    }
    i += count;
  }
  return out;
}

/** for i in [0, n): z = random64() % (i + 1); r[i] = r[z]; r[z] = i (PyTorch >= 2.7 for large n). */
export function randpermInsideOut(n: number, rng: MT19937, out: IndexTable): IndexTable {
  for (let i = 0; i < n; i++) {
    const hi = rng.nextUint32();
    const lo = rng.nextUint32();
    const z = mod64(hi, lo, i + 1);
    out[i] = out[z];
    out[z] = i;
  }
  return out;
}

const TWO_16 = 65536;
const TWO_37 = 2 ** 37;

/** (hi * 2^32 + lo) mod m for m >= 1, exact without BigInt while m < 2^37. */
export function mod64(hi: number, lo: number, m: number): number {
  if (m >= TWO_37) return Number(((BigInt(hi) << 32n) | BigInt(lo)) % BigInt(m));
  // Shift hi in by 16 bits twice so every intermediate stays below 2^53.
  let r = hi % m;
  r = (r * TWO_16) % m;
  r = (r * TWO_16) % m;
  return (r + (lo % m)) % m;
}
