// Flaky network: each seed runs one client through a proxy that cuts and
// stalls its connections at random (seeded), while the backend publishes.
// The client must end with every publication of history, in order, once.
// Every fourth seed uses the SSE transport (Last-Event-ID recovery), the rest
// the WebSocket.
//
//   FLAKY_SEEDS=1000 node --test test/flaky.test.mjs
//   (FLAKY_SEED_START=N replays from seed N; FLAKY_PUBLICATIONS, FLAKY_PARALLEL)
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { Client } from '../dist/index.js';
import { startServer, sleep, until } from './harness.mjs';
import { rng, startProxy } from './proxy.mjs';

const SEEDS = Number(process.env.FLAKY_SEEDS || 100);
const START = Number(process.env.FLAKY_SEED_START || 1);
const PARALLEL = Number(process.env.FLAKY_PARALLEL || 25);
const PUBLICATIONS = Number(process.env.FLAKY_PUBLICATIONS || 40);

/** Faults for one connection, drawn from the seed's generator. */
function faultPlan(r, state) {
  return () => {
    if (state.calm) return {};
    const x = r();
    if (x < 0.05) return { stallAtStart: true }; // not even the handshake: the connect timeout finds it
    if (x < 0.25) return { cutAfterBytes: Math.floor(r() * 3000) };
    if (x < 0.45) return { cutAfterMs: Math.floor(r() * 800) };
    if (x < 0.65) return { stallAfterBytes: Math.floor(r() * 3000), stallMs: Math.floor(r() * 600) };
    if (x < 0.9) return { stallAfterBytes: Math.floor(r() * 3000) }; // for good: the client's ping finds it
    return {};
  };
}

async function runSeed(server, checker, seed) {
  const r = rng(seed);
  const transport = seed % 4 === 0 ? 'sse' : 'websocket';
  const state = { calm: false };
  const proxy = await startProxy(server.port, { plan: faultPlan(r, state) });
  const channel = 'flaky' + seed;
  const c = new Client(`ws://127.0.0.1:${proxy.port}/ws`, {
    WebSocket,
    transports: [transport],
    sseStallMs: 1000, // the server's heartbeat comes every 250 ms here
    backoff: { minMs: 10, maxMs: 300 },
    pingIntervalMs: 250,
    commandTimeoutMs: 600,
    connectTimeoutMs: 1000,
    random: rng(seed ^ 0x5eed),
  });
  const got = [];
  const lost = [];
  let reconnects = 0;
  c.on('disconnected', () => reconnects++);
  const sub = c.subscribe(channel, { onPublication: (p) => got.push(p), onLost: (e) => lost.push(e) });
  const subscribed = new Promise((res) => sub.on('subscribed', res));
  c.connect();
  try {
    await Promise.race([subscribed, sleep(15000).then(() => Promise.reject(new Error('never subscribed')))]);
    const published = [];
    for (let i = 0; i < PUBLICATIONS; i++) {
      const pad = 'p'.repeat(Math.floor(r() * 600));
      published.push((await server.publish(channel, { seed, i, pad })).offset);
      if (r() < 0.5) await sleep(Math.floor(r() * 60));
    }
    state.calm = true;
    const last = published.at(-1);
    await until(() => sub.position?.offset === last, 20000, `seed ${seed}: offset ${last}`);
    await sleep(50); // anything after the last would be a duplicate
    const first = published[0];
    assert.deepEqual(lost, [], `seed ${seed}: lost`);
    assert.deepEqual(
      got.map((p) => p.offset),
      published,
      `seed ${seed}: every publication once, in offset order`,
    );
    assert.deepEqual(
      got.map((p) => p.data.i),
      published.map((_, i) => i),
    );
    // And it is what the server's history holds (asked without the proxy).
    const h = await checker.history(channel, { since: { epoch: got[0].epoch, offset: first - 1 }, limit: 1000 });
    assert.deepEqual(
      h.publications.map((p) => p.offset),
      published,
    );
    return { reconnects, transport, ...proxy.stats };
  } finally {
    c.close();
    await proxy.close();
  }
}

test(`flaky network: ${SEEDS} seeds from ${START}`, { timeout: 60000 + SEEDS * 2000 }, async () => {
  const server = await startServer({ limits: { ping_interval_ms: 250 } });
  after(() => server.kill());
  const checker = new Client(server.url, { WebSocket });
  checker.connect();
  after(() => checker.close());
  const totals = { seeds: 0, sse: 0, reconnects: 0, conns: 0, cuts: 0, stalls: 0 };
  const failures = [];
  let next = START;
  const started = Date.now();
  async function worker() {
    while (next < START + SEEDS) {
      const seed = next++;
      try {
        const s = await runSeed(server, checker, seed);
        totals.seeds++;
        if (s.transport === 'sse') totals.sse++;
        for (const k of ['reconnects', 'conns', 'cuts', 'stalls']) totals[k] += s[k];
      } catch (e) {
        failures.push(`seed ${seed}: ${e.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(
    `# flaky: ${totals.seeds}/${SEEDS} seeds passed (${START}..${START + SEEDS - 1}; ${totals.sse} of them over SSE) in ${secs} s; ` +
      `${totals.conns} connections, ${totals.cuts} cuts, ${totals.stalls} stalls, ${totals.reconnects} reconnects; ` +
      `${PUBLICATIONS} publications per seed`,
  );
  assert.deepEqual(failures, []);
});
