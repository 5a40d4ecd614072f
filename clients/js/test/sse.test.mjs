// SSE fallback: a proxy that refuses WebSocket upgrades; the same subscriptions
// and recovery through /sse and Last-Event-ID; publishes over HTTP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, jwt, until, recordStates } from './harness.mjs';
import { client, watch, names } from './clients.mjs';
import { startProxy } from './proxy.mjs';
const offsets = (got) => got.map((p) => p.offset);
const range = (a, n) => Array.from({ length: n }, (_, i) => a + i);

test('upgrade blocked: falls back to SSE, recovers two channels after a cut, publishes over HTTP', { timeout: 30000 }, async () => {
  const s = await startServer();
  const proxy = await startProxy(s.port, { blockUpgrade: true });
  const c = client(`ws://127.0.0.1:${proxy.port}/ws`, { httpPublish: true });
  const seen = recordStates(c);
  const a = watch(c, 'sa');
  const b = watch(c, 'sb');
  c.connect();
  await until(() => a.subscribed.length === 1 && b.subscribed.length === 1, 10000, 'subscribed over SSE');
  assert.equal(c.transport, 'sse');
  assert.equal(proxy.stats.refused, 2, 'two refused upgrades, then SSE');
  assert.deepEqual(names(seen), ['connecting', 'disconnected', 'connecting', 'disconnected', 'connecting', 'connected']);
  assert.deepEqual(
    seen.filter((e) => e.name === 'connecting').map((e) => e.ev.transport),
    ['websocket', 'websocket', 'sse'],
  );
  const fa = (await c.publish('sa', 'a0')).offset; // over HTTP
  const fb = (await s.publish('sb', 'b0')).offset;
  await until(() => a.got.length === 1 && b.got.length === 1, 5000, 'first of each');
  proxy.cutAll();
  for (let i = 1; i <= 10; i++) {
    await s.publish('sa', 'a' + i);
    await s.publish('sb', 'b' + i);
  }
  await until(() => a.got.length === 11 && b.got.length === 11, 10000, 'both recovered');
  assert.deepEqual(offsets(a.got), range(fa, 11));
  assert.deepEqual(offsets(b.got), range(fb, 11));
  assert.deepEqual(a.got.map((p) => p.data), range(0, 11).map((i) => 'a' + i));
  assert.deepEqual([...a.lost, ...b.lost], []);
  assert.equal(a.subscribed[1].recovered, true);
  assert.equal(b.subscribed[1].recovered, true);
  assert.equal(c.transport, 'sse', 'stays on the transport that worked');
  await assert.rejects(c.history('sa'), /WebSocket/);
  await proxy.close();
  await s.kill();
});

test('SSE only: drain (event: close 4001) and restart (new epoch, said explicitly)', { timeout: 30000 }, async () => {
  let s = await startServer();
  const c = client(s.url, { transports: ['sse'] });
  const seen = recordStates(c);
  const w = watch(c, 'sd');
  c.connect();
  await until(() => w.subscribed.length === 1, 5000, 'subscribed');
  await s.publish('sd', 1);
  await until(() => w.got.length === 1, 5000, 'first');
  await s.drain();
  const dis = seen.find((e) => e.name === 'disconnected');
  assert.equal(dis.ev.code, 4001);
  assert.equal(dis.ev.delayMs, Number(/reconnect_after_ms=(\d+)/.exec(dis.ev.reason)[1]));
  s = await startServer({ port: s.port });
  await until(() => w.subscribed.length === 2, 15000, 'resubscribed');
  assert.equal(w.lost.length, 1);
  assert.equal(w.lost[0].reason, 'new_epoch');
  await s.publish('sd', 2);
  await until(() => w.got.length === 2, 5000, 'second');
  assert.equal(w.got[1].offset, w.lost[0].now.offset + 1);
  await s.kill();
});

test('SSE stall: a silent stream is dropped and resumed', { timeout: 20000 }, async () => {
  const s = await startServer({ limits: { ping_interval_ms: 200 } });
  // The first connection stalls for good after its first 300 bytes.
  const proxy = await startProxy(s.port, { plan: (i) => (i === 0 ? { stallAfterBytes: 300 } : {}) });
  const c = client(`http://127.0.0.1:${proxy.port}/ws`, { transports: ['sse'], sseStallMs: 1000 });
  const seen = recordStates(c);
  const w = watch(c, 'st');
  c.connect();
  await until(() => w.subscribed.length >= 1, 5000, 'subscribed');
  const first = (await s.publish('st', 'x'.repeat(400))).offset;
  for (let i = 1; i < 5; i++) await s.publish('st', i);
  await until(() => w.got.length === 5, 10000, 'all five after the stall');
  assert.deepEqual(offsets(w.got), range(first, 5));
  const dis = seen.find((e) => e.name === 'disconnected');
  assert.match(dis.ev.reason, /stalled/);
  await proxy.close();
  await s.kill();
});

test('SSE with a bad token: 401 is 4501, closed', { timeout: 10000 }, async () => {
  const s = await startServer({ auth: true });
  const c = client(s.url, { transports: ['sse'], token: jwt({ secret: 'wrong' }) });
  const seen = recordStates(c);
  watch(c, 'x');
  c.connect();
  await until(() => c.state === 'closed', 5000, 'closed');
  assert.equal(seen.at(-1).ev.code, 4501);
  await s.kill();
});
