// ESLint: typescript-eslint's recommended rules, and the import boundaries between the layers
// (shared/ is pure and imports no layer; worker/ never reaches into the coordinator; the
// coordinator library knows nothing of the worker or the CLI). `npm run lint`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** A `no-restricted-imports` rule forbidding imports of the given top-level folders. */
function forbidFolders(...folders) {
  return {
    'no-restricted-imports': [
      'error',
      {
        patterns: folders.map((folder) => ({
          // Relative imports only: the repo has no path aliases, so this catches every route in.
          regex: `^(\\.\\./)+${folder}/`,
          message: `this layer must not import ${folder}/ (see DESIGN.md, Layout)`,
        })),
      },
    ],
  };
}

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
  { files: ['shared/**/*.ts'], rules: forbidFolders('coordinator', 'worker', 'bin') },
  { files: ['worker/**/*.ts'], rules: forbidFolders('coordinator', 'bin') },
  { files: ['coordinator/**/*.ts'], rules: forbidFolders('worker', 'bin') },
);
