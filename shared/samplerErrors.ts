/**
 * Errors of the sampler's options: which sampler, OpenPCDet's limits, and unpadded plans.
 * Each a DistSamplerError with a stable code.
 */
import { DistSamplerError } from './errors.ts';

export class UnknownSamplerError extends DistSamplerError {
  constructor(value: unknown, known: readonly string[]) {
    super('ERR_UNKNOWN_SAMPLER', `Unknown sampler ${String(value)}, expected one of: ${known.join(', ')}`);
  }
}

/** OpenPCDet's `assert len(indices) == total_size`: its padding is at most one copy of the dataset. */
export class OpenPcdetPaddingError extends DistSamplerError {
  readonly length: number;
  readonly worldSize: number;
  constructor(length: number, worldSize: number, totalSize: number) {
    super(
      'ERR_OPENPCDET_PADDING',
      `OpenPCDet's sampler cannot pad ${length} ${length === 1 ? 'sample' : 'samples'} to ${worldSize} ranks: ` +
        `it needs ${totalSize - length} padding indices but pads with at most the dataset's own ${length} once ` +
        `(its assert len(indices) == total_size fails); use pad: false (--no-pad) or the torch sampler`,
    );
    this.length = length;
    this.worldSize = worldSize;
  }
}

export class OpenPcdetSeedError extends DistSamplerError {
  constructor(seed: unknown) {
    super(
      'ERR_OPENPCDET_SEED',
      `OpenPCDet's sampler has no seed (it seeds its generator with the epoch alone), got seed ${String(seed)}; leave the seed unset or use the torch sampler`,
    );
  }
}

export class OpenPcdetDropLastError extends DistSamplerError {
  constructor() {
    super('ERR_OPENPCDET_DROP_LAST', `OpenPCDet's sampler has no drop_last (it inherits drop_last=False); use the torch sampler to drop the tail`);
  }
}

export class OpenPcdetEngineError extends DistSamplerError {
  constructor(engine: string) {
    super('ERR_OPENPCDET_ENGINE', `OpenPCDet's sampler is defined by torch.randperm, so it needs the torch engine, got engine ${engine}`);
  }
}

export class UnpaddedDropLastError extends DistSamplerError {
  constructor() {
    super(
      'ERR_UNPADDED_DROP_LAST',
      'pad: false and dropLast: true contradict each other: an unpadded plan keeps every index exactly once, dropLast drops the tail',
    );
  }
}

/** A rank's part is too short for the positions a merge needs from it. */
export class ShortPartError extends DistSamplerError {
  constructor(rank: number, count: number, needed: number) {
    super('ERR_SHORT_PART', `rank ${rank} has ${count} ${count === 1 ? 'entry' : 'entries'}, the merge needs ${needed} from it`);
  }
}
