#!/usr/bin/env python3
"""Turn bench/compare's raw results into docs/benchmarks.md.

    report.py --line RESULT.json        one-line summary of one loadgen run
    report.py --markdown RESDIR ROOT    the whole page, on stdout
"""
import glob
import json
import os
import sys
import tomllib

SERVERS = [
    ("shardcast-uring", "shardcast (io_uring)"),
    ("shardcast-epoll", "shardcast (epoll)"),
    ("tungstenite", "tokio-tungstenite"),
    ("ws", "Node ws"),
    ("socketio", "Socket.IO"),
    ("before-uring", "shardcast before (io_uring)"),
    ("before-epoll", "shardcast before (epoll)"),
]
SHARDCAST = ["shardcast-uring", "shardcast-epoll"]
PEERS = ["tungstenite", "ws", "socketio", "before-uring", "before-epoll"]
SCENARIOS = ["idle", "fanout-sat", "fanout-steady", "echo"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def line(r):
    if r is None:
        return "no result"
    sc = r["scenario"]
    c = r["counters"]
    parts = [f"up {c['up']} failed {c['failed']}"]
    if r.get("memory") and r["memory"].get("rss_bytes_per_conn") is not None:
        parts.append(f"{r['memory']['rss_bytes_per_conn']:.0f} B/conn")
    if sc == "fanout" and r.get("fanout"):
        f = r["fanout"]
        parts.append(f"{f['deliveries_per_s']:.0f} deliveries/s ({f['deliveries']} of {f['expected_deliveries']})")
        parts.append(f"p99 {r['latency']['p99_us'] / 1e3:.1f} ms")
    if sc == "echo":
        parts.append(f"{r['msgs_per_s']:.0f} msgs/s, p99 {r['latency']['p99_us'] / 1e3:.2f} ms")
    if r.get("errors"):
        parts.append("errors " + ", ".join(f"{k}: {v}" for k, v in r["errors"].items()))
    return "; ".join(parts)


def cpu_window(res, tag, r):
    """Server, client and everything else's CPU (% of one core) over the measured phase (+ drain)."""
    rows = []
    for ln in read(os.path.join(res, f"{tag}.cpu")).splitlines():
        w = ln.split()
        if len(w) >= 3 and float(w[1]) >= 0:
            rows.append((float(w[0]), float(w[1]), float(w[2]), float(w[4]) if len(w) >= 5 else None))
    start = read(os.path.join(res, f"{tag}.start"))
    if not rows or not start or r is None:
        return None, None, None
    p = r["phases"]
    t0 = float(start) + p["ramp_s"] + p["settle_s"]
    t1 = t0 + p["measure_s"] + (p["drain_s"] if r["scenario"] == "fanout" else 0.0)
    inside = [x for x in rows if t0 <= x[0] <= t1]
    if len(inside) < 2:
        return None, None, None
    a, b = inside[0], inside[-1]
    dt = b[0] - a[0]
    if dt <= 0:
        return None, None, None
    server, client = 100 * (b[1] - a[1]) / dt, 100 * (b[2] - a[2]) / dt
    other = None
    if a[3] is not None and b[3] is not None:
        other = max(0.0, 100 * (b[3] - a[3]) / dt - server - client)
    return server, client, other


def fmt_int(v):
    return "–" if v is None else f"{v:,.0f}"


def fmt_ms(us):
    if us is None:
        return "–"
    ms = us / 1e3
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def fmt_pct(v):
    return "–" if v is None else f"{v:.0f}%"


class Result:
    def __init__(self, res, name):
        self.name = name
        self.tags = {s: f"{name}.{s}" for s in SCENARIOS}
        # The saturated burst runs several times: keep them all, and use the median one.
        reps = sorted(glob.glob(os.path.join(res, f"{name}.fanout-sat.*.json")))
        self.sat_runs = []
        for path in reps:
            r = load(path)
            if r and r.get("fanout"):
                tag = os.path.basename(path)[: -len(".json")]
                self.sat_runs.append((r["fanout"]["deliveries_per_s"], stalled(r), tag, r))
        self.sat_runs.sort(key=lambda x: x[0])
        if self.sat_runs:
            self.tags["fanout-sat"] = self.sat_runs[(len(self.sat_runs) - 1) // 2][2]
        self.runs = {s: load(os.path.join(res, f"{self.tags[s]}.json")) for s in SCENARIOS}
        self.cpu = {s: cpu_window(res, self.tags[s], self.runs[s]) for s in SCENARIOS}
        self.present = any(self.runs.values())

    def get(self, scenario, *path):
        v = self.runs.get(scenario)
        for k in path:
            if v is None:
                return None
            v = v.get(k) if isinstance(v, dict) else None
        return v

    def mem(self):
        return self.get("idle", "memory", "rss_bytes_per_conn")

    def idle_up(self):
        return self.get("idle", "memory", "connections")

    def sat(self):
        return self.get("fanout-sat", "fanout", "deliveries_per_s")

    def sat_p99(self):
        return self.get("fanout-sat", "latency", "p99_us")

    def steady_p50(self):
        return self.get("fanout-steady", "latency", "p50_us")

    def steady_p99(self):
        return self.get("fanout-steady", "latency", "p99_us")

    def echo(self):
        return self.get("echo", "msgs_per_s")

    def echo_p99(self):
        return self.get("echo", "latency", "p99_us")

    def delivered(self, scenario):
        f = self.get(scenario, "fanout")
        if not f:
            return "–"
        miss = f["missing"]
        s = f"{f['deliveries']:,} / {f['expected_deliveries']:,}"
        return s + (f" ({miss:,} missing)" if miss else "")


def stalled(r):
    """The publisher got no answer in time, or the measured phase overran its bound by far."""
    f = r.get("fanout") or {}
    errs = (f.get("publisher") or {}).get("errors") or {}
    over = r["phases"]["measure_s"] > r["options"]["duration"] + 2.0
    return bool(errs) or over


def versions(root):
    v = {}
    for lock, names in [
        ("Cargo.lock", ["io-uring", "tungstenite", "hdrhistogram"]),
        ("bench/peers/tungstenite/Cargo.lock", ["tokio-tungstenite", "tungstenite", "tokio"]),
        ("bench/rawsend/Cargo.lock", ["io-uring"]),
    ]:
        try:
            with open(os.path.join(root, lock), "rb") as f:
                pk = tomllib.load(f).get("package", [])
        except OSError:
            continue
        for p in pk:
            if p["name"] in names:
                v.setdefault(lock, []).append(f"{p['name']} {p['version']}")
    try:
        with open(os.path.join(root, "Cargo.toml"), "rb") as f:
            v["shardcast"] = tomllib.load(f)["workspace"]["package"]["version"]
    except (OSError, KeyError):
        v["shardcast"] = "?"
    for pkg in ["ws", "socket.io"]:
        pj = load(os.path.join(root, "bench/peers/node_modules", pkg, "package.json"))
        v[pkg] = pj["version"] if pj else "not installed"
    return v


def measure_s(res):
    """Seconds from the first measurement to the last line of compare.log."""
    import re
    marks = []
    for ln in read(os.path.join(res, "compare.log")).splitlines():
        m = re.match(r"\[compare +(\d+)s\] (.*)", ln)
        if m:
            marks.append((int(m.group(1)), m.group(2)))
    first = next((t for t, msg in marks if msg.startswith("results in")), None)
    return "?" if first is None or not marks else str(marks[-1][0] - first)


def markdown(res, root):
    meta = dict(
        ln.split("=", 1) for ln in read(os.path.join(res, "meta.env")).splitlines() if "=" in ln
    )
    results = {name: Result(res, name) for name, _ in SERVERS}
    label = dict(SERVERS)
    packed = int(meta.get("raw_packed", "8"))
    raws = [(k, load(os.path.join(res, f"rawsend.k{k}.json"))) for k in (1, packed)]
    raws = [(k, r) for k, r in raws if r]
    n = int(meta.get("n", "15000"))
    steady = f"{meta.get('steady_rate')} publications/s ({int(meta.get('steady_rate', 0)) * n:,} deliveries/s)"
    ver = versions(root)
    shown = [name for name, _ in SERVERS if results[name].present]
    peers = [p for p in PEERS if p in shown]
    ours = [s for s in SHARDCAST if s in shown]
    o = []
    w = o.append
    w("# Benchmarks")
    w("")
    w("Generated by `bench/compare` (bench/README.md says what each run does and why);")
    w("rerun it to replace this page. Every figure below comes from the one run recorded")
    w("here, on the machine recorded here.")
    if meta.get("quick") == "1":
        w("")
        w("**This is a `--quick` run (small counts, short phases): a smoke test, not a result.**")
    w("")
    w("## Machine and run")
    w("")
    w(f"- **Machine:** {meta.get('nproc')} cores, {meta.get('cpu')}; {meta.get('mem_total')} RAM;"
      f" Linux {meta.get('kernel')}; descriptor limit {meta.get('fd_limit')} per process.")
    dirty = meta.get("dirty", "").split()
    w(f"- **Date:** {meta.get('date')}; shardcast commit `{meta.get('commit')}`"
      + (f", built with uncommitted changes in {', '.join(f'`{d}`' for d in dirty)}." if dirty
         else " (clean tree)."))
    w(f"- **Load average** (1, 5, 15 min) just before the measurements: {meta.get('load_before')};"
      f" just after: {meta.get('load_after')} (the run's own processes count in the second figure)."
      f" The whole run took {meta.get('elapsed_s')} s, of which {measure_s(res)} s measuring"
      " (the rest: build and waiting for a quiet machine).")
    w(f"- **Versions:** {meta.get('rustc')}; Node {meta.get('node')}; shardcast {ver.get('shardcast')}"
      f" ({', '.join(ver.get('Cargo.lock', []))});"
      f" tokio-tungstenite peer: {', '.join(ver.get('bench/peers/tungstenite/Cargo.lock', []))};"
      f" ws {ver.get('ws')}, socket.io {ver.get('socket.io')};"
      f" raw-send: {', '.join(ver.get('bench/rawsend/Cargo.lock', []))}.")
    w("- Server and load generator share the 2 cores; everything runs on loopback"
      f" (clients from {meta.get('sources')}); shardcast runs with its defaults (one shard per core).")
    w("")
    w("## Results")
    w("")
    w(f"Idle and fan-out at {n:,} connections; fan-out payload 1 KiB; echo {meta.get('echo_n')}"
      f" connections × {meta.get('echo_bytes')} B. Fan-out deliveries/s comes from the saturated run"
      f" ({meta.get('sat_rate')} publications/s offered for {meta.get('sat_seconds')} s, more than any"
      f" server here delivers, then up to {meta.get('sat_drain')} s to drain: deliveries ÷ (last"
      " delivery − first publication)); fan-out latency from the steady run at"
      f" {steady}, a load every server sustains, so the latency is the server's and not a queue's.")
    w("")
    w("| server | idle: RSS per connection | fan-out: deliveries/s | fan-out p50 / p99 (steady) |"
      " echo: msgs/s | echo p50 / p99 |")
    w("|---|---:|---:|---:|---:|---:|")
    for name in shown:
        r = results[name]
        w(f"| {label[name]} | {fmt_int(r.mem())} B | {fmt_int(r.sat())} |"
          f" {fmt_ms(r.steady_p50())} / {fmt_ms(r.steady_p99())} | {fmt_int(r.echo())} |"
          f" {fmt_ms(r.get('echo', 'latency', 'p50_us'))} / {fmt_ms(r.echo_p99())} |")
    for k, raw in raws:
        w(f"| raw-send baseline, {k} frame{'s' if k > 1 else ''} per write (no server logic) | – |"
          f" {fmt_int(raw['deliveries_per_s'])} | – | – | – |")
    w("")
    w("### Ratios")
    w("")
    w("shardcast ÷ peer. Above 1× is better for deliveries/s and msgs/s; below 1× is better for"
      " bytes per connection and latency.")
    w("")
    cols = [(s, p) for s in ours for p in peers]
    w("| figure | " + " | ".join(f"{label[s]} ÷ {label[p]}" for s, p in cols) + " |")
    w("|---|" + "---:|" * len(cols))
    for title, fn in [
        ("idle RSS per connection", Result.mem),
        ("fan-out deliveries/s", Result.sat),
        ("fan-out p99 (steady)", Result.steady_p99),
        ("echo msgs/s", Result.echo),
        ("echo p99", Result.echo_p99),
    ]:
        w(f"| {title} | " + " | ".join(
            fmt_ratio(fn(results[s]), fn(results[p])) for s, p in cols) + " |")
    w("")
    if raws:
        w("Fan-out deliveries/s against the raw-send baseline (bench/README.md): one frame per"
          " write is the limit for a server that writes each publication to each socket on its own;"
          f" {packed} frames per write is the limit when {packed} publications wait for every"
          " connection and go out in one write, as they do under a backlog.")
        w("")
        w("| server | " + " | ".join(
            f"÷ raw-send, {k} frame{'s' if k > 1 else ''} per write ({fmt_int(r['deliveries_per_s'])}/s)"
            for k, r in raws) + " |")
        w("|---|" + "---:|" * len(raws))
        for name in shown:
            w(f"| {label[name]} | " + " | ".join(
                fmt_ratio(results[name].sat(), r["deliveries_per_s"]) for _, r in raws) + " |")
        w("")
    w("### Was the server the busy process?")
    w("")
    w("CPU over each measured phase (fan-out: from the first publication to the end of the"
      " drain), as % of one core: 200% is both cores. The load generator's figure covers all its"
      " processes. \"Rest\" is the machine's busy time less those two: the kernel's"
      " softirq work charged to no process, this script's sampler, and any other process on the"
      " machine. A server far below what it can use while the load generator is near 200% would"
      " mean the figure is the client's; a large rest means something else was running.")
    w("")
    w("| server | fan-out saturated: server / loadgen / rest | fan-out steady: server / loadgen / rest |"
      " echo: server / loadgen / rest |")
    w("|---|---:|---:|---:|")
    for name in shown:
        r = results[name]
        cells = [" / ".join(fmt_pct(x) for x in r.cpu[s])
                 for s in ["fanout-sat", "fanout-steady", "echo"]]
        w(f"| {label[name]} | " + " | ".join(cells) + " |")
    for k, raw in raws:
        w(f"| raw-send, {k} per write | sender {fmt_pct(raw['sender_cpu_pct'])} / reader"
          f" {fmt_pct(raw['reader_cpu_pct'])} / {fmt_pct(raw.get('rest_cpu_pct'))} | – | – |")
    w("")
    w("### Fan-out in detail")
    w("")
    w(f"The saturated burst ran {meta.get('sat_reps', '1')} times per server (a fresh server each"
      " time); the tables above use the median run. \"Stalled\" marks a run whose publisher got no"
      " answer in time or whose publishing phase overran its 1 s by more than 2 s (bench/README.md)."
      " \"Published\" counts what the publisher sent (shardcast: HTTP publishes, at most 64 in"
      " flight on one keep-alive connection, so under load it sends fewer than offered)."
      " Latency in the saturated run includes the wait behind the backlog, so it grows with the"
      " length of the burst: it is there for completeness, not for comparison.")
    w("")
    w("| server | saturated, every run: deliveries/s | median run: published | delivered / expected |"
      " p50 / p99 | steady: delivered / expected | p50 / p99 / p99.9 |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for name in shown:
        r = results[name]
        every = ", ".join(fmt_int(d) + (" (stalled)" if st else "") for d, st, _, _ in r.sat_runs)
        w(f"| {label[name]} | {every or '–'} | {fmt_int(r.get('fanout-sat', 'fanout', 'published'))} |"
          f" {r.delivered('fanout-sat')} |"
          f" {fmt_ms(r.get('fanout-sat', 'latency', 'p50_us'))} / {fmt_ms(r.sat_p99())} |"
          f" {r.delivered('fanout-steady')} | {fmt_ms(r.steady_p50())} / {fmt_ms(r.steady_p99())} /"
          f" {fmt_ms(r.get('fanout-steady', 'latency', 'p999_us'))} |")
    w("")
    w("### Idle connections in detail")
    w("")
    w("RSS is the server process's resident set before the ramp and 2 s after it; the figure"
      " per connection is the difference divided by the connections up, which leaves out what"
      " a server allocates at start whatever its load (shardcast's receive buffers and rings,"
      " Node's heap): the column after it divides the whole RSS instead. Kernel memory is"
      " machine-wide and covers both ends of each loopback connection (the load generator's"
      " sockets too), so it is context, not the server's figure.")
    w("")
    w("| server | connections up | RSS before → after | ΔRSS per connection | whole RSS ÷ connections |"
      " kernel slab per connection (both ends) |")
    w("|---|---:|---:|---:|---:|---:|")
    for name in shown:
        m = results[name].get("idle", "memory")
        if not m:
            continue
        mib = lambda b: "–" if b is None else f"{b / 1048576:.1f} MiB"
        whole = (m["after"]["rss_bytes"] / m["connections"]
                 if m["after"].get("rss_bytes") and m["connections"] else None)
        w(f"| {label[name]} | {fmt_int(m['connections'])} | {mib(m['before']['rss_bytes'])} →"
          f" {mib(m['after']['rss_bytes'])} | {fmt_int(m['rss_bytes_per_conn'])} B |"
          f" {fmt_int(whole)} B | {fmt_int(m.get('slab_bytes_per_conn'))} B |")
    w("")
    errs = []
    for name in shown:
        runs = [(sc, results[name].runs.get(sc)) for sc in SCENARIOS if sc != "fanout-sat"]
        runs += [(tag.split(".", 1)[1], r) for _, _, tag, r in results[name].sat_runs]
        for sc, r in runs:
            if r is None:
                errs.append(f"- {label[name]}, {sc}: no result (see the loadgen log in the results directory)")
                continue
            pub = ((r.get("fanout") or {}).get("publisher") or {}).get("errors") or {}
            if r.get("errors") or r["counters"]["failed"] or pub:
                e = ", ".join(f"{k}: {v}" for k, v in {**r.get("errors", {}), **pub}.items())
                errs.append(f"- {label[name]}, {sc}: {r['counters']['failed']} connections failed;"
                            f" {e or 'no other errors'}")
    w("### Errors reported by the load generator")
    w("")
    o.extend(errs or ["None: every connection of every run came up, and no run reported an error."])
    w("")
    w("## Commands")
    w("")
    w("Each figure: start the server, then run the load generator against it. `$PORT` is any"
      " free loopback port, `$SERVER_PID` the server's pid, `$RESULTS` a directory for the JSON;"
      " `target/release` is wherever `CARGO_TARGET_DIR` points. A fresh server process serves"
      " each run.")
    w("")
    for name in shown:
        w(f"**{label[name]}**")
        w("")
        w("```sh")
        for sc in SCENARIOS:
            t = results[name].tags[sc]
            sc_cmd = read(os.path.join(res, f"{t}.server.cmd"))
            lc = read(os.path.join(res, f"{t}.loadgen.cmd")).replace(t + ".json", f"{name}.{sc}.json")
            if sc_cmd:
                w(f"# {sc}" + (f" (run {meta.get('sat_reps')} times)" if sc == "fanout-sat" else ""))
                w(f"{sc_cmd} &   # SERVER_PID=$!")
                w(lc)
        w("```")
        w("")
    rcs = [read(os.path.join(res, f"rawsend.k{k}.cmd")) for k, _ in raws]
    if any(rcs):
        w("**raw-send baseline**")
        w("")
        w("```sh")
        o.extend(c for c in rcs if c)
        w("```")
        w("")
    w("All of it, builds included: `bench/compare --wait-load 1.5` (waits up to 20 minutes for a"
      " quiet machine first).")
    w("")
    return "\n".join(o)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--line":
        print(line(load(sys.argv[2])))
    elif len(sys.argv) == 4 and sys.argv[1] == "--markdown":
        print(markdown(sys.argv[2], sys.argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
