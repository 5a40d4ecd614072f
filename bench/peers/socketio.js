'use strict';
// Socket.IO peer for bench/compare: every "m" event from a client is emitted to
// every other client (socket.broadcast encodes the packet once for everyone); with
// --echo, back to its sender only. WebSocket transport only, no HTTP long-polling, no
// compression. The loadgen drives it with --protocol socketio (docs/loadgen.md).
//
// Usage: node socketio.js [--listen 127.0.0.1:9004] [--echo]
const http = require('http');
const { Server } = require('socket.io');

function parseArgs(argv) {
  const a = { host: '127.0.0.1', port: 9004, echo: false };
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
const server = http.createServer();
const io = new Server(server, {
  transports: ['websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
});

io.on('connection', (socket) => {
  socket.on('m', (data) => {
    if (a.echo) socket.emit('m', data);
    else socket.broadcast.emit('m', data);
  });
});
server.listen({ host: a.host, port: a.port, backlog: 4096 }, () => {
  console.error(`socket.io peer: listening on ${a.host}:${a.port} (${a.echo ? 'echo' : 'broadcast'})`);
});
process.on('SIGTERM', () => process.exit(0));
