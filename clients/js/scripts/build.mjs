// Builds dist/: ESM, CJS, a minified browser bundle (size reported) and type declarations.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
process.chdir(root);
rmSync('dist', { recursive: true, force: true });
const common = { entryPoints: ['src/index.ts'], bundle: true, target: 'es2020', external: ['ws'], logLevel: 'warning' };
await build({ ...common, format: 'esm', outfile: 'dist/index.js', platform: 'neutral' });
await build({ ...common, format: 'cjs', outfile: 'dist/index.cjs', platform: 'node' });
await build({ ...common, format: 'esm', outfile: 'dist/shardcast.min.js', platform: 'browser', minify: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', '.'], { stdio: 'inherit' });
const min = readFileSync('dist/shardcast.min.js');
console.log(`dist/shardcast.min.js: ${min.length} bytes minified, ${gzipSync(min, { level: 9 }).length} bytes min+gzip`);
