'use strict';
// Socket.IO peer for bench/compare: every "m" event from a client is emitted to
// every other client (socket.broadcast encodes the packet once for everyone); with
// --echo, back to its sender only. WebSocket transport only, no HTTP long-polling, no
// compression. The loadgen drives it with --protocol socketio (docs/loadgen.md).
//
// Usage: node socketio.js [--listen 127.0.0.1:9004] [--echo]
const http = require('http');
const { Server } = require('socket.io');

const { parseArgs } = require('./args');

const a = parseArgs(process.argv.slice(2), 9004);
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
