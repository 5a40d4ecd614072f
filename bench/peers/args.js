'use strict';
// Command line of the Node peers: [--listen HOST:PORT] [--echo], loopback only.
function parseArgs(argv, defaultPort) {
  const a = { host: '127.0.0.1', port: defaultPort, echo: false };
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

module.exports = { parseArgs };
