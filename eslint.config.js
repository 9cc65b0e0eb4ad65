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

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.tap/**', 'coverage/**'] },
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
);
