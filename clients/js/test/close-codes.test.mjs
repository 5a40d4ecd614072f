// What each close code does: 4009 reconnects; 4501/4503 retry once with a
// fresh token from getToken, then stop; 4504 stops; `refresh` before `exp`.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, jwt, sleep, until, recordStates } from './harness.mjs';
import { client, names } from './clients.mjs';

let auth;
test('start an engine with JWT auth', async () => {
  auth = await startServer({ auth: true, limits: { conns_per_user_max: 1 } });
});
after(() => auth?.kill());

test('4009 idle timeout: reconnect', { timeout: 20000 }, async () => {
  const s = await startServer({ limits: { idle_timeout_ms: 500 } });
  const c = client(s.url, { pingIntervalMs: 0 });
  const seen = recordStates(c);
  c.connect();
  await until(() => seen.filter((e) => e.name === 'connected').length === 2, 10000, 'reconnected after 4009');
  const dis = seen.find((e) => e.name === 'disconnected');
  assert.equal(dis.ev.code, 4009);
  assert.deepEqual(names(seen).slice(0, 5), ['connecting', 'connected', 'disconnected', 'connecting', 'connected']);
  c.close();
  // With the client's own pings (every 200 ms) the idle timeout never fires.
  const c2 = client(s.url, { pingIntervalMs: 200 });
  const seen2 = recordStates(c2);
  c2.connect();
  await sleep(1500);
  assert.deepEqual(names(seen2), ['connecting', 'connected']);
  c2.close();
  await s.kill();
});

test('4501 with a fixed token: closed at once, with an error', { timeout: 10000 }, async () => {
  const c = client(auth.url, { token: 'not-a-jwt' });
  const seen = recordStates(c);
  c.connect();
  await until(() => c.state === 'closed', 5000, 'closed');
  assert.deepEqual(names(seen), ['connecting', 'error', 'closed']);
  assert.equal(seen[1].ev.code, 4501);
  assert.equal(seen[2].ev.code, 4501);
  await assert.rejects(c.ready());
});

test('4501 with getToken: one retry with a fresh token, then stop', { timeout: 10000 }, async () => {
  let calls = 0;
  const c = client(auth.url, { getToken: () => (calls++, jwt({ sub: 'x', secret: 'wrong' })) });
  const seen = recordStates(c);
  c.connect();
  await until(() => c.state === 'closed', 5000, 'closed');
  assert.equal(calls, 2);
  assert.deepEqual(names(seen), ['connecting', 'disconnected', 'connecting', 'error', 'closed']);
  assert.equal(seen[1].ev.code, 4501);
  assert.equal(seen[1].ev.delayMs, 0);
  assert.equal(seen[4].ev.code, 4501);
});

test('4501 then a good token from getToken: connected', { timeout: 10000 }, async () => {
  const tokens = [jwt({ sub: 'a1', secret: 'wrong' }), jwt({ sub: 'a1' })];
  const c = client(auth.url, { getToken: () => tokens.shift() });
  const seen = recordStates(c);
  c.connect();
  await c.ready();
  assert.deepEqual(names(seen), ['connecting', 'disconnected', 'connecting', 'connected']);
  c.close();
});

test('4503 (expired) with a fixed token: closed', { timeout: 10000 }, async () => {
  const c = client(auth.url, { token: jwt({ sub: 'e1', expIn: -10 }) });
  const seen = recordStates(c);
  c.connect();
  await until(() => c.state === 'closed', 5000, 'closed');
  assert.equal(seen.at(-1).ev.code, 4503);
});

test('4503, then getToken gives a valid token: connected; expired again: stop', { timeout: 10000 }, async () => {
  const tokens = [jwt({ sub: 'e2', expIn: -10 }), jwt({ sub: 'e2' })];
  const c = client(auth.url, { getToken: () => tokens.shift() });
  const seen = recordStates(c);
  c.connect();
  await c.ready();
  assert.equal(seen[1].ev.code, 4503);
  c.close();
  const c2 = client(auth.url, { getToken: () => jwt({ sub: 'e3', expIn: -10 }) });
  const seen2 = recordStates(c2);
  c2.connect();
  await until(() => c2.state === 'closed', 5000, 'closed');
  assert.deepEqual(names(seen2), ['connecting', 'disconnected', 'connecting', 'error', 'closed']);
  assert.equal(seen2.at(-1).ev.code, 4503);
});

