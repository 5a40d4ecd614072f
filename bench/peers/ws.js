'use strict';
// Node `ws` peer for bench/compare, written as the ws README's "client broadcast"
// example: every text message received from a client is sent to every other open
// client (the raw-peer convention of docs/loadgen.md, less the sender: see
// bench/README.md). With --echo, each message goes back to its sender only (the
// echo scenario).
//
// Usage: node ws.js [--listen 127.0.0.1:9003] [--echo]
const { WebSocketServer, WebSocket } = require('ws');

function parseArgs(argv) {
  const a = { host: '127.0.0.1', port: 9003, echo: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--listen') {
      const v = argv[++i] || '';
      const at = v.lastIndexOf(':');
      a.host = v.slice(0, at).replace(/^\[|\]$/g, '');
      a.port = Number(v.slice(at + 1));
    } else if (argv[i] === '--echo') {
      a.echo = true;
    } else {
      throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!/^127\.|^::1$|^localhost$/.test(a.host)) throw new Error('--listen: loopback only');
  return a;
}

const a = parseArgs(process.argv.slice(2));
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
