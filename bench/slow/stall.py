#!/usr/bin/env python3
"""Open N WebSocket subscribers that never read (slow consumers), then hold.

Usage: stall.py HOST:PORT CHANNEL N SECONDS
Loopback only. Each socket asks for a tiny receive buffer, upgrades, sends one
subscribe command and stops reading, so the server's queue for it fills and the
server must close it (4008) without slowing anyone else. Exits after SECONDS.
"""
import base64, os, socket, struct, sys, time

def masked_text(payload: bytes) -> bytes:
    key = os.urandom(4)
    body = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + key + body

def main():
    target, channel, n, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    host, port = target.rsplit(":", 1)
    if not host.startswith("127.") and host != "localhost":
        sys.exit("loopback targets only")
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind((f"127.0.1.{1 + i // 20000}", 0))
        s.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                sys.exit("server closed during upgrade")
            head += chunk
        s.sendall(masked_text(f'{{"op":"subscribe","channel":"{channel}"}}'.encode()))
        socks.append(s)
    print(f"stall: {len(socks)} subscribers holding without reading", flush=True)
    time.sleep(secs)
    for s in socks:
        s.close()

if __name__ == "__main__":
    main()
