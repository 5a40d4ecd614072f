// Clients for the tests: fast backoff, the `ws` package, closed when the test file ends,
// and the record of what the application sees.
import { after } from 'node:test';
import { WebSocket } from 'ws';
import { Client } from '../dist/index.js';

const made = [];
after(() => made.forEach((c) => c.close()));

/** A client with a short backoff (50..400 ms); `opts` overrides. */
export function client(url, opts = {}) {
  return track(new Client(url, { WebSocket, backoff: { minMs: 50, maxMs: 400 }, ...opts }));
}

/** Close `c` when the test file ends. */
export function track(c) {
  made.push(c);
  return c;
}

/** Subscribe and collect what the application sees: publications, losses and subscribe replies, in order. */
export function watch(c, channel, opts = {}) {
  const got = [];
  const lost = [];
  const subscribed = [];
  const sub = c.subscribe(channel, {
    ...opts,
    onPublication: (p) => got.push(p),
    onLost: (e) => lost.push(e),
  });
  sub.on('subscribed', (e) => subscribed.push(e));
  return { sub, got, lost, subscribed };
}

/** Names of recorded state events (see harness.recordStates). */
export const names = (seen) => seen.map((s) => s.name);
