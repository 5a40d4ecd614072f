//! Command-line options, and their validation into a [`Plan`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// The longest run allowed at all: `--max-seconds` cannot go past it.
pub const MAX_SECONDS_LIMIT: f64 = 1800.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Connect, subscribe to --channels, hold for --duration.
    Idle,
    /// Everyone subscribes; publish --rate msgs/s for --duration; measure delivery latency.
    Fanout,
    /// Each connection sends --message-bytes messages back-to-back, --inflight at a time.
    Echo,
    /// Hold --connections, and close and reopen --churn-rate of them per second.
    Churn,
    /// One ramp, then steps on the same connections: paced broadcasts (each once the
    /// previous reached everyone) and a burst of them (--broadcasts), steady
    /// publications over --spread-channels, a heartbeat hold (--hold), a drain (--sigterm).
    Suite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// shardcast v1 JSON: subscribe commands, pushes with offsets, HTTP publish.
    Shardcast,
    /// Plain text frames: no commands; the peer broadcasts every text message to all clients.
    Raw,
    /// Socket.IO v4 on engine.io's WebSocket transport: open packet, `40` connect, `2`/`3`
    /// heartbeat, messages as `42["m",…]` events the peer broadcasts to every other client.
    Socketio,
    /// shardcast's Server-Sent Events fallback: `GET /sse?channels=…`, pushes as
    /// events, publications through the HTTP API (fanout and idle only).
    Sse,
}

impl Protocol {
    /// The value of `--protocol` that selects it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Shardcast => "shardcast",
            Protocol::Raw => "raw",
            Protocol::Socketio => "socketio",
            Protocol::Sse => "sse",
        }
    }

    /// The upgrade path used when `--path` is not given.
    pub fn default_path(self) -> &'static str {
        match self {
            Protocol::Shardcast | Protocol::Raw => "/ws",
            Protocol::Sse => "/sse",
            // Engine.io's default mount point, protocol 4, WebSocket from the first request.
            Protocol::Socketio => "/socket.io/?EIO=4&transport=websocket",
        }
    }
}

/// Load generator for shardcast and peer WebSocket servers (loopback only).
#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "shardcast-loadgen", version, about, long_about = None)]
pub struct Opts {
    /// What the connections do.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Servers to connect to, host:port, comma-separated (loopback addresses or localhost only).
    #[arg(long, default_value = "127.0.0.1:8080", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Wire protocol spoken to the target.
    #[arg(long, value_enum, default_value = "shardcast")]
    pub protocol: Protocol,
    /// Connections to open (default: 100 for echo, 1000 otherwise).
    #[arg(long, short = 'n')]
    pub connections: Option<u64>,
    /// New connections per second during the ramp.
    #[arg(long, default_value_t = 1000.0)]
    pub ramp: f64,
    /// Length of the measured phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Hard bound on the whole run, in seconds; the run stops by itself when it is reached.
    #[arg(long, default_value_t = 120.0)]
    pub max_seconds: f64,
    /// Event-loop threads per process (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Worker processes; each holds 1/K of the connections (per-process fd limit).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Local source addresses, e.g. 127.0.0.2-127.0.0.60 or a comma list; connections round-robin over them.
    #[arg(long)]
    pub source_ips: Option<String>,
    /// With --source-ips: source ports LO-HI the load generator assigns itself
    /// (connection g gets address g mod A and port LO + (g / A) mod (HI - LO + 1)),
    /// instead of the kernel's choice at connect (IP_BIND_ADDRESS_NO_PORT). The
    /// kernel's search walks the ports its address already uses; past about
    /// 450,000 loopback connections it took most of this machine's CPU.
    #[arg(long)]
    pub source_ports: Option<String>,
    /// Request path of the WebSocket upgrade [default: /ws; socketio: /socket.io/?EIO=4&transport=websocket].
    #[arg(long)]
    pub path: Option<String>,
    /// Channels to subscribe to, comma-separated (shardcast protocol).
    #[arg(long, default_value = "bench", value_delimiter = ',')]
    pub channels: Vec<String>,
    /// Subscribe connection i to channel i mod C only, instead of to every channel.
    #[arg(long)]
    pub spread: bool,
    /// Fanout: publications per second, in total, round-robin over the channels.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Fanout: size of each publication's JSON payload, in bytes.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Fanout (shardcast): publish over HTTP to this host:port (default: the first target).
    #[arg(long)]
    pub publish_target: Option<String>,
    /// Fanout (shardcast): `Authorization: Bearer` key for /api/publish.
    #[arg(long, env = "SHARDCAST_API_KEY", hide_env_values = true)]
    #[serde(skip)]
    pub api_key: Option<String>,
    /// Fanout (shardcast): publish requests in flight at once on the keep-alive connection.
    #[arg(long, default_value_t = 64)]
    pub publish_window: usize,
    /// Echo: bytes per message.
    #[arg(long, default_value_t = 20)]
    pub message_bytes: usize,
    /// Echo: messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub inflight: usize,
    /// Churn: connections closed and reopened per second.
    #[arg(long, default_value_t = 100.0)]
    pub churn_rate: f64,
    /// Seconds a connection has to connect, upgrade and subscribe.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Seconds to wait after the ramp before measuring (and before the memory sample).
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Milliseconds an event loop sleeps after a batch of events before it looks
    /// again (0: never). Events arriving meanwhile wake nobody and are taken in
    /// one batch: with tens of processes sharing the server's cores, a wake-up
    /// per event was a fifth of the load generator's CPU and a tenth of the
    /// server's. Adds up to this much to each measured latency.
    #[arg(long, default_value_t = 0.0)]
    pub coalesce_ms: f64,
    /// Fanout: at most this many seconds to wait for deliveries after the last publication
    /// (less if none arrives for 3 s); what has not arrived by then counts as missing.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Server pid: sample its RSS before the ramp and after it, and print bytes per connection.
    #[arg(long)]
    pub target_pid: Option<u32>,
    /// Write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG plot of latency percentiles and connections over time.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Suite: broadcasts to every connection, paced (each once the previous one reached
    /// everyone), then as many again as fast as the publisher sends them (0: skip).
    #[arg(long, default_value_t = 10)]
    pub broadcasts: u32,
    /// Suite: seconds a broadcast may take to reach everyone before the next one goes.
    #[arg(long, default_value_t = 30.0)]
    pub broadcast_timeout: f64,
    /// Suite: each connection also subscribes to one of M channels `s0`..`s{M-1}`
    /// (connection g to `s{g mod M}`); the steady step publishes --rate/s over them
    /// for --duration seconds (0: no such channels, no steady step).
    #[arg(long, default_value_t = 0)]
    pub spread_channels: u32,
    /// Suite: hold the connections this many seconds (heartbeats run; CPU and closes counted).
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Suite, last step: send SIGTERM to --target-pid and count the closes (codes, times)
    /// for --drain seconds at most, and when the server exits.
    #[arg(long)]
    pub sigterm: bool,
    /// Internal: run as worker process i of --workers (results as JSON lines on stdout).
    #[arg(long, hide = true)]
    pub worker_index: Option<usize>,
}

