/**
 * A minimal WebAssembly binary encoder: just what shared/randpermWasm.ts needs (i32 code, one
 * imported memory, exported functions). There is no wasm toolchain in this project's build, so
 * the module's bytes are written here, instruction by instruction, from readable TypeScript.
 *
 * Reference: the WebAssembly core specification, chapter 5 (binary format).
 */

/** Opcodes used below (core spec 5.4). */
export const Op = {
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  call: 0x10,
  select: 0x1b,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i32Load: 0x28,
  i32Store: 0x36,
  i32Const: 0x41,
  i32Eqz: 0x45,
  i32Ne: 0x47,
  i32LtU: 0x49,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  i32RemU: 0x70,
  i32And: 0x71,
  i32Or: 0x72,
  i32Xor: 0x73,
  i32Shl: 0x74,
  i32ShrU: 0x76,
} as const;

const I32 = 0x7f;
const FUNC_TYPE = 0x60;
const VOID_BLOCK = 0x40;
const MEMORY_IMPORT = 0x02;
const FUNC_EXPORT = 0x00;

const Section = { type: 1, import: 2, function: 3, export: 7, code: 10 } as const;

/** Unsigned LEB128. */
export function uleb(value: number): number[] {
  const out: number[] = [];
  let rest = value >>> 0;
  do {
    let byte = rest & 0x7f;
    rest >>>= 7;
    if (rest !== 0) byte |= 0x80;
    out.push(byte);
  } while (rest !== 0);
  return out;
}

/** Signed LEB128 of a 32-bit integer (i32.const takes its operand signed). */
export function sleb(value: number): number[] {
  const out: number[] = [];
  let rest = value | 0;
  for (;;) {
    const byte = rest & 0x7f;
    rest >>= 7;
    const done = (rest === 0 && (byte & 0x40) === 0) || (rest === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

// The byte lists are built with loops, not spreads: this runs once, cold, in the timed first
// derivation of a fresh process, where spreading arrays costs milliseconds.

/** `parts` joined into one list. */
function concat(...parts: ReadonlyArray<readonly number[]>): number[] {
  const out: number[] = [];
  for (const part of parts) for (let k = 0; k < part.length; k++) out.push(part[k]);
  return out;
}

function utf8Name(name: string): number[] {
  const bytes = Array.from(new TextEncoder().encode(name));
  return concat(uleb(bytes.length), bytes);
}

function vector(items: ReadonlyArray<readonly number[]>): number[] {
  return concat(uleb(items.length), ...items);
}

function section(id: number, body: readonly number[]): number[] {
  return concat([id], uleb(body.length), body);
}

/** The instructions of one function body, written in order; locals are numbered params first. */
export class FunctionBody {
  private readonly bytes: number[] = [];

  /** @param locals how many i32 locals besides the parameters */
  constructor(readonly locals: number) {}

  get(local: number): this {
    return this.emit(Op.localGet).emitAll(uleb(local));
  }
  set(local: number): this {
    return this.emit(Op.localSet).emitAll(uleb(local));
  }
  tee(local: number): this {
    return this.emit(Op.localTee).emitAll(uleb(local));
  }
  i32(value: number): this {
    return this.emit(Op.i32Const).emitAll(sleb(value));
  }
  /** i32.load at (popped address + offset), 4-byte aligned (2 = log2 of the alignment). */
  load(offset = 0): this {
    return this.emit(Op.i32Load, 2).emitAll(uleb(offset));
  }
  /** i32.store of the popped value at (the address under it + offset), 4-byte aligned. */
  store(offset = 0): this {
    return this.emit(Op.i32Store, 2).emitAll(uleb(offset));
  }
  block(): this {
    return this.emit(Op.block, VOID_BLOCK);
  }
  loop(): this {
    return this.emit(Op.loop, VOID_BLOCK);
  }
  if(): this {
    return this.emit(Op.if, VOID_BLOCK);
  }
  end(): this {
    return this.emit(Op.end);
  }
  /** Branch to the enclosing block `depth` levels out (0: the innermost) if the popped value is not 0. */
  brIf(depth: number): this {
    return this.emit(Op.brIf).emitAll(uleb(depth));
  }
  call(func: number): this {
    return this.emit(Op.call).emitAll(uleb(func));
  }
  /** Any opcode without immediates (arithmetic, comparisons, select). */
  emit(...bytes: number[]): this {
    for (let k = 0; k < bytes.length; k++) this.bytes.push(bytes[k]);
    return this;
  }

  private emitAll(bytes: readonly number[]): this {
    for (let k = 0; k < bytes.length; k++) this.bytes.push(bytes[k]);
    return this;
  }

  /** The body as the code section holds it: size, locals, instructions, end. */
  encode(): number[] {
    const locals = this.locals > 0 ? vector([concat(uleb(this.locals), [I32])]) : uleb(0);
    const body = concat(locals, this.bytes, [Op.end]);
    return concat(uleb(body.length), body);
  }
}

export interface FunctionSpec {
  /** Exported under this name; internal functions have none. */
  readonly exportName?: string;
  /** Number of i32 parameters; no function returns a value. */
  readonly params: number;
  readonly body: FunctionBody;
}

/**
 * A module importing one memory as `env.memory` and holding `functions` (function index = array
 * index, for `call`). Every function is (i32 x params) -> ().
 */
export function encodeModule(functions: readonly FunctionSpec[]): Uint8Array {
  const arities = Array.from(new Set(functions.map((f) => f.params)));
  const types = arities.map((params) => concat([FUNC_TYPE], vector(Array.from({ length: params }, () => [I32])), uleb(0)));
  // limits flag 0: a minimum (0 pages), no maximum; the memory passed in sets the size
  const memoryImport = concat(utf8Name('env'), utf8Name('memory'), [MEMORY_IMPORT, 0x00], uleb(0));
  const exports = functions.flatMap((f, index) => (f.exportName === undefined ? [] : [concat(utf8Name(f.exportName), [FUNC_EXPORT], uleb(index))]));
  const bytes = concat(
    [0x00, 0x61, 0x73, 0x6d], // \0asm
    [0x01, 0x00, 0x00, 0x00], // version 1
    section(Section.type, vector(types)),
    section(Section.import, vector([memoryImport])),
    section(Section.function, vector(functions.map((f) => uleb(arities.indexOf(f.params))))),
    section(Section.export, vector(exports)),
    section(Section.code, vector(functions.map((f) => f.body.encode()))),
  );
  return new Uint8Array(bytes);
}
