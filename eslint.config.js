// Lint: typescript-eslint's recommended rules, plus the clock discipline of STYLE.md:
// time and randomness are read only through lib/core/clock.ts and lib/core/random.ts.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const clockRule = {
  'no-restricted-properties': ['error',
    { object: 'Date', property: 'now', message: 'Read time through the injected Clock (lib/core/clock.ts).' },
    { object: 'Math', property: 'random', message: 'Use the injected Random (lib/core/random.ts).' },
    { object: 'performance', property: 'now', message: 'Read time through the injected Clock (lib/core/clock.ts).' },
  ],
  'no-restricted-globals': ['error',
    { name: 'setTimeout', message: 'Arm timers through Clock.setTimer (lib/core/clock.ts).' },
    { name: 'setInterval', message: 'Arm timers through Clock.setTimer (lib/core/clock.ts).' },
  ],
};

// Failure containment (ARCHITECTURE.md): every socket the proxy touches has an error path. The
// proxy never dials a raw socket itself, and joins streams with stream.pipeline (which gives
// both ends one), never with .pipe() (which leaves a failing end without one).
const socketRule = {
  'no-restricted-syntax': ['error',
    { selector: "CallExpression[callee.property.name='pipe']", message: 'Join streams with stream.pipeline: .pipe() leaves an end without an error path.' },
    { selector: "CallExpression[callee.object.name='net'][callee.property.name=/^(connect|createConnection)$/]", message: 'Do not dial raw sockets in lib/: upstream traffic goes through undici or http-proxy, whose sockets are adopted (lib/server/sockets.ts).' },
  ],
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.tap/**', '.tap-js/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly' } },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  { files: ['lib/**/*.ts'], ignores: ['lib/core/clock.ts', 'lib/core/random.ts'], rules: clockRule },
  { files: ['lib/**/*.ts'], rules: socketRule },
  // npm test runs the tests compiled into .tap-js/: a path made from a test's own location would point
  // there, so repository files are found through test/support/repo.ts alone.
  {
    files: ['test/**/*.ts'],
    ignores: ['test/support/repo.ts'],
    rules: {
      'no-restricted-syntax': ['error', { selector: "MetaProperty[meta.name='import'][property.name='meta']", message: 'Find repository files with REPO or inRepo() from test/support/repo.ts: tests run compiled from .tap-js/.' }],
    },
  },
);
