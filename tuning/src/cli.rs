//! The command line: `doctor`, `apply` and `profile`. [`cli_main`] is what
//! the `shardcast-tune` binary runs and what `shardcast doctor` delegates to;
//! [`run`] takes an injected probe and output streams, for tests.

use crate::apply::{self, Action};
use crate::doctor::{diagnose, render_text};
use crate::probe::{self, HostProbe};
use crate::profile;
use crate::sizing::{size, Role, Target};
use crate::sysctl::SysctlRoot;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// Default path of the file `apply --persist` writes.
pub const PERSIST_PATH: &str = "/etc/sysctl.d/60-shardcast.conf";

const USAGE: &str = "\
usage:
  shardcast-tune doctor  --target N [--role server|loadgen] [--shards S] [--json] [sizing options]
  shardcast-tune apply   --target N [--role server|loadgen] (--dry-run | --apply [--persist]) [--json] [sizing options]
  shardcast-tune profile --target N [--role server|loadgen] [--kind sysctl|limits|systemd] [sizing options]

N accepts 1000000, 1_000_000, 100k or 1m.
sizing options:
  --engine-bytes-per-conn B    engine state per connection (default 130)
  --kernel-bytes-per-socket B  kernel memory per socket (default 4096)
  --rmem-default B             initial receive buffer per socket (default 4096)
  --wmem-default B             initial send buffer per socket (default 4096)
  --processes P                loadgen: processes the connections are split over (default 1)
  --source-ips K               loadgen: local addresses to connect from (default 1)
  --dest-endpoints D           loadgen: server ip:port pairs to connect to (default 1)
  --loopback                   the load generator runs on this host too: count both ends of
                               every connection, and its memory (--processes P of them)
  --engine-bytes-per-shard B   engine memory per shard at start (default: the measured figure)
  --loadgen-bytes-per-conn B   load generator memory per connection (default: measured)
  --page-size B                profile: page size for tcp_mem (default 4096)
paths (for tests and staging):
  --sysctl-root DIR            read and write sysctls under DIR instead of /proc/sys
  --persist-path FILE          where --persist writes (default /etc/sysctl.d/60-shardcast.conf)
exit status: 0 fine, 1 doctor found a blocker or apply failed to write, 2 usage error.
";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Doctor,
    Apply,
    Profile,
}

struct Options {
    command: Command,
    target: Target,
    shards: Option<u32>,
    page_size: Option<u64>,
    json: bool,
    write: bool,
    dry_run: bool,
    persist: bool,
    kind: String,
    sysctl_root: SysctlRoot,
    persist_path: PathBuf,
}

