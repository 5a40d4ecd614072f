// Starts real shardcast processes for the tests, on free loopback ports, and
// kills every one of them when the test process ends.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
export const pkgRoot = join(here, '..');
const repoRoot = join(pkgRoot, '..', '..');

export const SECRET = 'js-client-test-secret';

/** The workspace's engine binary: SHARDCAST_BIN, else the newer of target/{release,debug}/shardcast. */
export function engineBinary() {
  if (process.env.SHARDCAST_BIN) return process.env.SHARDCAST_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(repoRoot, 'target');
  const found = ['release', 'debug']
    .map((p) => join(target, p, 'shardcast'))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (!found.length) throw new Error('no engine binary: run `cargo build -p shardcast` (or set SHARDCAST_BIN)');
  return found[0];
}

const live = new Set();
const dirs = [];
function killAll() {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {}
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns truthy; throws after `ms`. */
export async function until(fn, ms = 10000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(20);
  }
}

const BASE_TOML = `
shards = 2
pin_cores = false

[namespaces.""]
history_size = 10000
history_ttl_ms = 600000
presence = true
`;

const BASE_LIMITS = { drain_window_ms: 300, reconnect_spread_ms: 400, close_linger_ms: 10000 };

/**
 * A shardcast process. `limits` overrides keys of [limits], `toml` is appended
 * (more sections), `auth` configures the HS256 test secret, `port` reuses a
 * port (a restart).
 */
export async function startServer({ port, toml = '', limits = {}, auth = false, logTo } = {}) {
  port ||= await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'shardcast-js-'));
  dirs.push(dir);
  const cfg = join(dir, 'shardcast.toml');
  let text = `listen = "127.0.0.1:${port}"\n` + BASE_TOML +
    '\n[limits]\n' +
    Object.entries({ ...BASE_LIMITS, ...limits })
      .map(([k, v]) => `${k} = ${v}\n`)
      .join('') +
    toml;
  if (auth) text += `\n[auth]\nhmac_secret = "${SECRET}"\n`;
  writeFileSync(cfg, text);
  const proc = spawn(engineBinary(), ['--config', cfg], { stdio: ['ignore', 'ignore', logTo ? 'pipe' : 'ignore'] });
  live.add(proc);
  const exited = new Promise((r) => proc.once('exit', (code, sig) => (live.delete(proc), r({ code, sig }))));
  const url = `ws://127.0.0.1:${port}/ws`;
  const http = `http://127.0.0.1:${port}`;
  await until(
    async () => {
      if (proc.exitCode !== null) throw new Error('shardcast exited at start: ' + proc.exitCode);
      try {
        return (await fetch(http + '/health')).ok;
      } catch {
        return false;
      }
    },
    15000,
    'shardcast to start',
  );
  return {
    port,
    url,
    http,
    proc,
    exited,
    /** SIGTERM: drain (4001 with reconnect_after_ms), then exit. */
    async drain() {
      proc.kill('SIGTERM');
      return exited;
    },
    async kill() {
      proc.kill('SIGKILL');
      return exited;
    },
    async publish(channel, data) {
      const res = await fetch(http + '/api/publish', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ channel, data }),
      });
      if (!res.ok) throw new Error('publish: HTTP ' + res.status + ' ' + (await res.text()));
      return res.json();
    },
  };
}

const b64url = (b) => Buffer.from(b).toString('base64url');

/** An HS256 JWT signed with the test secret; `exp` in seconds from now (default 1 hour). */
export function jwt({ sub = 'u1', expIn = 3600, secret = SECRET, ...claims } = {}) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + expIn, ...claims }));
  const sig = createHmac('sha256', secret).update(head + '.' + body).digest('base64url');
  return head + '.' + body + '.' + sig;
}

/** The `ws` package's WebSocket, recording every instance (so a test can stall one's socket). */
export function recordingWebSocket() {
  const sockets = [];
  class Recording extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      sockets.push(this);
    }
  }
  return { WebSocket: Recording, sockets, last: () => sockets[sockets.length - 1] };
}

/** Collect a client's state events in order. */
export function recordStates(client) {
  const seen = [];
  for (const name of ['connecting', 'connected', 'disconnected', 'closed', 'error']) {
    client.on(name, (ev) => seen.push({ name, ev, at: Date.now() }));
  }
  return seen;
}
