/**
 * The product's one error root, and the errors of the pure core (plan, sampler, permutation
 * engines). Every error class distsampler throws extends DistSamplerError: one class per
 * condition, each with a stable `code` callers can match on and a `name` equal to its class name.
 */
export class DistSamplerError extends Error {
  /** Stable across releases (`ERR_...`): match on it, not on the message. */
  readonly code: string;
  /**
   * @param code the condition's stable code
   * @param message what went wrong, in words
   * @param options `cause`: the underlying error, kept as Error's standard `cause`
   */
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options && 'cause' in options ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    this.code = code;
  }
}

export class InvalidRankError extends DistSamplerError {
  constructor(rank: number, worldSize: number) {
    // torch's exact wording, so messages match what PyTorch users know.
    super('ERR_INVALID_RANK', `Invalid rank ${rank}, rank should be in the interval [0, ${worldSize - 1}]`);
  }
}

export class InvalidWorldSizeError extends DistSamplerError {
  constructor(value: unknown) {
    super('ERR_INVALID_WORLD_SIZE', `Invalid numReplicas ${String(value)}, it should be an integer >= 1`);
  }
}

export class InvalidLengthError extends DistSamplerError {
  constructor(value: unknown) {
    super(
      'ERR_INVALID_LENGTH',
      `Invalid dataset length ${String(value)}, it should be a non-negative safe integer (0 <= length <= ${Number.MAX_SAFE_INTEGER})`,
    );
  }
}

export class InvalidSeedError extends DistSamplerError {
  constructor(value: unknown) {
    super('ERR_INVALID_SEED', `Invalid seed ${String(value)}, it should be an integer (a safe integer number or a bigint)`);
  }
}

export class InvalidEpochError extends DistSamplerError {
  constructor(value: unknown) {
    super('ERR_INVALID_EPOCH', `Invalid epoch ${String(value)}, it should be a safe integer`);
  }
}

export class UnknownEngineError extends DistSamplerError {
  constructor(value: unknown, known: readonly string[]) {
    super('ERR_UNKNOWN_ENGINE', `Unknown permutation engine ${String(value)}, expected one of: ${known.join(', ')}`);
  }
}

export class PositionOutOfRangeError extends DistSamplerError {
  constructor(what: string, value: number, limit: number) {
    super('ERR_POSITION_OUT_OF_RANGE', `${what} ${value} is out of range [0, ${limit})`);
  }
}
