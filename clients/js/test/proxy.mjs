// A small TCP proxy for the tests: forwards to a shardcast port, and can cut,
// stall or refuse WebSocket upgrades, seeded so that a failing run can be replayed.
import { connect, createServer } from 'node:net';

/** mulberry32: a small seeded PRNG, in [0, 1). */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Options:
 * - blockUpgrade: answer a request carrying `Upgrade: websocket` with 403 (a proxy that blocks WebSockets);
 * - plan(connIndex) -> { cutAfterBytes?, cutAfterMs?, stallAfterBytes?, stallMs?, stallAtStart? } faults for
 *   one connection (a stall without stallMs lasts until the connection ends).
 */
export async function startProxy(targetPort, { blockUpgrade = false, plan } = {}) {
  const conns = new Set();
  let index = 0;
  const stats = { conns: 0, cuts: 0, stalls: 0, refused: 0 };
  const server = createServer((down) => {
    const fault = plan ? plan(index++) || {} : {};
    stats.conns++;
    const up = connect(targetPort, '127.0.0.1');
    const c = { down, up, cut };
    conns.add(c);
    let first = true;
    let toClient = 0;
    let held = fault.stallAtStart ? [] : null; // chunks held while stalled: [socket, chunk][]
    if (held) stats.stalls++;
    let timer;
    function cut() {
      if (!conns.delete(c)) return;
      clearTimeout(timer);
      down.destroy();
      up.destroy();
    }
    const forward = (to, chunk) => {
      if (held) held.push([to, chunk]);
      else if (!to.destroyed) to.write(chunk);
    };
    if (fault.cutAfterMs !== undefined) timer = setTimeout(() => (stats.cuts++, cut()), fault.cutAfterMs);
    down.on('data', (chunk) => {
      if (first && blockUpgrade && /\r\nupgrade:\s*websocket/i.test(chunk.toString('latin1'))) {
        stats.refused++;
        down.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        up.destroy();
        conns.delete(c);
        return;
      }
      first = false;
      forward(up, chunk);
    });
    up.on('data', (chunk) => {
      const before = toClient;
      toClient += chunk.length;
      if (fault.cutAfterBytes !== undefined && toClient > fault.cutAfterBytes) {
        // Deliver the bytes before the cut (often part of a frame), then drop both sides.
        const keep = Math.max(0, fault.cutAfterBytes - before);
        if (keep) forward(down, chunk.subarray(0, keep));
        stats.cuts++;
        return held ? (fault.cutAfterBytes = undefined, held.push([null, null])) : cut();
      }
      forward(down, chunk);
      if (fault.stallAfterBytes !== undefined && toClient > fault.stallAfterBytes && !held) {
        fault.stallAfterBytes = undefined;
        stats.stalls++;
        held = [];
        if (fault.stallMs !== undefined) {
          setTimeout(() => {
            const h = held;
            held = null;
            for (const [to, ch] of h) {
              if (!to) return cut();
              if (!to.destroyed) to.write(ch);
            }
          }, fault.stallMs);
        }
      }
    });
    const end = () => cut();
    down.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    stats,
    /** Drop every open connection at once. */
    cutAll() {
      for (const c of [...conns]) c.cut();
    },
    async close() {
      for (const c of [...conns]) c.cut();
      await new Promise((r) => server.close(r));
    },
  };
}