/// Parses a count: digits with optional `_` separators and a k/m/g suffix.
pub fn parse_count(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    let (digits, mult) = match s.chars().last()?.to_ascii_lowercase() {
        'k' => (&s[..s.len() - 1], 1_000),
        'm' => (&s[..s.len() - 1], 1_000_000),
        'g' => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s.as_str(), 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

impl Options {
    fn new(command: Command) -> Options {
        Options {
            command,
            // Connections 0 stands for "no --target given".
            target: Target::new(0, Role::Server),
            shards: None,
            page_size: None,
            json: false,
            write: false,
            dry_run: false,
            persist: false,
            kind: "sysctl".into(),
            sysctl_root: SysctlRoot::default(),
            persist_path: PathBuf::from(PERSIST_PATH),
        }
    }

    /// Rejects combinations that parse but make no sense.
    fn validate(self) -> Result<Options, String> {
        let t = &self.target;
        if t.connections == 0 {
            return Err("--target N (N > 0) is required".into());
        }
        if self.write && self.dry_run {
            return Err("--dry-run and --apply exclude each other".into());
        }
        if self.persist && !self.write {
            return Err("--persist needs --apply".into());
        }
        if self.shards == Some(0) || t.processes == 0 || t.source_ips == 0 || t.dest_endpoints == 0
        {
            return Err(
                "--shards, --processes, --source-ips and --dest-endpoints must be > 0".into(),
            );
        }
        if self.page_size == Some(0) {
            return Err("--page-size must be > 0".into());
        }
        Ok(self)
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let command = match args.get(1).map(String::as_str) {
        Some("doctor") => Command::Doctor,
        Some("apply") => Command::Apply,
        Some("profile") => Command::Profile,
        Some(other) => return Err(format!("unknown command '{other}'")),
        None => return Err("missing command".into()),
    };
    let mut o = Options::new(command);
    let mut it = args[2..].iter();
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{flag} needs a value"))
        };
        let count = |v: String| parse_count(&v).ok_or(format!("{flag}: '{v}' is not a count"));
        let small = |v: String| {
            count(v).and_then(|n| u32::try_from(n).map_err(|_| format!("{flag}: too large")))
        };
        let t = &mut o.target;
        match flag {
            "--target" => t.connections = count(value()?)?,
            "--role" => t.role = Role::parse(&value()?).ok_or("--role is server or loadgen")?,
            "--shards" => o.shards = Some(small(value()?)?),
            "--engine-bytes-per-conn" => t.engine_bytes_per_conn = count(value()?)?,
            "--kernel-bytes-per-socket" => t.kernel_bytes_per_socket = count(value()?)?,
            "--rmem-default" => t.rmem_default_bytes = count(value()?)?,
            "--wmem-default" => t.wmem_default_bytes = count(value()?)?,
            "--processes" => t.processes = small(value()?)?,
            "--source-ips" => t.source_ips = small(value()?)?,
            "--dest-endpoints" => t.dest_endpoints = small(value()?)?,
            "--engine-bytes-per-shard" => t.engine_bytes_per_shard = count(value()?)?,
            "--loadgen-bytes-per-conn" => t.loadgen_bytes_per_conn = count(value()?)?,
            "--loopback" => t.loopback = true,
            "--page-size" => o.page_size = Some(count(value()?)?),
            "--kind" => o.kind = value()?,
            "--sysctl-root" => o.sysctl_root = SysctlRoot::new(value()?),
            "--persist-path" => o.persist_path = PathBuf::from(value()?),
            "--json" => o.json = true,
            "--dry-run" => o.dry_run = true,
            "--apply" => o.write = true,
            "--persist" => o.persist = true,
            _ => return Err(format!("unknown option '{arg}'")),
        }
    }
    o.validate()
}

/// Runs the command line `args` (`args[0]` is the program name, `args[1]`
/// the command) and returns the exit status. Probes the live host.
pub fn cli_main(args: Vec<String>) -> i32 {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    run(&args, None, &mut out, &mut err)
}

/// [`cli_main`] with an injectable host probe (`None`: probe the live host)
/// and output streams.
pub fn run(
    args: &[String],
    probe: Option<&HostProbe>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    if args
        .iter()
        .skip(1)
        .any(|a| a == "--help" || a == "-h" || a == "help")
    {
        let _ = out.write_all(USAGE.as_bytes());
        return 0;
    }
    let mut o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            let _ = write!(err, "shardcast-tune: {e}\n\n{USAGE}");
            return 2;
        }
    };
    let result = match o.command {
        Command::Doctor => {
            let live;
            let p = match probe {
                Some(p) => p,
                None => {
                    live = HostProbe::live(&o.sysctl_root);
                    &live
                }
            };
            o.target.shards = o.shards.unwrap_or(p.cpus);
            o.target.page_size = o.page_size.unwrap_or(p.page_size);
            doctor(&o, p, out)
        }
        Command::Apply => {
            o.target.shards = o.shards.unwrap_or_else(probe::cpu_count);
            o.target.page_size = o.page_size.unwrap_or_else(probe::page_size);
            run_apply(&o, out)
        }
        Command::Profile => {
            o.target.shards = o.shards.unwrap_or(1);
            o.target.page_size = o.page_size.unwrap_or(4096);
            run_profile(&o, out)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "shardcast-tune: {e}");
            2
        }
    }
}

fn doctor(o: &Options, p: &HostProbe, out: &mut dyn Write) -> Result<i32, String> {
    let report = diagnose(&o.target, p);
    let text = if o.json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n"
    } else {
        render_text(&report)
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(report.exit_code())
}

