// No reconnect storm: 1,000 clients lose their server at the same instant
// (SIGKILL, then a new process on the same port). Full jitter spreads their
// attempts over the backoff window; the test prints the spread.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { Client } from '../dist/index.js';
import { startServer, until } from './harness.mjs';

const N = Number(process.env.STORM_CLIENTS || 1000);

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

test(`reconnect spread of ${N} clients dropped at once`, { timeout: 120000 }, async () => {
  let s = await startServer({ limits: { conns_per_shard_max: 4000 } });
  after(() => s.kill());
  const clients = [];
  const firstAttempt = new Array(N);
  const planned = new Array(N);
  const reconnected = new Array(N);
  let dropAt = 0;
  for (let i = 0; i < N; i++) {
    // The defaults: backoff from 500 ms, doubling, up to 20 s, full jitter.
    const c = new Client(s.url, { WebSocket, transports: ['websocket'] });
    c.on('connecting', () => {
      if (dropAt && firstAttempt[i] === undefined) firstAttempt[i] = Date.now() - dropAt;
    });
    c.on('disconnected', (e) => {
      if (dropAt && planned[i] === undefined) planned[i] = e.delayMs;
    });
    c.on('connected', () => {
      if (dropAt && reconnected[i] === undefined) reconnected[i] = Date.now() - dropAt;
    });
    c.subscribe('storm');
    clients.push(c);
  }
  after(() => clients.forEach((c) => c.close()));
  for (let i = 0; i < N; i += 100) {
    clients.slice(i, i + 100).forEach((c) => c.connect());
    await until(() => clients.slice(i, i + 100).every((c) => c.state === 'connected'), 20000, 'batch connected');
  }
  dropAt = Date.now();
  await s.kill();
  const down = Date.now() - dropAt;
  s = await startServer({ port: s.port, limits: { conns_per_shard_max: 4000 } });
  const up = Date.now() - dropAt;
  await until(() => reconnected.filter((x) => x !== undefined).length === N, 60000, 'all reconnected');

  const first = [...firstAttempt].sort((a, b) => a - b);
  const delays = [...planned].sort((a, b) => a - b);
  const back = [...reconnected].sort((a, b) => a - b);
  const bucket = 50;
  const histogram = (xs) => {
    const h = new Map();
    for (const t of xs) h.set(Math.floor(t / bucket), (h.get(Math.floor(t / bucket)) || 0) + 1);
    return {
      max: Math.max(...h.values()),
      text: [...h.entries()].sort((a, b) => a[0] - b[0]).map(([k, v]) => `${k * bucket}:${v}`).join(' '),
    };
  };
  const hd = histogram(delays);
  const hf = histogram(first);
  const maxBucket = hf.max;
  console.log(
    `# storm: ${N} clients dropped at once (server SIGKILLed, exited after ${down} ms, new process up at ${up} ms)\n` +
      `# storm: delay each client drew (full jitter, 0..500 ms): min ${delays[0]} ms, p10 ${pct(delays, 10)}, p50 ${pct(delays, 50)}, ` +
      `p90 ${pct(delays, 90)}, max ${delays.at(-1)} ms; per ${bucket} ms: ${hd.text}\n` +
      `# storm: first reconnect attempt after the drop (includes this process's own event-loop delay with 1,000 clients): min ${first[0]} ms, p10 ${pct(first, 10)}, p50 ${pct(first, 50)}, ` +
      `p90 ${pct(first, 90)}, max ${first.at(-1)} ms; busiest ${bucket} ms window: ${maxBucket} attempts (${((100 * maxBucket) / N).toFixed(1)}%)\n` +
      `# storm: attempts per ${bucket} ms window (start ms:count): ${hf.text}\n` +
      `# storm: connected again: p10 ${pct(back, 10)} ms, p50 ${pct(back, 50)}, p90 ${pct(back, 90)}, all by ${back.at(-1)} ms`,
  );
  // Full jitter over the first window (0..500 ms): about 10% per 50 ms, never a spike.
  assert.ok(delays.at(-1) < 500, 'every first delay within the first backoff window');
  assert.ok(hd.max <= 0.15 * N, 'no 50 ms window of delays holds more than 15% of the clients');
  assert.ok(pct(delays, 90) - pct(delays, 10) >= 300, 'delays spread over the window');
  // What happened, through this process's event loop: one busy process running
  // 1,000 clients fires their timers in batches (22.6% in one 50 ms window was
  // seen on a loaded machine), so the bound here only rules out a storm.
  assert.ok(maxBucket <= 0.4 * N, 'no 50 ms window holds more than 40% of the first attempts');
  assert.ok(pct(first, 90) - pct(first, 10) >= 250, 'first attempts spread over the window');
});
