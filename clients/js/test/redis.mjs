// A throwaway redis-server on a free loopback port (cluster-mode tests), or null when none is installed.
import { spawn, spawnSync } from 'node:child_process';
import { freePort, until } from './harness.mjs';
import { connect } from 'node:net';

export async function spawnRedis() {
  if (spawnSync('redis-server', ['--version']).status !== 0) return null;
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  process.on('exit', () => proc.kill('SIGKILL'));
  await until(
    () =>
      new Promise((r) => {
        const s = connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
        s.on('error', () => r(false));
      }),
    10000,
    'redis-server',
  );
  return {
    port,
    stop: () => new Promise((r) => (proc.once('exit', r), proc.kill('SIGKILL'))),
  };
}
