import { defineConfig } from 'tsup';

// Two entry points: the framework-free core (`@rxdjango/react/core`) and the
// root, which adds the React hooks. React stays external (a peer dependency).
export default defineConfig({
  entry: { index: 'src/index.ts', core: 'src/core.ts' },
  format: ['esm', 'cjs'],
  // Shared chunks in both formats, so that the root and `/core` entry points
  // share one copy of each class (instanceof works across them).
  splitting: true,
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'es2022',
  external: ['react'],
});