/// Validated options with addresses resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub opts: Opts,
    pub targets: Vec<SocketAddr>,
    pub sources: Vec<IpAddr>,
    /// `--source-ports`: the first port and how many.
    pub source_ports: Option<(u16, u32)>,
    pub publish_target: SocketAddr,
    /// The upgrade path: `--path`, or the protocol's default.
    pub path: String,
    pub connections: u64,
    pub threads: usize,
    /// Every channel a connection may subscribe to (indices travel instead of names):
    /// `--channels`, or for the suite the broadcast channel then `s0`..`s{M-1}`.
    pub channels: Vec<String>,
    /// The channels (indices into `channels`) the fanout publisher goes round-robin over.
    pub publish_channels: std::ops::Range<usize>,
}

impl Opts {
    /// Check everything that can be checked before a socket is opened.
    pub fn plan(&self) -> Result<Plan, String> {
        let targets = self
            .targets
            .iter()
            .map(|t| parse_loopback(t))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err("--targets: at least one target is needed".into());
        }
        let publish_target = match &self.publish_target {
            Some(t) => parse_loopback(t)?,
            None => targets[0],
        };
        let sources = match &self.source_ips {
            Some(s) => parse_sources(s)?,
            None => Vec::new(),
        };
        let source_ports = match &self.source_ports {
            Some(_) if sources.is_empty() => {
                return Err("--source-ports needs --source-ips".into());
            }
            Some(r) => Some(parse_port_range(r)?),
            None => None,
        };
        if !(self.max_seconds > 0.0 && self.max_seconds <= MAX_SECONDS_LIMIT) {
            return Err(format!("--max-seconds must be in (0, {MAX_SECONDS_LIMIT}]"));
        }
        for (name, v) in [
            ("--ramp", self.ramp),
            ("--connect-timeout", self.connect_timeout),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("{name} must be positive"));
            }
        }
        for (name, v) in [
            ("--duration", self.duration),
            ("--settle", self.settle),
            ("--drain", self.drain),
            ("--coalesce-ms", self.coalesce_ms),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("{name} must be zero or positive"));
            }
        }
        if matches!(self.scenario, Scenario::Fanout | Scenario::Suite)
            && !(self.rate > 0.0 && self.rate <= 1e6)
        {
            return Err("--rate must be in (0, 1e6]".into());
        }
        if self.scenario == Scenario::Churn
            && !(self.churn_rate > 0.0 && self.churn_rate.is_finite())
        {
            return Err("--churn-rate must be positive".into());
        }
        if self.protocol == Protocol::Sse && matches!(self.scenario, Scenario::Echo) {
            return Err(
                "--protocol sse: an event stream is one-way; echo needs a WebSocket".into(),
            );
        }
        if self.workers == 0 || self.workers > 128 {
            return Err("--workers must be 1..=128".into());
        }
        if self.scenario == Scenario::Suite {
            if self.protocol != Protocol::Shardcast {
                return Err("suite: --protocol shardcast only (it publishes per channel)".into());
            }
            if self.spread {
                return Err("suite: use --spread-channels M, not --spread".into());
            }
            if self.spread_channels > 1_000_000 {
                return Err("--spread-channels: at most 1,000,000".into());
            }
            if !(self.broadcast_timeout > 0.0 && self.hold >= 0.0 && self.hold.is_finite()) {
                return Err("--broadcast-timeout must be positive, --hold zero or positive".into());
            }
        }
        if self.inflight == 0 || self.publish_window == 0 {
            return Err("--inflight and --publish-window must be at least 1".into());
        }
        if self.channels.is_empty() || self.channels.iter().any(|c| !valid_channel(c)) {
            return Err("--channels: names are 1-255 bytes of [A-Za-z0-9_.:/-]".into());
        }
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| self.protocol.default_path().to_string());
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("--path must start with / and hold no spaces or control bytes".into());
        }
        let default_n = if self.scenario == Scenario::Echo {
            100
        } else {
            1000
        };
        let connections = self.connections.unwrap_or(default_n);
        let threads = self
            .threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1);
        let (channels, publish_channels) = if self.scenario == Scenario::Suite {
            let mut c = vec![self.channels[0].clone()];
            c.extend((0..self.spread_channels).map(|i| format!("s{i}")));
            let n = c.len();
            (c, if n > 1 { 1..n } else { 0..1 })
        } else {
            (self.channels.clone(), 0..self.channels.len())
        };
        Ok(Plan {
            opts: self.clone(),
            targets,
            sources,
            source_ports,
            publish_target,
            path,
            connections,
            threads,
            channels,
            publish_channels,
        })
    }
}

