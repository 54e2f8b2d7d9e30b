// ESLint: typescript-eslint's recommended rules, and the import boundaries between the layers
// (shared/ is pure and imports no layer; worker/ never reaches into the coordinator; the
// coordinator library knows nothing of the worker or the CLI). `npm run lint`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** A `no-restricted-imports` rule forbidding imports of the given top-level folders (and modules). */
function forbidFolders(folders, modules = []) {
  return {
    'no-restricted-imports': [
      'error',
      {
        paths: modules.map((name) => ({ name, message: 'the coordinator core is sans-IO: sockets, files and timers belong to its shell' })),
        patterns: folders.map((folder) => ({
          // Relative imports only: the repo has no path aliases, so this catches every route in.
          regex: `^(\\.\\./)+${folder}/`,
          message: `this layer must not import ${folder}/ (see DESIGN.md, Layout)`,
        })),
      },
    ],
  };
}

/** The coordinator's pure core: every decision, no I/O, no clock (the shell is coordinator.ts). */
const CORE_FILES = [
  'groupCore',
  'groupState',
  'groupMembership',
  'epochProgress',
  'journalRestart',
  'runEnding',
  'coreTypes',
  'timerTable',
  'journalWriter',
  'journalRecords',
  'epochLedger',
  'tailSplit',
  'epochState',
  'collectives',
  'collectiveReductions',
  'collectiveChecks',
  'chunkAssembly',
  'gatherRelay',
  'resultFrames',
  'kvStore',
  'rendezvous',
  'heartbeat',
  'planAuditor',
  'options',
  'report',
  'evalResults',
  'effectText',
].map((name) => `coordinator/${name}.ts`);
const IO_MODULES = ['ws', 'node:http', 'node:https', 'node:net', 'node:fs', 'node:fs/promises', 'node:timers', 'node:timers/promises', 'node:child_process', 'node:worker_threads', 'node:dgram'];
const CLOCKS = ['Date', 'setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'performance'].map((name) => ({
  name,
  message: 'the core gets the time with each input and arms timers as effects',
}));

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      // `_name` says "deliberately unused" (a callback's position, a destructured rest).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  { files: ['shared/**/*.ts'], rules: forbidFolders(['coordinator', 'worker', 'bin']) },
  { files: ['worker/**/*.ts'], rules: forbidFolders(['coordinator', 'bin']) },
  { files: ['coordinator/**/*.ts'], rules: forbidFolders(['worker', 'bin']) },
  { files: CORE_FILES, rules: { ...forbidFolders(['worker', 'bin'], IO_MODULES), 'no-restricted-globals': ['error', ...CLOCKS] } },
);
