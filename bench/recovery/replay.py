#!/usr/bin/env python3
"""Recover a whole history from a running shardcast, as a client reading normally.

Publishes COUNT publications of SIZE bytes to one channel over the HTTP API,
then subscribes with `since` at the start of that run and counts what the
replay delivers (and any close), then asks `history` for LIMIT publications.
The server needs `history_size` >= COUNT for the channel's namespace.

    python3 bench/recovery/replay.py --addr 127.0.0.1:8080 --count 1000 --size 16384
"""
import argparse, base64, json, os, socket, struct, time


def http_publish(sock, host, channel, data):
    body = json.dumps({"channel": channel, "data": data}).encode()
    sock.sendall(b"POST /api/publish HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s"
                 % (host.encode(), len(body), body))
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return json.loads(rest[:length])


class Ws:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port))
        self.s.settimeout(10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (host, key)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def send(self, text):
        p = text.encode()
        mask = os.urandom(4)
        n = len(p)
        hdr = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
        self.s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(p)))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def read(self):
        """(opcode, payload); raises EOFError at the end of the stream."""
        self._need(2)
        op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        at = 2
        if n == 126:
            self._need(4); n = struct.unpack(">H", self.buf[2:4])[0]; at = 4
        elif n == 127:
            self._need(10); n = struct.unpack(">Q", self.buf[2:10])[0]; at = 10
        self._need(at + n)
        p, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return op, p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="127.0.0.1:8080")
    ap.add_argument("--channel", default="replay-%d" % os.getpid())
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=300)
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    pub = socket.create_connection((host, int(port)))
    epoch = None
    for n in range(1, a.count + 1):
        r = http_publish(pub, a.addr, a.channel, {"n": n, "pad": "x" * max(0, a.size - 24)})
        epoch = r["epoch"]
    ws = Ws(host, int(port))
    t0 = time.time()
    ws.send(json.dumps({"id": 1, "op": "subscribe", "channel": a.channel,
                        "since": {"epoch": epoch, "offset": 0}}))
    got, expect, close, reply = 0, 1, None, None
    try:
        while got < a.count:
            op, p = ws.read()
            if op == 8:
                close = struct.unpack(">H", p[:2])[0] if len(p) >= 2 else 1005
                break
            if op != 1:
                continue
            v = json.loads(p)
            if "ok" in v:
                reply = v["ok"]
                continue
            assert v["offset"] == expect, (v["offset"], expect)
            expect += 1
            got += 1
    except (EOFError, ConnectionError, socket.timeout) as e:
        close = close or "EOF (%s)" % type(e).__name__
    secs = time.time() - t0
    print("since 0: reply=%s delivered=%d/%d in order, close=%s, %.2f s"
          % (json.dumps(reply), got, a.count, close, secs))
    if close is None:
        ws.send(json.dumps({"id": 2, "op": "history", "channel": a.channel, "limit": a.limit,
                            "since": {"epoch": epoch, "offset": a.count - a.limit}}))
        try:
            while True:
                op, p = ws.read()
                if op == 8:
                    print("history limit %d: close=%d" % (a.limit, struct.unpack(">H", p[:2])[0]))
                    break
                if op == 1 and b'"id":2' in p:
                    v = json.loads(p)["ok"]
                    print("history limit %d: %d publications in the reply, next=%s"
                          % (a.limit, len(v["publications"]), v.get("next")))
                    break
        except (EOFError, ConnectionError, socket.timeout) as e:
            print("history limit %d: EOF (%s)" % (a.limit, type(e).__name__))


if __name__ == "__main__":
    main()
