'use strict';
// Node `ws` peer for bench/compare, written as the ws README's "client broadcast"
// example: every text message received from a client is sent to every other open
// client (the raw-peer convention of docs/loadgen.md, less the sender: see
// bench/README.md). With --echo, each message goes back to its sender only (the
// echo scenario).
//
// Usage: node ws.js [--listen 127.0.0.1:9003] [--echo]
const { WebSocketServer, WebSocket } = require('ws');

const { parseArgs } = require('./args');

const a = parseArgs(process.argv.slice(2), 9003);
const wss = new WebSocketServer({ host: a.host, port: a.port, backlog: 4096, perMessageDeflate: false });

wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    if (a.echo) {
      ws.send(data, { binary: isBinary });
      return;
    }
    for (const c of wss.clients) {
      if (c !== ws && c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
    }
  });
});
wss.on('listening', () => {
  console.error(`ws peer: listening on ${a.host}:${a.port} (${a.echo ? 'echo' : 'broadcast'})`);
});
process.on('SIGTERM', () => process.exit(0));
