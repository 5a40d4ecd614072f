#!/usr/bin/env python3
"""CPU sampler for bench/compare.

Usage: sample.py SERVER_PID CLIENT_ROOT_PID OUT [INTERVAL_S]

Every INTERVAL_S (default 0.25) appends one line to OUT:
    unix_time  server_cpu_s  client_cpu_s  load1  machine_busy_s
where server_cpu_s is the server's user+system CPU time so far, client_cpu_s
the sum over CLIENT_ROOT_PID and all its live descendants (the loadgen and its
worker processes), and machine_busy_s the whole machine's non-idle CPU time
(/proc/stat), so that what other processes used can be told apart. Stops when
CLIENT_ROOT_PID is gone.
"""
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, inside user]
    return (sum(v[:8]) - v[3] - v[4]) / TICK


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    return seen


def main():
    server, client, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.25
    # CPU of descendants that already exited is lost from the sum; keep the
    # highest figure seen per pid so the client total never goes backwards.
    best = {}
    with open(out, "a") as f:
        while os.path.exists(f"/proc/{client}"):
            for p in tree(client):
                c = cpu_s(p)
                if c is not None:
                    best[p] = max(best.get(p, 0.0), c)
            s = cpu_s(server)
            with open("/proc/loadavg") as la:
                load1 = la.read().split()[0]
            f.write(f"{time.time():.3f} {s if s is not None else -1:.2f} "
                    f"{sum(best.values()):.2f} {load1} {machine_busy_s():.2f}\n")
            f.flush()
            time.sleep(interval)


if __name__ == "__main__":
    main()
