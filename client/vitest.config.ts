import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Fixtures import '@rxdjango/react' exactly as generated code does.
const src = (file: string): string => fileURLToPath(new URL(`./src/${file}`, import.meta.url));

export default defineConfig({
  resolve: {
    alias: [
      { find: /^@rxdjango\/react\/core$/, replacement: src('core.ts') },
      { find: /^@rxdjango\/react$/, replacement: src('index.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts', 'test/**/*.test.tsx'],
    environment: 'node',
    restoreMocks: true,
    benchmark: {
      include: ['bench/**/*.bench.ts'],
    },
  },
});
