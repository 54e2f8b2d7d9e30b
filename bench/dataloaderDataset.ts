/**
 * The dataset the `dataloader` bench section reads (in its loader threads too): a JSON Lines
 * file of point clouds whose per-sample "parse" is CPU-heavy, about 0.2 ms here, like decoding
 * and voxelising a LiDAR frame. Deterministic busy work, no sleeping: the time is CPU time.
 */
import { JsonLinesDataset } from '../worker/datasets.ts';

export interface CloudArgs {
  readonly path: string;
  /** Rounds of the voxel hash per sample: the knob for the per-sample cost. */
  readonly rounds: number;
}

export interface CloudSample {
  readonly id: number;
  readonly occupied: number;
  readonly checksum: number;
}

interface CloudLine {
  readonly id: number;
  readonly points: readonly number[];
}

/** A line: `{ "id": i, "points": [x, y, z, ...] }` with `points` floats from a seeded LCG. */
export function cloudLine(id: number, points: number): string {
  let state = (id * 2654435761) >>> 0;
  const values: string[] = new Array(points * 3);
  for (let k = 0; k < values.length; k++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    values[k] = ((state / 2 ** 32) * 100 - 50).toFixed(3);
  }
  return `{"id":${id},"points":[${values.join(',')}]}`;
}

/** Voxelises the cloud `rounds` times on shifted grids: how many voxels are occupied, and a checksum. */
export function voxelise(points: readonly number[], rounds: number): { occupied: number; checksum: number } {
  const grid = new Uint8Array(4096);
  let occupied = 0;
  let checksum = 0;
  for (let round = 0; round < rounds; round++) {
    grid.fill(0);
    const shift = round * 0.37;
    for (let k = 0; k + 2 < points.length; k += 3) {
      const x = Math.floor((points[k] + 50 + shift) / 6.25) & 15;
      const y = Math.floor((points[k + 1] + 50 + shift) / 6.25) & 15;
      const z = Math.floor((points[k + 2] + 50 + shift) / 6.25) & 15;
      const cell = (x << 8) | (y << 4) | z;
      if (grid[cell] === 0) occupied++;
      grid[cell] = 1;
      checksum = (Math.imul(checksum, 31) + cell) | 0;
    }
  }
  return { occupied, checksum };
}

/** The factory loader threads call: `{ module: 'bench/dataloaderDataset.ts', export: 'openClouds', args }`. */
export async function openClouds(args: CloudArgs): Promise<{ length: number; description: string; get(index: number): Promise<CloudSample>; close(): Promise<void> }> {
  const lines = await JsonLinesDataset.open(args.path);
  return {
    length: lines.length,
    description: `point clouds ${args.path} (${lines.length} lines, ${args.rounds} voxel rounds a sample)`,
    async get(index: number): Promise<CloudSample> {
      const line = (await lines.get(index)) as CloudLine;
      return { id: line.id, ...voxelise(line.points, args.rounds) };
    },
    close: () => lines.close(),
  };
}
