//! The `shardcast` server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use shardcast::{Config, DriverKind, Engine};

#[cfg(feature = "alloc-count")]
mod alloc_count;

#[cfg(not(feature = "alloc-count"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "alloc-count")]
#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

extern "C" {
    /// mimalloc's collect (in libmimalloc-sys, linked for the allocator above):
    /// purges the calling thread's freed pages (`force`: without waiting for the
    /// purge delay).
    fn mi_collect(force: bool);
}

/// Each shard calls this about once a second (see `shardcast::alloc_trim`).
///
/// Forced: the unforced collect left the pages freed after a heartbeat round
/// resident (measured at 15,000 idle connections: 446 B of RSS per connection
/// against 170 B forced, the live heap being the same). Forcing only skips
/// the purge delay and visits this thread's pages, a few thousand at most.
fn mimalloc_collect() {
    // SAFETY: mi_collect takes no pointers and may run on any thread at any time;
    // it only frees what is already unused.
    unsafe { mi_collect(true) }
}

/// Thread-per-core WebSocket fan-out engine.
///
/// Flags override the TOML config file, which overrides the built-in defaults.
/// With no options it serves on 127.0.0.1:8080 with one shard per CPU.
#[derive(Parser, Debug)]
#[command(name = "shardcast", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// TOML config file (see docs/configuration.md).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Listen address shared by all shards (SO_REUSEPORT).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Shard threads (0: one per CPU).
    #[arg(long)]
    shards: Option<usize>,
    /// io_uring rings per shard, each with its own direct-descriptor table
    /// (io.rings_per_shard): past the descriptor limit, more rings rather than
    /// more shards than cores.
    #[arg(long)]
    rings_per_shard: Option<u32>,
    /// I/O driver; `auto` tries io_uring and falls back to epoll.
    #[arg(long, value_enum)]
    driver: Option<DriverArg>,
    /// Require `Authorization: Bearer <KEY>` on /api/*.
    #[arg(long, env = "SHARDCAST_API_KEY")]
    api_key: Option<String>,
    /// Echo messages back instead of reading commands (conformance testing).
    #[arg(long)]
    echo: bool,
    /// Do not pin shard threads to cores.
    #[arg(long)]
    no_pin: bool,
    /// Largest WebSocket message in bytes (close 1009 past it).
    #[arg(long)]
    message_bytes_max: Option<usize>,
    /// Outbound bytes queued per connection before closing it with 4008.
    #[arg(long)]
    queue_bytes_max: Option<usize>,
    /// WebSocket connections per shard before upgrades get 503.
    #[arg(long)]
    conns_per_shard_max: Option<u32>,
    /// Channels per connection before subscribe gets error 113.
    #[arg(long)]
    channels_per_conn_max: Option<usize>,
    /// Time allowed to send a complete HTTP request, in ms.
    #[arg(long)]
    handshake_timeout_ms: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check this host's limits for a target connection count (see docs/tuning.md).
    #[command(disable_help_flag = true)]
    Doctor {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show or apply the sysctl changes for a target (dry run unless --apply).
    #[command(disable_help_flag = true)]
    Tune {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DriverArg {
    Auto,
    Uring,
    Epoll,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(cmd) = cli.cmd {
        let (name, args) = match cmd {
            Cmd::Doctor { args } => ("doctor", args),
            Cmd::Tune { args } => ("apply", args),
        };
        let argv = std::iter::once("shardcast".to_string())
            .chain(std::iter::once(name.to_string()))
            .chain(args)
            .collect();
        return ExitCode::from(shardcast_tuning::cli_main(argv).clamp(0, 255) as u8);
    }
    shardcast::alloc_trim::set_trim_hook(mimalloc_collect);
    #[cfg(feature = "alloc-count")]
    alloc_count::start_reporter();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cfg = match build_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardcast: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", toml::to_string(&cfg).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    run(cfg)
}

fn build_config(cli: &Cli) -> Result<Config, String> {
    let mut cfg = match &cli.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Config::from_toml(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Config::default(),
    };
    if let Some(v) = cli.listen {
        cfg.listen = v;
    }
    if let Some(v) = cli.shards {
        cfg.shards = v;
    }
    if let Some(v) = cli.rings_per_shard {
        cfg.io.rings_per_shard = v;
    }
    if let Some(d) = cli.driver {
        cfg.driver = match d {
            DriverArg::Auto => None,
            DriverArg::Uring => Some(DriverKind::Uring),
            DriverArg::Epoll => Some(DriverKind::Epoll),
        };
    }
    if cli.api_key.is_some() {
        cfg.api_key = cli.api_key.clone();
    }
    cfg.echo |= cli.echo;
    if cli.no_pin {
        cfg.pin_cores = false;
    }
    let l = &mut cfg.limits;
    if let Some(v) = cli.message_bytes_max {
        l.message_bytes_max = v;
    }
    if let Some(v) = cli.queue_bytes_max {
        l.queue_bytes_max = v;
    }
    if let Some(v) = cli.conns_per_shard_max {
        l.conns_per_shard_max = v;
    }
    if let Some(v) = cli.channels_per_conn_max {
        l.channels_per_conn_max = v;
    }
    if let Some(v) = cli.handshake_timeout_ms {
        l.handshake_timeout_ms = v;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn run(cfg: Config) -> ExitCode {
    match shardcast_tuning::raise_nofile_soft_to_hard() {
        Ok((soft, hard)) => tracing::info!(soft, hard, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    if cfg.api_key.is_none() {
        tracing::warn!("no api_key configured: /api/* accepts any caller (development default)");
    }
    let a = &cfg.auth;
    if a.hmac_secret.is_none() && a.rsa_public_key_file.is_none() && a.ec_public_key_file.is_none()
    {
        tracing::warn!(
            "NO TOKEN KEY CONFIGURED: anonymous WebSocket connections are accepted (development default; set [auth])"
        );
    }
    let signals = block_signals();
    let handle = match Engine::start(cfg.clone()) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, listen = %cfg.listen, "failed to start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        listen = %handle.local_addr(),
        shards = handle.shards(),
        driver = handle.driver().as_str(),
        conns_per_shard_max = cfg.limits.conns_per_shard_max,
        "shardcast serving"
    );
    log_capacity(&handle, &cfg);
    let sig = wait_signal(&signals);
    let window = std::time::Duration::from_millis(cfg.limits.drain_window_ms);
    tracing::info!(
        signal = sig,
        window_ms = cfg.limits.drain_window_ms,
        "draining"
    );
    handle.drain(window);
    tracing::info!("drained, exiting");
    ExitCode::SUCCESS
}

/// Block SIGINT/SIGTERM in every thread (shards inherit the mask), so the main
/// thread alone receives them with `sigwait`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; the sig* calls only touch the local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` and `sig` are live for the call.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Log how many connections this host's fds and memory allow, and warn when the
/// configured maximum is beyond it (see docs/tuning.md).
fn log_capacity(handle: &shardcast::Handle, cfg: &Config) {
    let probe = shardcast_tuning::HostProbe::live(&shardcast_tuning::sysctl::SysctlRoot::default());
    let direct = handle.driver() == DriverKind::Uring;
    // Design target per idle subscribed connection; docs/benchmarks.md has the measured figure.
    let input = shardcast_tuning::CapacityInput::from_probe(
        &probe,
        handle.shards() as u32 * cfg.rings_per_shard(),
        direct,
        100,
    );
    let cap = shardcast_tuning::capacity_estimate(&input);
    let configured = cfg.limits.conns_per_shard_max as u64 * handle.shards() as u64;
    tracing::info!(capacity = %cap, configured_max = configured, "connection capacity");
    if configured > cap.connections {
        tracing::warn!(
            configured_max = configured,
            host_allows = cap.connections,
            "limits.conns_per_shard_max x shards exceeds what this host allows; run `shardcast doctor --target N`"
        );
    }
}
