/**
 * How code gets loaded, from TypeScript sources or from the compiled package: the one place that
 * decides it. This package runs from its .ts sources under tsx or vitest (tests, `npm start`) and
 * as plain JavaScript from dist/ once installed; this very file's extension tells which. Its own
 * child processes and threads follow suit (tsx, a dev dependency, only from sources). A user's
 * TypeScript (a script, a step or dataset module) needs a loader of the user's: tsx from their
 * project, or a Node that strips types itself; .js/.mjs never does.
 */
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** This package runs from its .ts sources (tsx, vitest), not compiled: decided by this file's own extension. */
export const FROM_SOURCE = /\.[cm]?ts$/.test(import.meta.url);

/** One of this package's own modules beside `base` (an import.meta.url): `name.ts` from sources, `name.js` compiled. */
export function ownModule(name: string, base: string): URL {
  return new URL(`./${name}.${FROM_SOURCE ? 'ts' : 'js'}`, base);
}

/** node flags for a process that runs this package's own modules: tsx from sources, none compiled. */
export function ownExecArgv(): string[] {
  return FROM_SOURCE ? ['--import', import.meta.resolve('tsx')] : [];
}

/** tsx's register API for a thread that runs this package's own modules from sources; undefined compiled (none needed). */
export function ownThreadTsx(): string | undefined {
  return FROM_SOURCE ? import.meta.resolve('tsx/esm/api') : undefined;
}

const TYPESCRIPT_EXTENSIONS = ['.ts', '.mts', '.cts'];

/** A user's file that needs a TypeScript loader. */
export function isTypeScriptFile(path: string): boolean {
  return TYPESCRIPT_EXTENSIONS.includes(extname(path));
}

/** Node's own type stripping flags, among this process's flags (passed on to its children as they are). */
function typeStrippingFlags(): string[] {
  return process.execArgv.filter((flag) => /^--experimental-(strip|transform)-types$/.test(flag));
}

/** This node strips types itself (on by default from 23.6; --experimental-strip-types from 22.6, also through NODE_OPTIONS). */
export function nodeStripsTypes(): boolean {
  const feature = (process.features as { typescript?: unknown }).typescript;
  return Boolean(feature) || typeStrippingFlags().length > 0 || /--experimental-(strip|transform)-types/.test(process.env.NODE_OPTIONS ?? '');
}

/** A require() of the first folder, in order, that has tsx installed (the user's project); undefined if none has it. */
function projectRequire(fromDirs: readonly string[]): NodeJS.Require | undefined {
  for (const dir of fromDirs) {
    const require = createRequire(join(dir, 'noop.js'));
    try {
      require.resolve('tsx');
      return require;
    } catch {
      // Not installed there: the next folder.
    }
  }
  return undefined;
}

/** tsx's loader (a file URL, for `node --import`) as installed in the user's project, resolved from each folder in turn. */
export function projectTsx(fromDirs: readonly string[]): string | undefined {
  const require = projectRequire(fromDirs);
  return require && pathToFileURL(require.resolve('tsx')).href;
}

/** Why a user's TypeScript file cannot be loaded, and what to do about it. */
export function typeScriptLoaderMissing(what: string): string {
  return `${what} is TypeScript, which needs tsx in your project (npm install -D tsx) or Node 22.6+ stripping types (NODE_OPTIONS=--experimental-strip-types; on by default from Node 23.6); a .js/.mjs file needs neither`;
}

/**
 * node flags for a process that runs a user's file (`run SCRIPT`), undefined when it is TypeScript
 * and nothing here can load it. From sources this package's own tsx does; compiled, the user's
 * project's tsx (from the file's folder, then the working directory), else Node's type stripping.
 */
export function userExecArgv(path: string, fromDirs: readonly string[]): string[] | undefined {
  if (!isTypeScriptFile(path)) return [];
  if (FROM_SOURCE) return ownExecArgv();
  const tsx = projectTsx(fromDirs);
  if (tsx) return ['--import', tsx];
  return nodeStripsTypes() ? typeStrippingFlags() : undefined;
}

/**
 * One of tsx's register APIs (`./esm/api`, `./cjs/api`) as the project has it, as an ES module (the
 * CommonJS build of the ESM API cannot find its own loader), from tsx's exports.
 */
function tsxRegisterApi(require: NodeJS.Require, api: 'esm' | 'cjs'): string | undefined {
  const manifest = require.resolve('tsx/package.json');
  const entry = (require('tsx/package.json') as { exports?: Record<string, unknown> }).exports?.[`./${api}/api`];
  const esm = typeof entry === 'object' && entry !== null ? (entry as { import?: unknown }).import : undefined;
  const file = typeof esm === 'string' ? esm : typeof esm === 'object' && esm !== null ? (esm as { default?: unknown }).default : undefined;
  return typeof file === 'string' ? pathToFileURL(join(dirname(manifest), file)).href : undefined;
}

let registered: Promise<void> | undefined;

/**
 * Readies this process (or thread) to import a user's module: nothing for JavaScript, from sources
 * (tsx or vitest load .ts already) or with Node's type stripping; otherwise registers the user's
 * project's tsx once, through its register API (importing its loader registers nothing in a
 * worker thread). Throws (typeScriptLoaderMissing) when there is none.
 */
export async function loaderForUserModule(path: string, fromDirs: readonly string[]): Promise<void> {
  if (!isTypeScriptFile(path) || FROM_SOURCE || nodeStripsTypes()) return;
  registered ??= (async () => {
    const require = projectRequire(fromDirs);
    if (!require) throw new Error(typeScriptLoaderMissing(path));
    // Both, as `node --import tsx` does: a .ts file outside a "type": "module" package is CommonJS
    // to node, and its import of ESM syntax needs the CommonJS hooks (with the ESM ones alone it
    // fails as a require() of an ES module in a cycle).
    for (const kind of ['esm', 'cjs'] as const) {
      const api = tsxRegisterApi(require, kind);
      const { register } = (api ? await import(api) : {}) as { register?: unknown };
      if (typeof register !== 'function') throw new Error(`${path} is TypeScript, and the tsx in your project has no ${kind} register API (tsx 4 has)`);
      register();
    }
  })();
  // A failure is not kept: tsx may be installed before the next try.
  await registered.catch((error: unknown) => {
    registered = undefined;
    throw error;
  });
}
