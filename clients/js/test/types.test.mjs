// The shipped type declarations compile for a strict TypeScript consumer.
import { test } from 'node:test';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { pkgRoot } from './harness.mjs';

test('dist/*.d.ts: a strict consumer type-checks', { timeout: 60000 }, () => {
  const tsc = join(pkgRoot, 'node_modules/typescript/bin/tsc');
  const args = ['--noEmit', '--strict', '--module', 'es2020', '--moduleResolution', 'bundler'];
  args.push('--target', 'es2020', '--lib', 'es2020,dom', join(pkgRoot, 'test/fixtures/consumer.ts'));
  execFileSync(process.execPath, [tsc, ...args], { stdio: 'inherit' });
});
