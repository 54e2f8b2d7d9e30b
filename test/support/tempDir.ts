/** A test file's own folder under the temp folder (mkdtemp), removed after its tests. */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

export interface TempDir {
  readonly path: string;
  /** A path in the folder, unique within it (`3-name`): nothing is created. */
  file(name: string): string;
  /** A new empty folder in it (unique, like file()). */
  folder(name: string): string;
}

/** Call at a test file's top level: the folder is removed in afterAll. */
export function useTempDir(prefix: string): TempDir {
  const path = mkdtempSync(join(tmpdir(), `distsampler-${prefix}-`));
  afterAll(() => rmSync(path, { recursive: true, force: true }));
  let counter = 0;
  const file = (name: string) => join(path, `${++counter}-${name}`);
  return {
    path,
    file,
    folder(name) {
      const folder = file(name);
      mkdirSync(folder);
      return folder;
    },
  };
}