test('refresh before exp keeps the connection past the first token', { timeout: 20000 }, async () => {
  let calls = 0;
  const c = client(auth.url, { getToken: () => (calls++, jwt({ sub: 'r1', expIn: 3 })) });
  const seen = recordStates(c);
  c.connect();
  await c.ready();
  await sleep(5000);
  assert.ok(calls >= 3, 'tokens fetched: ' + calls);
  assert.deepEqual(names(seen), ['connecting', 'connected'], 'never dropped');
  c.close();
});

test('without refresh, exp passes: 4503, a new token, connected again', { timeout: 20000 }, async () => {
  let calls = 0;
  const c = client(auth.url, { getToken: () => (calls++, jwt({ sub: 'r2', expIn: 2 })), refreshBeforeMs: 0 });
  const seen = recordStates(c);
  c.connect();
  await c.ready();
  await until(() => seen.filter((e) => e.name === 'connected').length === 2, 10000, 'second connection');
  const dis = seen.find((e) => e.name === 'disconnected');
  assert.equal(dis.ev.code, 4503);
  c.close();
});

test('4504 too many connections for this user: stop', { timeout: 10000 }, async () => {
  const a = client(auth.url, { token: jwt({ sub: 'same' }) });
  a.connect();
  await a.ready();
  const b = client(auth.url, { token: jwt({ sub: 'same' }) });
  const seen = recordStates(b);
  b.connect();
  await until(() => b.state === 'closed', 5000, 'closed');
  assert.equal(seen.at(-1).ev.code, 4504);
  assert.equal(a.state, 'connected');
});

test('a listener closing the client on disconnected stops the reconnect', { timeout: 10000 }, async () => {
  const s = await startServer();
  const c = client(s.url);
  const seen = recordStates(c);
  c.on('disconnected', () => c.close());
  c.connect();
  await c.ready();
  await s.kill();
  await until(() => c.state === 'closed', 5000, 'closed');
  await sleep(300);
  assert.deepEqual(names(seen), ['connecting', 'connected', 'disconnected', 'closed']);
});

test('server down at start: backoff grows, then connects', { timeout: 15000 }, async () => {
  const { freePort } = await import('./harness.mjs');
  const port = await freePort();
  const c = client(`ws://127.0.0.1:${port}/ws`, { transports: ['websocket'], backoff: { minMs: 20, maxMs: 160 } });
  const seen = recordStates(c);
  c.connect();
  await until(() => seen.filter((e) => e.name === 'disconnected').length >= 5, 10000, 'five failed attempts');
  const s = await startServer({ port });
  await c.ready();
  const delays = seen.filter((e) => e.name === 'disconnected').map((e) => e.ev.delayMs);
  delays.forEach((d, i) => assert.ok(d < Math.min(160, 20 * 2 ** i), `attempt ${i}: ${d}`));
  await s.kill();
});

test('server down at start, default transports: it stays on the WebSocket once the server is up', { timeout: 15000 }, async () => {
  const { freePort } = await import('./harness.mjs');
  const port = await freePort();
  const c = client(`ws://127.0.0.1:${port}/ws`, { backoff: { minMs: 20, maxMs: 100 } });
  const seen = recordStates(c);
  c.connect();
  await until(() => seen.filter((e) => e.name === 'disconnected').length >= 4, 10000, 'four failed attempts');
  const s = await startServer({ port });
  await c.ready();
  assert.equal(c.transport, 'websocket');
  assert.ok(seen.filter((e) => e.name === 'connecting').every((e) => e.ev.transport === 'websocket'));
  await s.kill();
});

test('a refused subscription (103) stays refused across reconnects; the others recover', { timeout: 15000 }, async () => {
  const s = await startServer({ auth: true });
  const { startProxy } = await import('./proxy.mjs');
  const proxy = await startProxy(s.port);
  const c = client(`ws://127.0.0.1:${proxy.port}/ws`, { token: jwt({ sub: 'p1', subscribe: ['open*'] }) });
  const errors = [];
  const got = [];
  c.subscribe('secret').on('error', (e) => errors.push(e.code));
  const ok = c.subscribe('open1', { onPublication: (p) => got.push(p.data) });
  const subscribed = [];
  ok.on('subscribed', (e) => subscribed.push(e));
  c.connect();
  await until(() => errors.length === 1 && subscribed.length === 1, 5000, 'one refused, one subscribed');
  assert.equal(errors[0], 103);
  assert.equal(c.getSubscription('secret').state, 'failed');
  proxy.cutAll();
  await s.publish('open1', 'after the cut');
  await until(() => got.length === 1, 5000, 'recovered');
  assert.equal(subscribed[1].recovered, true);
  assert.deepEqual(errors, [103], 'not asked again');
  await proxy.close();
  await s.kill();
});
