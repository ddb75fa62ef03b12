import { defineConfig } from 'tsup';

export default defineConfig([
  {
    entry: { index: 'ts/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    shims: true,
    clean: true,
    outDir: 'dist',
    target: 'node20',
  },
  {
    entry: { 'cli/main': 'ts/cli/main.ts' },
    format: ['esm'],
    shims: true,
    outDir: 'dist',
    target: 'node20',
    banner: { js: '#!/usr/bin/env node' },
  },
]);
