// `npm run build` (and prepare: `npm ci` here, `npm pack`): dist/ anew from tsconfig.build.json, then what tsc does not do:
// the plain .mjs preload the launcher gives scripts, the CLI's shebang for plain node (the source's
// runs it through tsx), no declarations for the CLI, and .d.ts imports naming ./x.js as the
// JavaScript beside them does.
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import process from 'node:process';
import { fileURLToPath, URL } from 'node:url';

// Every path below is the repo's, wherever this is started from.
process.chdir(fileURLToPath(new URL('..', import.meta.url)));
const DIST = 'dist';
rmSync(DIST, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const { status } = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
if (status !== 0) process.exit(status ?? 1);

copyFileSync('bin/launchedScript.mjs', join(DIST, 'bin/launchedScript.mjs'));

const cli = join(DIST, 'bin/distsampler.js');
writeFileSync(cli, readFileSync(cli, 'utf8').replace(/^#!.*\n/, '#!/usr/bin/env node\n'));
chmodSync(cli, 0o755);

// The CLI is no entry point of the library: its declarations would only weigh on the package.
for (const file of readdirSync(join(DIST, 'bin'))) if (file.endsWith('.d.ts')) rmSync(join(DIST, 'bin', file));

// `from './x.ts'` and `import('./x.ts')` in declarations: TypeScript 5 reads either, older ones only .js.
const RELATIVE_TS = /((?:from|import\()\s*['"])(\.{1,2}\/[^'"]*?)\.([cm]?)ts(['"])/g;
for (const file of readdirSync(DIST, { recursive: true, encoding: 'utf8' })) {
  if (!file.endsWith('.d.ts')) continue;
  const path = join(DIST, file);
  const text = readFileSync(path, 'utf8');
  const rewritten = text.replace(RELATIVE_TS, '$1$2.$3js$4');
  if (rewritten !== text) writeFileSync(path, rewritten);
}