fn run_profile(o: &Options, out: &mut dyn Write) -> Result<i32, String> {
    let r = size(&o.target);
    let text = match o.kind.as_str() {
        "sysctl" => profile::sysctl_profile(&r),
        "limits" => profile::limits_profile(&r),
        "systemd" => profile::systemd_dropin(&r),
        k => return Err(format!("--kind {k}: expected sysctl, limits or systemd")),
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(0)
}

fn run_apply(o: &Options, out: &mut dyn Write) -> Result<i32, String> {
    let r = size(&o.target);
    let plan = apply::plan(&r, &o.sysctl_root);
    let written = if o.write {
        apply::execute(&plan, &o.sysctl_root)
    } else {
        Vec::new()
    };
    let failures = written.iter().filter(|w| w.result.is_err()).count();
    let persisted = if o.persist && failures == 0 {
        let text = apply::persisted_text(&r, &plan);
        Some(
            apply::write_if_changed(&o.persist_path, &text)
                .map_err(|e| format!("{}: {e}", o.persist_path.display())),
        )
    } else {
        None
    };
    let persist_failed = matches!(persisted, Some(Err(_)));
    if o.json {
        let v = json!({
            "target": o.target,
            "sysctl_root": o.sysctl_root.path(),
            "dry_run": !o.write,
            "plan": plan,
            "written": written.iter().map(|w| json!({
                "key": w.key,
                "ok": w.result.is_ok(),
                "error": w.result.as_ref().err().map(|e| e.to_string()),
            })).collect::<Vec<_>>(),
            "persisted": persisted.as_ref().map(|p| json!({
                "path": o.persist_path,
                "changed": p.as_ref().ok(),
                "error": p.as_ref().err(),
            })),
        });
        let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
        writeln!(out, "{text}").map_err(|e| e.to_string())?;
    } else {
        let text = apply_text(o, &plan, &written, persisted.as_ref());
        out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    Ok(i32::from(failures > 0 || persist_failed))
}

/// One line per key: `key: current → new` for a change (with the write's
/// outcome once written), the kept value, or why it was skipped.
fn plan_line(p: &apply::Planned, written: &[apply::Written]) -> String {
    match &p.action {
        Action::Change { from, to } => {
            let outcome = match written.iter().find(|w| w.key == p.key).map(|w| &w.result) {
                Some(Ok(())) => "  (set)".to_string(),
                Some(Err(e)) => format!("  (FAILED: {e})"),
                None => String::new(),
            };
            format!("  {}: {from} → {to}{outcome}", p.key)
        }
        Action::Keep { value } => format!("  {}: {value} (kept: needs {})", p.key, p.needed),
        Action::Skip { reason } => format!("  {}: skipped, {reason}", p.key),
    }
}

fn apply_text(
    o: &Options,
    plan: &[apply::Planned],
    written: &[apply::Written],
    persisted: Option<&Result<bool, String>>,
) -> String {
    use std::fmt::Write as _;
    let t = &o.target;
    let n = t.connections;
    let mode = if o.write {
        "writing"
    } else {
        "dry run: nothing is written"
    };
    let root = o.sysctl_root.path().display();
    let mut s = format!(
        "shardcast-tune apply: {n} connections, role {}, {root} ({mode})\n",
        t.role.as_str()
    );
    for p in plan {
        let _ = writeln!(s, "{}", plan_line(p, written));
    }
    let rlimit_hint = match t.role {
        Role::Server => format!(
            "the systemd drop-in (`shardcast-tune profile --kind systemd --target {n}`) or tuning/limits.d/"
        ),
        Role::Loadgen => format!(
            "`shardcast-tune profile --kind limits --target {n} --role loadgen` in /etc/security/limits.d/"
        ),
    };
    let _ = writeln!(
        s,
        "RLIMIT_NOFILE is not a sysctl: install {rlimit_hint}; `doctor` checks it."
    );
    let changes = plan
        .iter()
        .filter(|p| matches!(p.action, Action::Change { .. }))
        .count();
    let failed = written.iter().filter(|w| w.result.is_err()).count();
    let _ = if o.write {
        writeln!(s, "{} of {changes} change(s) written.", changes - failed)
    } else {
        writeln!(
            s,
            "{changes} change(s); run with --apply as root to write them, add --persist to keep \
             them across reboots."
        )
    };
    let path = o.persist_path.display();
    let _ = match persisted {
        Some(Ok(true)) => writeln!(s, "persisted to {path}"),
        Some(Ok(false)) => writeln!(s, "{path} already up to date"),
        Some(Err(e)) => writeln!(s, "persist FAILED: {e}"),
        None if o.persist => writeln!(s, "not persisted: some writes failed"),
        None => Ok(()),
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(parse_count("1000000"), Some(1_000_000));
        assert_eq!(parse_count("1_000_000"), Some(1_000_000));
        assert_eq!(parse_count("100k"), Some(100_000));
        assert_eq!(parse_count("1M"), Some(1_000_000));
        assert_eq!(parse_count("x"), None);
        assert_eq!(parse_count(""), None);
        assert_eq!(parse_count("k"), None);
        assert_eq!(parse_count("99999999999999999g"), None);
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn usage_errors_exit_2() {
        for a in [
            "t",
            "t frobnicate --target 1",
            "t doctor",
            "t doctor --target 0",
            "t doctor --target 1 --role client",
            "t doctor --target 1 --shards 0",
            "t apply --target 1 --dry-run --apply",
            "t apply --target 1 --persist",
            "t doctor --target 1 --bogus",
        ] {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            assert_eq!(run(&args(a), None, &mut out, &mut err), 2, "{a}");
            assert!(String::from_utf8(err).unwrap().contains("usage:"), "{a}");
        }
    }

    #[test]
    fn inline_values() {
        let o = parse(&args("t doctor --target=2m --role=loadgen --source-ips=4")).unwrap();
        assert_eq!(o.target.connections, 2_000_000);
        assert_eq!(o.target.role, Role::Loadgen);
        assert_eq!(o.target.source_ips, 4);
    }
}