fn valid_channel(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 255
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b))
}

fn ensure_loopback(ip: IpAddr, what: &str) -> Result<(), String> {
    if ip.to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{what} {ip} is not a loopback address: this tool only sends traffic to 127.0.0.0/8 or ::1 on this machine"
        ))
    }
}

/// `host:port` where host is a loopback IP literal or `localhost` (no DNS lookups).
pub fn parse_loopback(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr = if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("bad port in target {s:?}"))?;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else {
        s.parse::<SocketAddr>()
            .map_err(|_| format!("target {s:?} is not host:port with a loopback IP or localhost"))?
    };
    ensure_loopback(addr.ip(), "target")?;
    if addr.port() == 0 {
        return Err(format!("target {s:?} has port 0"));
    }
    Ok(addr)
}

/// `127.0.0.2-127.0.0.60`, `127.0.0.2,127.0.0.3`, or a mix; IPv4 ranges only.
/// `LO-HI` (inclusive, LO >= 1024) as (LO, count).
pub fn parse_port_range(s: &str) -> Result<(u16, u32), String> {
    let bad = || format!("--source-ports: expected LO-HI with 1024 <= LO <= HI, got {s:?}");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo < 1024 || hi < lo {
        return Err(bad());
    }
    Ok((lo, u32::from(hi - lo) + 1))
}

pub fn parse_sources(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| format!("bad source address {a:?}"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| format!("bad source address {b:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                return Err(format!("bad source range {part:?}"));
            }
            for ip in a..=b {
                let ip = IpAddr::V4(Ipv4Addr::from(ip));
                ensure_loopback(ip, "source address")?;
                out.push(ip);
            }
        } else {
            let ip: IpAddr = part
                .parse()
                .map_err(|_| format!("bad source address {part:?}"))?;
            ensure_loopback(ip, "source address")?;
            out.push(ip);
        }
    }
    if out.is_empty() {
        return Err("--source-ips is empty".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(parse_loopback("127.0.0.1:8080").is_ok());
        assert!(parse_loopback("127.9.9.9:1").is_ok());
        assert!(parse_loopback("[::1]:8080").is_ok());
        assert_eq!(
            parse_loopback("localhost:9").unwrap().ip(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        for bad in [
            "10.0.0.1:80",
            "192.168.1.1:80",
            "8.8.8.8:53",
            "[::2]:80",
            "example.com:80",
            "127.0.0.1",
        ] {
            assert!(parse_loopback(bad).is_err(), "{bad} must be refused");
        }
        assert!(parse_loopback("10.0.0.1:80")
            .unwrap_err()
            .contains("not a loopback"));
    }

    #[test]
    fn source_ranges() {
        let v = parse_sources("127.0.0.2-127.0.0.60").unwrap();
        assert_eq!(v.len(), 59);
        assert_eq!(v[0].to_string(), "127.0.0.2");
        assert_eq!(v[58].to_string(), "127.0.0.60");
        assert_eq!(
            parse_sources("127.0.0.5, 127.0.0.7-127.0.0.8")
                .unwrap()
                .len(),
            3
        );
        assert!(parse_sources("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_sources("127.0.0.250-128.0.0.3").is_err());
        assert!(parse_sources("10.0.0.1").is_err());
    }
}
