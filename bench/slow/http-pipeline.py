#!/usr/bin/env python3
"""Memory of a server fed pipelined HTTP requests by a client that never reads.

Usage: http-pipeline.py BINARY PORT COUNT [SHARDS] [HOLD_SECONDS] [EXTRA_ARGS...]

Starts BINARY (a shardcast release build) on 127.0.0.1:PORT, sends COUNT
pipelined `GET /metrics` requests on one keep-alive connection that never
reads, samples the server's VmRSS and its shardcast_queued_bytes gauge (read
on a second connection) once a second for HOLD_SECONDS, closes the client,
waits 3 s and samples again. Loopback only. Prints one line per sample.
"""
import socket, subprocess, sys, time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def queued_bytes(port):
    """Sum of shardcast_queued_bytes over shards, or None if /metrics fails."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError:
        return None
    total = 0
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("shardcast_queued_bytes{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def sample(pid, port, what):
    q = queued_bytes(port)
    print(f"{what:<24} rss={rss_kib(pid) / 1024:8.1f} MiB  queued={q if q is None else round(q / 2**20, 2)} MiB",
          flush=True)


def main():
    binary, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    shards = sys.argv[4] if len(sys.argv) > 4 else "1"
    hold = float(sys.argv[5]) if len(sys.argv) > 5 else 12
    extra = sys.argv[6:]
    srv = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--shards", shards,
                            "--no-pin", *extra], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        sample(srv.pid, port, "before")
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", port))
        req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        payload = req * count
        t0 = time.time()
        try:
            c.sendall(payload)
            how = "all sent"
        except OSError as e:
            how = f"send stopped: {e.strerror}"
        print(f"client: {len(payload)} bytes, {how} in {time.time() - t0:.2f} s", flush=True)
        for i in range(int(hold)):
            time.sleep(1)
            sample(srv.pid, port, f"during +{i + 1}s")
        c.close()
        time.sleep(3)
        sample(srv.pid, port, "after close +3s")
    finally:
        srv.terminate()
        srv.wait()


if __name__ == "__main__":
    main()
